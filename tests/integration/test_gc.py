"""`mlops-kit gc` and retention end to end on a volume-mode stack (the NFS mode uses the same path).

The scenario (tests/integration/gc_scenario.py) writes every case through the MLflow
client and checks the store itself, read here from the artifacts volume's folder on
the host. Also: gc waits for nobody (a held backup lock makes it exit 8 at once), and
`status` shows what the last gc freed.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Stack, running_stack, volume_mountpoint
from tests.integration.gc_scenario import run_scenario


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("gc"), "mlkt-gc") as stack:
        yield stack


def volume_files(stack: Stack) -> dict[str, int]:
    """Every file in the stack's artifacts volume and its size, read from the host."""
    volume = stack.env_values().get("MLOPS_KIT_ARTIFACTS_VOLUME") or f"{stack.project}_artifacts"
    mountpoint = volume_mountpoint(volume)
    files = {}
    for folder, _dirs, names in os.walk(mountpoint):
        for name in names:
            path = Path(folder, name)
            files[str(path.relative_to(mountpoint))] = path.stat().st_size
    return files


def test_gc_removes_deleted_data_with_its_artifacts_and_nothing_else(stack: Stack) -> None:
    figures = run_scenario(stack, lambda: volume_files(stack))
    print(f"gc on the volume store: {figures}")


def test_gc_refuses_while_the_backup_lock_is_held(stack: Stack) -> None:
    backups = stack.directory / "backups"
    backups.mkdir(exist_ok=True)
    with (backups / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("back up (pid 1, since now)")
        handle.flush()
        result = stack.kit("gc", "--yes", check=False)
    assert result.returncode == 8, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "backup lock" in lines[0] and "back up (pid 1" in lines[0], result.stderr


def test_the_global_dry_run_lists_without_changing(stack: Stack) -> None:
    # `mlops-kit --dry-run gc` prints the commands that would change something; the job's
    # listing changes nothing, so it runs and answers like `gc --dry-run`.
    before = json.loads(stack.kit("status", "--json", check=False).stdout)["last_gc"]
    answer = json.loads(stack.kit("--dry-run", "gc", "--json").stdout)
    assert answer["dry_run"] is True and "removed" in answer
    assert json.loads(stack.kit("status", "--json", check=False).stdout)["last_gc"] == before


def test_status_shows_the_last_gc(stack: Stack) -> None:
    status = json.loads(stack.kit("status", "--json", check=False).stdout)
    # gc runs as a job next to the server: the server was neither cut off nor restarted.
    assert status["healthy"] is True
    assert [s["restarts"] for s in status["services"]] == [0] * len(status["services"])
    last = status["last_gc"]
    assert last is not None and last["dry_run"] is False and last["bytes_freed"] >= 0
    text = stack.kit("status").stdout
    assert "last gc:" in text and "freed" in text
