"""Guards for review findings: concurrent writes vs. the manifest, NFS restore volumes, .env edits, cron '%'."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

from mlops_kit.compose import ComposeProject
from mlops_kit.config import load_config
from mlops_kit.envfile import HostFacts, init_env_file, render_env
from mlops_kit.restore import artifacts_driver_opts
from mlops_kit.runner import CommandRunner
from mlops_kit.schedule import render_schedule
from tests.conftest import load_image_module

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")


def load_agent() -> ModuleType:
    return load_image_module("kit_backup_agent", "docker/backup/agent.py")


def entry(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def test_file_written_during_the_backup_is_not_damage(tmp_path: Path) -> None:
    agent = load_agent()
    growing = tmp_path / "upload.bin"
    growing.write_bytes(b"partial")
    files = {"upload.bin": entry(growing)}
    growing.write_bytes(b"partial and then the rest")  # finished after it was hashed
    result = agent.verify_artifacts(tmp_path, files)
    assert result == {"problems": [], "checked": 1, "changed": 1}


def test_same_size_and_mtime_but_other_bytes_is_damage(tmp_path: Path) -> None:
    agent = load_agent()
    stored = tmp_path / "model.pkl"
    stored.write_bytes(b"A" * 100)
    files = {"model.pkl": entry(stored)}
    stat = stored.stat()
    stored.write_bytes(b"B" * 100)
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = agent.verify_artifacts(tmp_path, files)
    assert result["problems"] == ["artifact model.pkl does not match its checksum"]
    missing = agent.verify_artifacts(tmp_path, {"gone.bin": {"sha256": "0", "size": 1, "mtime_ns": 1}})
    assert missing["problems"] == ["artifact gone.bin is missing"]


def test_restore_volume_in_nfs_mode_is_an_nfs_mount(kit_dir: Path) -> None:
    init_env_file(
        kit_dir,
        {"MLOPS_KIT_ARTIFACT_STORE": "nfs", "MLOPS_KIT_NFS_SERVER": "nas", "MLOPS_KIT_NFS_EXPORT": "/srv/ml"},
        host=HOST,
    )
    config = load_config(kit_dir, environ={})
    opts = artifacts_driver_opts(config)
    assert opts["type"] == "nfs" and opts["device"] == ":/srv/ml" and opts["o"].startswith("addr=nas,")
    runner = CommandRunner(dry_run=True)
    ComposeProject(config, runner).create_volume("v1", "artifacts", driver_opts=opts)
    assert "--driver local --opt type=nfs" in runner.dry_run_log[0]
    assert runner.dry_run_log[0].endswith(" v1")


def test_env_update_changes_the_real_assignment_not_a_comment() -> None:
    text = "# MLOPS_KIT_POSTGRES_VOLUME=old-comment\nA=1\nMLOPS_KIT_POSTGRES_VOLUME=old\n"
    out = render_env(text, {"MLOPS_KIT_POSTGRES_VOLUME": "new"})
    assert out == "# MLOPS_KIT_POSTGRES_VOLUME=old-comment\nA=1\nMLOPS_KIT_POSTGRES_VOLUME=new\n"
    only_comment = render_env("# B=\n", {"B": "2"})
    assert only_comment == "B=2\n"


def test_percent_in_paths_is_escaped_for_cron(tmp_path: Path) -> None:
    kit_dir = tmp_path / "kit%dir"
    from tests.conftest import copy_kit

    copy_kit(kit_dir)
    init_env_file(kit_dir, {}, host=HOST)
    command = render_schedule(load_config(kit_dir, environ={}), "01:00", verify_day=None, cron_dir=tmp_path).commands()
    assert "kit\\%dir" in command[0]
    assert "kit%dir" not in command[0].replace("\\%", "")


def _repository_failing_with(kit_dir: Path, stderr: str):  # type: ignore[no-untyped-def]
    from mlops_kit.backup import Repository
    from mlops_kit.errors import CommandError

    if not (kit_dir / ".env").exists():
        init_env_file(kit_dir, {}, host=HOST)

    class Failing(CommandRunner):
        def run(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
            raise CommandError([str(a) for a in argv], 1, "", stderr)

    return Repository(ComposeProject(load_config(kit_dir, environ={}), Failing()))


def test_check_reports_damage_only_when_restic_says_so(kit_dir: Path) -> None:
    import pytest

    from mlops_kit.errors import BackupError

    damaged = _repository_failing_with(
        kit_dir, "error: load <data/1234>: ciphertext verification failed\nFatal: repository contains errors"
    )
    with pytest.raises(BackupError) as caught:
        damaged.check()
    assert "failed its integrity check" in caught.value.message

    locked = _repository_failing_with(
        kit_dir, "Fatal: unable to create lock in backend: repository is already locked by PID 42 on host by root"
    )
    with pytest.raises(BackupError) as caught:
        locked.check()
    assert "locked by another restic process" in caught.value.message
    assert "restic unlock" in (caught.value.hint or "")

    other = _repository_failing_with(kit_dir, "Error response from daemon: no such image\nsomething else went wrong")
    with pytest.raises(BackupError) as caught:
        other.check()
    assert caught.value.message == "restic failed: something else went wrong"
