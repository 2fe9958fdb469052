"""A backup set made by an older MLflow release restores and is migrated to this one."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.harness import StackFactory
from tests.integration.old_releases import OLD_MLFLOW3, build_old_mlflow3_image

OLD_MLFLOW = OLD_MLFLOW3


@pytest.fixture(scope="module")
def old_image(kit_images: None) -> str:
    return build_old_mlflow3_image()


def test_set_from_an_older_mlflow_is_restored_and_migrated(
    stack_factory: StackFactory, old_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    stack = stack_factory("mlkt-old")
    stack.init(env={"MLOPS_KIT_MLFLOW_IMAGE": old_image})
    stack.kit("up")
    by_name = {s["service"]: s for s in stack.status()["services"]}
    assert by_name["mlflow"]["version"] == OLD_MLFLOW
    # The admin's login and the CA stay the same across the restore (same host).
    for name, value in stack.client_variables("admin").items():
        monkeypatch.setenv(name, value)

    client = MlflowClient(stack.tracking_uri)
    experiment_id = client.create_experiment("made-by-old-mlflow")
    run = client.create_run(experiment_id, run_name="old")
    client.log_param(run.info.run_id, "origin", OLD_MLFLOW)
    for step in range(10):
        client.log_metric(run.info.run_id, "loss", 1 / (step + 1), step=step)
    payload = tmp_path / "old.bin"
    payload.write_bytes(os.urandom(2**20))
    client.log_artifact(run.info.run_id, str(payload))
    client.set_terminated(run.info.run_id)

    stack.kit("backup")
    sets = json.loads(stack.kit("backup", "list", "--json").stdout)
    assert len(sets) == 1

    # The operator upgrades the kit's MLflow image, then restores the old set.
    env_file = stack.directory / ".env"
    env_file.write_text(
        env_file.read_text().replace(
            f"MLOPS_KIT_MLFLOW_IMAGE={old_image}", "MLOPS_KIT_MLFLOW_IMAGE=mlops-kit/mlflow:3.17.2-kit0.11.0"
        )
    )
    restored = json.loads(stack.kit("restore", "--yes", "--json").stdout)
    assert restored["backup_mlflow_version"] == OLD_MLFLOW

    by_name = {s["service"]: s for s in stack.status()["services"]}
    assert by_name["mlflow"]["version"] == "3.17.2"
    client = MlflowClient(stack.tracking_uri)
    again = client.get_run(run.info.run_id)
    assert again.data.params == {"origin": OLD_MLFLOW}
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(10))
    local = client.download_artifacts(run.info.run_id, "old.bin", dst_path=str(tmp_path / "dl"))
    assert hashlib.sha256(Path(local).read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
    # The current server writes too (the schema was migrated, not just read).
    client.log_param(run.info.run_id, "after_restore", "yes")
