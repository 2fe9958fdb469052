"""Write a realistic data set through the MLflow client, and digest everything back through the API.

The digest reads every experiment, run (deleted ones too), param, tag, full metric
history, artifact (by sha256 of its downloaded bytes), registered model, version,
alias, logged model and trace. Two stacks with equal digests hold the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

BIG_ARTIFACT = 9 * 2**20
MODEL_NAME = "digest-model"


def populate(tracking_uri: str, prefix: str = "bk") -> list[str]:
    """Two experiments, nested runs, metric histories, a big artifact, a registered and aliased model,
    traces and a deleted run. Returns the experiment ids."""
    import mlflow
    import pandas as pd
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
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=Doubler(),
                registered_model_name=MODEL_NAME,
                pip_requirements=["mlflow==3.17.2", "pandas"],
            )
        client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))

        @mlflow.trace(name="digest-trace")
        def traced(x: int) -> int:
            with mlflow.start_span(name="digest-inner"):
                return x + 1

        for value in range(3):
            traced(value)
        mlflow.flush_trace_async_logging()
    return experiment_ids


def digest(tracking_uri: str, experiment_names: list[str] | None = None) -> dict[str, Any]:
    """Everything the MLflow API says about the stack's data (optionally only some experiments)."""
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
                "runs": {run.info.run_id: _run_digest(client, run, tmp) for run in runs},
                "logged_models": sorted(
                    (m.model_id, m.name, str(m.status))
                    for m in client.search_logged_models(experiment_ids=[experiment.experiment_id])
                ),
                "traces": sorted(
                    (t.info.trace_id, str(t.info.state), tuple(sorted(s.name for s in t.data.spans)))
                    for t in mlflow.search_traces(locations=[experiment.experiment_id], return_type="list")
                ),
            }
    for model in client.search_registered_models():
        versions = client.search_model_versions(f"name='{model.name}'")
        result["registered_models"][model.name] = {
            "aliases": dict(sorted(model.aliases.items())),
            "versions": sorted((v.version, v.source, v.run_id, v.status) for v in versions),
        }
    return json.loads(json.dumps(result, sort_keys=True, default=str))  # type: ignore[no-any-return]


def _run_digest(client: Any, run: Any, tmp: str) -> dict[str, Any]:
    run_id = run.info.run_id
    metrics = {
        key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
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
    }


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
