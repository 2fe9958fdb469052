"""Write a realistic data set through the MLflow client, and digest everything back through the API.

The digest reads every experiment, run (deleted ones too), param, tag, full metric
history, artifact (by sha256 of its downloaded bytes), registered model, version,
alias, logged model and trace. Two stacks with equal digests hold the same data.

Both functions run under the MLflow client of the release that wrote the data, 2.x
included (an old server has neither MLflow 3's logged-model nor its trace API): a test
runs this file with an old image's Python (``python mlflow_data.py populate|digest``,
the server and login from the usual MLFLOW_TRACKING_* variables) to write and read what
that release serves, and compares it with what the current client reads after an upgrade.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

BIG_ARTIFACT = 9 * 2**20
#: Points in each run's long metric history (one log_batch call: the API's limit is 1,000).
HISTORY_STEPS = 1000
MODEL_NAME = "digest-model"


def _mlflow_major() -> int:
    import mlflow

    return int(mlflow.__version__.split(".")[0])


def populate(tracking_uri: str, prefix: str = "bk") -> list[str]:
    """Two experiments, nested runs, metric histories (one of 1,000 steps per run), a big artifact, a
    registered and aliased model, traces and a deleted run. Returns the experiment ids."""
    import mlflow
    import pandas as pd
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            return model_input * 2

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for e in range(2):
            experiment = mlflow.set_experiment(f"{prefix}-experiment-{e}")
            experiment_ids.append(experiment.experiment_id)
            client.set_experiment_tag(experiment.experiment_id, "owner", f"team-{e}")
            for r in range(3):
                with mlflow.start_run(run_name=f"run-{e}-{r}") as run:
                    mlflow.log_params({"lr": str(0.1 / (r + 1)), "depth": str(r + 2)})
                    mlflow.set_tags({"kind": "training", "index": str(r)})
                    mlflow.log_metrics({"loss": 1.0 / (r + 1)}, step=0)
                    for step in range(1, 30):
                        mlflow.log_metric("loss", 1.0 / (r + step + 1), step=step)
                    first = 1_700_000_000_000 + 10_000 * r
                    curve = [Metric("curve", (s % 97) / 7.0 + r, first + s, s) for s in range(HISTORY_STEPS)]
                    client.log_batch(run.info.run_id, metrics=curve)
                    with mlflow.start_run(run_name=f"child-{e}-{r}", nested=True):
                        mlflow.log_metric("accuracy", 0.5 + r / 10)
                    notes = Path(tmp, f"notes-{e}-{r}.txt")
                    notes.write_text(f"run {e}/{r}\n" * 100)
                    mlflow.log_artifact(str(notes), artifact_path="notes")
                if e == 0 and r == 0:
                    big = Path(tmp, "weights.bin")
                    big.write_bytes(os.urandom(BIG_ARTIFACT))
                    client.log_artifact(run.info.run_id, str(big), artifact_path="model-weights")
            with mlflow.start_run(run_name=f"deleted-{e}") as doomed:
                mlflow.log_param("doomed", "yes")
            client.delete_run(doomed.info.run_id)

        mlflow.set_experiment(f"{prefix}-experiment-0")
        with mlflow.start_run(run_name="model-run"):
            # MLflow 2 names the model's folder `artifact_path`; 3 names the logged model `name`.
            where = {"name": "model"} if _mlflow_major() >= 3 else {"artifact_path": "model"}
            info = mlflow.pyfunc.log_model(
                **where,
                python_model=Doubler(),
                registered_model_name=MODEL_NAME,
                pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas"],
            )
        client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))

        @mlflow.trace(name="digest-trace")
        def traced(x: int) -> int:
            with mlflow.start_span(name="digest-inner"):
                return x + 1

        for value in range(3):
            traced(value)
        if hasattr(mlflow, "flush_trace_async_logging"):
            mlflow.flush_trace_async_logging()
    return experiment_ids


def populate_inputs_and_prompts(tracking_uri: str, prefix: str = "bk") -> None:
    """A run with a dataset input in the first experiment and, from MLflow 3 on, a prompt
    with two versions and an alias (the import's data: what the backup tests' data lacks)."""
    import mlflow
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(f"{prefix}-experiment-0")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [2.0, 4.0, 6.0]})
    with mlflow.start_run(run_name="with-dataset"):
        mlflow.log_input(mlflow.data.from_pandas(frame, name="digest-data", targets="y"), context="training")
    if _mlflow_major() >= 3:
        for text in ("Summarise {{text}}.", "Summarise {{text}} in one line."):
            version = mlflow.genai.register_prompt(f"{prefix}-prompt", text, commit_message=text[:20])
        mlflow.genai.set_prompt_alias(f"{prefix}-prompt", "production", version.version)


def populate_small(tracking_uri: str, prefix: str = "small") -> list[str]:
    """A run in the Default experiment and an experiment with one run (params, a metric, a file)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    run_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for experiment_id in ("0", client.create_experiment(f"{prefix}-experiment")):
            run = client.create_run(experiment_id, run_name=f"{prefix}-run")
            client.log_param(run.info.run_id, "origin", prefix)
            client.log_metric(run.info.run_id, "score", 0.5, step=1)
            Path(tmp, "note.txt").write_text(prefix)
            client.log_artifact(run.info.run_id, str(Path(tmp, "note.txt")))
            client.set_terminated(run.info.run_id)
            run_ids.append(run.info.run_id)
    return run_ids


def digest(
    tracking_uri: str, experiment_names: list[str] | None = None, *, inputs_and_prompts: bool = False
) -> dict[str, Any]:
    """Everything the MLflow API says about the stack's data (optionally only some experiments).

    ``inputs_and_prompts``: also every run's dataset inputs and (MLflow 3) the prompts."""
    import mlflow
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiments = [
        e
        for e in client.search_experiments(view_type=ViewType.ALL)
        if experiment_names is None or e.name in experiment_names
    ]
    result: dict[str, Any] = {"experiments": {}, "registered_models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in sorted(experiments, key=lambda e: e.experiment_id):
            runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=5000)
            result["experiments"][experiment.experiment_id] = {
                "name": experiment.name,
                "stage": experiment.lifecycle_stage,
                "tags": dict(sorted(experiment.tags.items())),
                "artifact_location": experiment.artifact_location,
                "runs": {run.info.run_id: _run_digest(client, run, tmp, inputs_and_prompts) for run in runs},
                "logged_models": _logged_models(client, experiment.experiment_id),
                "traces": _traces(client, experiment.experiment_id),
            }
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        result["registered_models"][model.name] = {
            "aliases": dict(sorted(model.aliases.items())),
            "versions": sorted((v.version, v.source, v.run_id, v.status) for v in versions),
        }
    if inputs_and_prompts:
        result["prompts"] = _prompts()
    return json.loads(json.dumps(result, sort_keys=True, default=str))  # type: ignore[no-any-return]


def _prompts() -> dict[str, Any]:
    """Each prompt's aliases and versions (template, commit message); none before MLflow 3."""
    import mlflow

    if _mlflow_major() < 3:
        return {}
    prompts: dict[str, Any] = {}
    for prompt in mlflow.genai.search_prompts(max_results=1000):
        versions = []
        version = 1
        while (found := mlflow.genai.load_prompt(prompt.name, version=version, allow_missing=True)) is not None:
            versions.append((found.version, found.template, found.commit_message))
            version += 1
        aliases = {}
        for alias in ("production",):
            loaded = mlflow.genai.load_prompt(f"prompts:/{prompt.name}@{alias}", allow_missing=True)
            aliases[alias] = loaded.version if loaded else None
        prompts[prompt.name] = {"versions": versions, "aliases": aliases}
    return prompts


def _logged_models(client: Any, experiment_id: str) -> list[tuple[str, str, str]]:
    if _mlflow_major() < 3:
        return []  # MLflow 2 has no logged models (a 3.x migration makes none either)
    models = client.search_logged_models(experiment_ids=[experiment_id])
    return sorted((m.model_id, m.name, str(m.status)) for m in models)


def _traces(client: Any, experiment_id: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """(id, state, span names) of each trace; MLflow 2 calls them request id and status."""
    import mlflow

    if _mlflow_major() >= 3:
        traces = mlflow.search_traces(locations=[experiment_id], return_type="list")
    else:
        traces = client.search_traces(experiment_ids=[experiment_id], max_results=500)
    result = []
    for trace in traces:
        info = trace.info
        trace_id = getattr(info, "trace_id", None) or info.request_id
        state = getattr(info, "state", None) or info.status
        spans = tuple(sorted(span.name for span in trace.data.spans))
        result.append((trace_id, str(getattr(state, "value", state)), spans))
    return sorted(result)


def _run_digest(client: Any, run: Any, tmp: str, inputs: bool = False) -> dict[str, Any]:
    run_id = run.info.run_id
    # Every point, in a fixed order: releases return a metric's history in different orders.
    metrics = {
        key: sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))
        for key in sorted(run.data.metrics)
    }
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "stage": run.info.lifecycle_stage,
        "start": run.info.start_time,
        "end": run.info.end_time,
        "artifact_uri": run.info.artifact_uri,
        "params": dict(sorted(run.data.params.items())),
        "tags": dict(sorted(run.data.tags.items())),
        "metrics": metrics,
        "artifacts": _artifact_hashes(client, run_id, "", tmp) if run.info.lifecycle_stage == "active" else {},
        **({"inputs": _dataset_inputs(client, run_id)} if inputs else {}),
    }


def _dataset_inputs(client: Any, run_id: str) -> list[tuple[Any, ...]]:
    """The run's dataset inputs as get_run gives them (search results may leave them out)."""
    found = client.get_run(run_id).inputs
    return sorted(
        (
            d.dataset.name,
            d.dataset.digest,
            d.dataset.source_type,
            d.dataset.source,
            d.dataset.schema,
            d.dataset.profile,
            tuple(sorted((t.key, t.value) for t in d.tags)),
        )
        for d in (found.dataset_inputs if found else [])
    )


def _artifact_hashes(client: Any, run_id: str, path: str, tmp: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for item in client.list_artifacts(run_id, path or None):
        if item.is_dir:
            hashes.update(_artifact_hashes(client, run_id, item.path, tmp))
        else:
            local = client.download_artifacts(run_id, item.path, dst_path=tmp)
            hashes[item.path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
            os.remove(local)
    return hashes


if __name__ == "__main__":
    # Inside an old release's image: `populate[-full|-small] PREFIX` or `digest[-full] NAME...`; JSON on stdout.
    command, *arguments = sys.argv[1:]
    uri = os.environ["MLFLOW_TRACKING_URI"]
    if command == "populate":
        answer: Any = populate(uri, *arguments)
    elif command == "populate-full":  # the import's data: populate, then inputs and prompts
        answer = populate(uri, *arguments)
        populate_inputs_and_prompts(uri, *arguments)
    elif command == "populate-small":
        answer = populate_small(uri, *arguments)
    elif command == "digest-full":
        answer = digest(uri, arguments or None, inputs_and_prompts=True)
    else:
        answer = digest(uri, arguments or None)
    print(json.dumps(answer))
