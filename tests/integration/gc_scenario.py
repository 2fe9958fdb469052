"""One garbage-collection and retention scenario, run against a stack in any artifact store mode.

Everything is written through the MLflow client as the admin, the way data scientists
write it: a realistic data set (`mlflow_data.populate`) and, next to it, each case gc
and retention must get right:

- a deleted experiment with runs, a logged model and a trace (all go, with the folder);
- a deleted run with a 5 MiB artifact, and deleted runs that never logged an artifact
  (no folder exists: mlflow#15461 hangs there);
- a deleted logged model that no version uses (its artifacts go: mlflow#17240);
- a deleted trace (MLflow removes its rows at once but never its artifact folder);
- a deleted run behind a registered model version, and a deleted logged model behind
  another (both stay, and say why);
- a run that ended 100 days ago but was deleted just now (``--older-than`` counts from
  the deletion);
- retention: an experiment tagged ``mlops-kit.retention-days=30`` with a finished run
  past it (soft-deleted, then removed only after the grace period), a run still
  running, a run tagged ``mlops-kit.keep`` and its child, a recent run and a run behind
  a model version (all stay); an experiment whose tag is not a number (no retention
  there, a warning).

The store is read directly (``store_files``: every object or file and its size), so
"bytes freed" is checked against the store itself, not against what gc says.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import Stack
from tests.integration.mlflow_data import digest, populate

DAY_MS = 86_400_000
PREFIX = "gcs"
BIG = 5 * 2**20
EXPERIMENTS = [f"{PREFIX}-experiment-0", f"{PREFIX}-experiment-1", f"{PREFIX}-live", f"{PREFIX}-retention"]


@dataclass
class Cases:
    doomed_experiment: str
    doomed_experiment_runs: list[str]
    doomed_experiment_model: str
    deleted_big_run: str
    deleted_empty_runs: list[str]
    deleted_model: str
    deleted_trace: str
    backing_run: str
    backing_model: str
    old_but_just_deleted: str
    retention_old: str
    retention_running: str
    retention_kept: str
    retention_kept_child: str
    retention_recent: str
    retention_backing: str
    bad_tag_old_run: str
    unregistered_run: str
    restored_in_deleted_experiment: str
    half_deleted_experiment: str
    sharing_kept_run: str
    sharing_doomed_run: str
    sharing_doomed_experiment: str


def _log_file(directory: str, name: str, size: int) -> str:
    path = Path(directory, name)
    path.write_bytes(os.urandom(size))
    return str(path)


def _log_model(name: str) -> Any:
    import mlflow

    class Identity(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
            return model_input

    return mlflow.pyfunc.log_model(name=name, python_model=Identity(), pip_requirements=["pandas"])


def _ensure_trace_artifacts(location: str, tmp: str) -> None:
    """The trace's traces.json in its artifact folder, as MLflow's client writes it.

    MLflow 3.17 with a database store keeps spans in the database and writes the file
    only for some traces (a race in its exporter): the case needs one that has it.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repository = get_artifact_repository(location)
    if not repository.list_artifacts():
        path = Path(tmp, "traces.json")
        path.write_text(json.dumps({"spans": []}))
        repository.log_artifact(str(path))


def prepare(stack: Stack) -> Cases:
    """Write the data set and every case through the client (as the admin)."""
    import mlflow
    from mlflow import MlflowClient

    uri = stack.tracking_uri
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    populate(uri, PREFIX)
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        # A whole experiment to delete: runs with artifacts, a logged model, a trace.
        doomed = client.create_experiment(f"{PREFIX}-doomed")
        mlflow.set_experiment(experiment_id=doomed)
        doomed_runs = []
        for i in range(2):
            with mlflow.start_run() as run:
                mlflow.log_metric("loss", 0.5, step=i)
                mlflow.log_artifact(_log_file(tmp, f"doomed-{i}.bin", 2**20))
                doomed_runs.append(run.info.run_id)
        with mlflow.start_run():
            doomed_model = _log_model("doomed-model").model_id

        @mlflow.trace(name="doomed-trace")
        def doomed_call(x: int) -> int:
            return x

        doomed_call(1)
        mlflow.flush_trace_async_logging()

        live = client.create_experiment(f"{PREFIX}-live")
        mlflow.set_experiment(experiment_id=live)
        with mlflow.start_run() as run:
            mlflow.log_artifact(_log_file(tmp, "big.bin", BIG))
            big = run.info.run_id
        empty = []
        for _ in range(2):
            with mlflow.start_run() as run:
                mlflow.log_param("p", "1")
                empty.append(run.info.run_id)
        with mlflow.start_run():
            lonely_model = _log_model("lonely-model").model_id
        with mlflow.start_run() as run:
            version = _log_model("backing").model_id
            backing_run = run.info.run_id
        mlflow.register_model(f"models:/{version}", f"{PREFIX}-backing")
        with mlflow.start_run():
            backing_model = _log_model("backing-model").model_id
        mlflow.register_model(f"models:/{backing_model}", f"{PREFIX}-backing-model")

        @mlflow.trace(name="deleted-trace")
        def traced(x: int) -> int:
            return x

        traced(2)
        mlflow.flush_trace_async_logging()
        trace = mlflow.search_traces(locations=[live], return_type="list")[0]
        trace_id = trace.info.trace_id
        _ensure_trace_artifacts(trace.info.tags["mlflow.artifactLocation"], tmp)

        old = client.create_run(live, start_time=now - 100 * DAY_MS)
        client.set_terminated(old.info.run_id, "FINISHED", end_time=now - 99 * DAY_MS)

        # Retention: 30 days on one experiment.
        kept_exp = client.create_experiment(f"{PREFIX}-retention", tags={"mlops-kit.retention-days": "30"})
        mlflow.set_experiment(experiment_id=kept_exp)

        def finished_run(
            days_ago: int, tags: dict[str, str] | None = None, artifact: bool = False, model: bool = False
        ) -> str:
            run = client.create_run(kept_exp, start_time=now - days_ago * DAY_MS - 60_000, tags=tags or {})
            client.log_metric(run.info.run_id, "loss", 0.1, timestamp=now - days_ago * DAY_MS - 30_000)
            if artifact:
                client.log_artifact(run.info.run_id, _log_file(tmp, f"ret-{days_ago}.bin", 2**20))
            if model:
                with mlflow.start_run(run_id=run.info.run_id):
                    mlflow.register_model(f"models:/{_log_model('retained').model_id}", f"{PREFIX}-retained")
            client.set_terminated(run.info.run_id, "FINISHED", end_time=now - days_ago * DAY_MS)
            return str(run.info.run_id)

        retention_old = finished_run(40, artifact=True)
        running = client.create_run(kept_exp, start_time=now - 40 * DAY_MS).info.run_id
        retention_kept = finished_run(40, {"mlops-kit.keep": "true"})
        retention_kept_child = finished_run(40, {"mlflow.parentRunId": retention_kept})
        retention_recent = finished_run(5)
        retention_backing = finished_run(40, model=True)
        typo_exp = client.create_experiment(f"{PREFIX}-typo", tags={"mlops-kit.retention-days": "30 days"})
        typo_run = client.create_run(typo_exp, start_time=now - 41 * DAY_MS)
        client.set_terminated(typo_run.info.run_id, "FINISHED", end_time=now - 40 * DAY_MS)

        # A version deleted from the registry protects nothing any more.
        mlflow.set_experiment(experiment_id=live)
        with mlflow.start_run() as run:
            mlflow.register_model(f"models:/{_log_model('unregistered').model_id}", f"{PREFIX}-unregistered")
            unregistered = run.info.run_id
        client.delete_model_version(f"{PREFIX}-unregistered", "1")
        # A run restored inside a deleted experiment (MLflow allows it) keeps itself and its experiment.
        half = client.create_experiment(f"{PREFIX}-half-deleted")
        restored = client.create_run(half).info.run_id
        client.set_terminated(restored)

        # Two experiments in one folder (the admin may choose locations): A's run is restored
        # after both are deleted, so the folder stays, though B's own run goes.
        shared = f"mlflow-artifacts:/{PREFIX}-shared"
        sharing_a = client.create_experiment(f"{PREFIX}-sharing-a", artifact_location=shared)
        sharing_b = client.create_experiment(f"{PREFIX}-sharing-b", artifact_location=shared)
        sharing_runs = []
        for experiment_id in (sharing_a, sharing_b):
            run_id = client.create_run(experiment_id).info.run_id
            client.log_artifact(run_id, _log_file(tmp, f"shared-{experiment_id}.bin", 2**20))
            client.set_terminated(run_id)
            sharing_runs.append(run_id)

    # The deletions, all at once (gc's clock starts here).
    client.delete_experiment(sharing_a)
    client.delete_experiment(sharing_b)
    client.restore_run(sharing_runs[0])
    client.delete_experiment(half)
    client.restore_run(restored)
    client.delete_run(unregistered)
    client.delete_experiment(doomed)
    client.delete_run(big)
    for run_id in empty:
        client.delete_run(run_id)
    client.delete_logged_model(lonely_model)
    client.delete_traces(live, trace_ids=[trace_id])
    client.delete_run(backing_run)
    client.delete_logged_model(backing_model)
    client.delete_run(old.info.run_id)
    return Cases(
        doomed_experiment=doomed,
        doomed_experiment_runs=doomed_runs,
        doomed_experiment_model=doomed_model,
        deleted_big_run=big,
        deleted_empty_runs=empty,
        deleted_model=lonely_model,
        deleted_trace=trace_id,
        backing_run=backing_run,
        backing_model=backing_model,
        old_but_just_deleted=old.info.run_id,
        retention_old=retention_old,
        retention_running=running,
        retention_kept=retention_kept,
        retention_kept_child=retention_kept_child,
        retention_recent=retention_recent,
        retention_backing=retention_backing,
        bad_tag_old_run=typo_run.info.run_id,
        unregistered_run=unregistered,
        restored_in_deleted_experiment=restored,
        half_deleted_experiment=half,
        sharing_kept_run=sharing_runs[0],
        sharing_doomed_run=sharing_runs[1],
        sharing_doomed_experiment=sharing_b,
    )


def live(data: dict[str, Any]) -> dict[str, Any]:
    """A digest without what is deleted (experiments, runs): what users still see."""
    result: dict[str, Any] = {"experiments": {}, "registered_models": data["registered_models"]}
    for experiment_id, experiment in data["experiments"].items():
        if experiment["stage"] == "deleted":
            continue
        runs = {r: run for r, run in experiment["runs"].items() if run["stage"] != "deleted"}
        result["experiments"][experiment_id] = {**experiment, "runs": runs}
    return result


def gc(stack: Stack, *args: str) -> dict[str, Any]:
    result = stack.kit("gc", "--json", "--yes", *args)
    return dict(json.loads(result.stdout))


def run_stage(client: Any, run_id: str) -> str | None:
    """The run's lifecycle stage, or None when it no longer exists."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_run(run_id).info.lifecycle_stage)
    except MlflowException as error:
        assert error.error_code == "RESOURCE_DOES_NOT_EXIST", error
        return None


def paths_naming(files: dict[str, int], item_id: str) -> list[str]:
    return [path for path in files if f"/{item_id}/" in f"/{path}"]


def run_scenario(stack: Stack, store_files: Callable[[], dict[str, int]]) -> dict[str, Any]:
    """Prepare, then check the dry run, gc, retention and a second gc; returns the figures measured."""
    import mlflow
    from mlflow import MlflowClient

    with stack.as_user("admin"):
        cases = prepare(stack)
        client = MlflowClient(stack.tracking_uri)
        before = digest(stack.tracking_uri)
        files_before = store_files()
        for run_id in (*cases.doomed_experiment_runs, cases.deleted_big_run):
            assert paths_naming(files_before, run_id), run_id
        assert paths_naming(files_before, cases.deleted_model)
        assert paths_naming(files_before, cases.deleted_trace)

        # The default grace period (30 days) removes nothing deleted just now, whatever its age.
        untouched = gc(stack, "--no-retention")
        assert untouched["removed"]["runs"] == 0 and untouched["bytes_freed"] == 0, untouched
        assert run_stage(client, cases.old_but_just_deleted) == "deleted"

        time.sleep(2)
        dry = gc(stack, "--older-than", "1s", "--dry-run")
        assert dry["dry_run"] is True
        planned = {(i["kind"], i["id"]) for i in dry["items"]}
        expected = {
            ("experiment", cases.doomed_experiment),
            *(("run", r) for r in cases.doomed_experiment_runs),
            ("logged_model", cases.doomed_experiment_model),
            ("run", cases.deleted_big_run),
            *(("run", r) for r in cases.deleted_empty_runs),
            ("logged_model", cases.deleted_model),
            ("trace_artifacts", cases.deleted_trace),
            ("run", cases.old_but_just_deleted),
            ("run", cases.unregistered_run),
            ("run", cases.sharing_doomed_run),
        }
        assert expected <= planned, sorted(expected - planned)
        kept = {(k["kind"], k["id"]): k["reason"] for k in dry["kept"]}
        assert "model version gcs-backing/1" in kept[("run", cases.backing_run)]
        assert "model version gcs-backing-model/1" in kept[("logged_model", cases.backing_model)]
        assert "restored" in kept[("run", cases.restored_in_deleted_experiment)]
        assert "is kept" in kept[("experiment", cases.half_deleted_experiment)]
        # B's folder holds A's restored run: B's rows may go later, its folder not now.
        assert "which stays" in kept[("experiment", cases.sharing_doomed_experiment)]
        assert (
            not {
                ("run", cases.backing_run),
                ("logged_model", cases.backing_model),
                ("run", cases.restored_in_deleted_experiment),
                ("experiment", cases.half_deleted_experiment),
            }
            & planned
        )
        retained = {r["run_id"] for r in dry["retention"]["listed"]}
        assert retained == {cases.retention_old}, dry["retention"]
        retention_kept = {r["run_id"]: r["reason"] for r in dry["retention"]["kept"]}
        assert "mlops-kit.keep" in retention_kept[cases.retention_kept]
        assert "parent run" in retention_kept[cases.retention_kept_child]
        assert "model version gcs-retained/1" in retention_kept[cases.retention_backing]
        assert [i["value"] for i in dry["retention"]["ignored"]] == ["30 days"]
        assert dry["bytes_freed"] >= BIG + 2 * 2**20
        # A dry run changes nothing.
        assert store_files() == files_before
        assert digest(stack.tracking_uri) == before

        done = gc(stack, "--older-than", "1s")
        files_after = store_files()
        freed = sum(files_before.values()) - sum(files_after.values())
        assert done["bytes_freed"] == freed, (done["removed"], freed)
        assert freed >= BIG + 2 * 2**20
        assert {(i["kind"], i["id"]) for i in done["items"]} == planned
        assert done["retention"]["runs"] == 1
        for run_id in (*cases.doomed_experiment_runs, cases.deleted_big_run, *cases.deleted_empty_runs):
            assert run_stage(client, run_id) is None, run_id
            assert not paths_naming(files_after, run_id), run_id
        for item in (cases.deleted_model, cases.doomed_experiment_model, cases.deleted_trace):
            assert not paths_naming(files_after, item), item
        assert run_stage(client, cases.old_but_just_deleted) is None
        assert run_stage(client, cases.unregistered_run) is None
        assert run_stage(client, cases.restored_in_deleted_experiment) == "active"
        assert client.get_experiment(cases.half_deleted_experiment).lifecycle_stage == "deleted"
        assert run_stage(client, cases.sharing_doomed_run) is None
        assert not paths_naming(files_after, cases.sharing_doomed_run)
        assert paths_naming(files_after, cases.sharing_kept_run)
        assert client.get_experiment(cases.sharing_doomed_experiment).lifecycle_stage == "deleted"
        # What a model version needs is all there, and the version still loads.
        assert run_stage(client, cases.backing_run) == "deleted"
        assert paths_naming(files_after, cases.backing_model)
        mlflow.pyfunc.load_model(f"models:/{PREFIX}-backing/1")
        mlflow.pyfunc.load_model(f"models:/{PREFIX}-backing-model/1")
        # Retention soft-deleted its one run; it keeps its artifacts for the grace period.
        assert run_stage(client, cases.retention_old) == "deleted"
        assert paths_naming(files_after, cases.retention_old)
        for run_id in (
            cases.retention_running,
            cases.retention_kept,
            cases.retention_kept_child,
            cases.retention_recent,
            cases.retention_backing,
            cases.bad_tag_old_run,
        ):
            assert run_stage(client, run_id) == "active", run_id
        # Everything else is exactly as it was (but the run retention soft-deleted).
        after = digest(stack.tracking_uri)
        expected_live = live(before)
        for experiment in expected_live["experiments"].values():
            experiment["runs"].pop(cases.retention_old, None)
        assert live(after) == expected_live

        time.sleep(2)
        second = gc(stack, "--older-than", "1s", "--no-retention")
        assert {(i["kind"], i["id"]) for i in second["items"]} == {("run", cases.retention_old)}
        assert run_stage(client, cases.retention_old) is None
        assert not paths_naming(store_files(), cases.retention_old)
        assert live(digest(stack.tracking_uri)) == live(after)
    # The jobs ran next to the server: it was neither cut off nor restarted.
    status = stack.status()
    assert status["healthy"] is True, status
    assert [s["restarts"] for s in status["services"]] == [0] * len(status["services"]), status
    return {"bytes_freed": done["bytes_freed"], "items": len(done["items"]), "seconds": done["seconds"]}
