"""The NFS data path, shown with a bind-mounted host folder.

No NFS client exists on our machines (see docs/testing.md), so the NFS mount
itself is covered by rendering tests; here the artifacts volume is a local
bind of a host folder through compose.override.yaml, exactly as an NFS export
would be mounted: MLflow must write plain files there, owned as documented.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tests.harness import Stack, StackFactory

OVERRIDE = """\
volumes:
  artifacts:
    driver: local
    driver_opts:
      type: none
      o: bind
      device: {device}
"""


def bind_artifacts(stack: Stack, export: Path) -> None:
    # An existing export is not empty; an empty one would be chowned by Docker's
    # volume copy-up, which real NFS exports (root_squash) do not allow.
    (export / "README").write_text("existing content on the export\n")
    (stack.directory / "compose.override.yaml").write_text(OVERRIDE.format(device=export))


def test_artifacts_land_as_files_in_the_mounted_folder(stack_factory: StackFactory, tmp_path: Path) -> None:
    import mlflow

    export = tmp_path / "export"
    export.mkdir()
    # What an NFS export with all_squash,anonuid=10001 presents to the container.
    os.chown(export, 10001, 10001)
    stack = stack_factory()
    stack.init()
    bind_artifacts(stack, export)
    stack.kit("up")

    payload = tmp_path / "blob.bin"
    payload.write_bytes(os.urandom(3 * 2**20))
    with stack.as_user("admin"):
        mlflow.set_tracking_uri(stack.tracking_uri)
        mlflow.set_experiment("bind-mount")
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(payload), artifact_path="files")

    stored = list(export.rglob("blob.bin"))
    assert len(stored) == 1, list(export.rglob("*"))
    assert run.info.run_id in str(stored[0])
    assert hashlib.sha256(stored[0].read_bytes()).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert stored[0].stat().st_uid == 10001
    assert stack.kit("check").returncode == 0


def test_unwritable_export_is_reported_clearly(stack_factory: StackFactory, tmp_path: Path) -> None:
    export = tmp_path / "readonly-export"
    export.mkdir(mode=0o755)  # owned by root: the mlflow user (10001) cannot write
    stack = stack_factory()
    stack.init()
    bind_artifacts(stack, export)
    result = stack.kit("up", "--wait-timeout", "60", check=False)
    assert result.returncode == 5
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "mlflow" in lines[0]
    assert "not writable" in lines[0]
    assert "Traceback" not in result.stderr
