"""The restic repository as the host drives it: restic's failures become one clear line each."""

from __future__ import annotations

from pathlib import Path

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.runner import CommandRunner

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")


def _repository_failing_with(kit_dir: Path, stderr: str):  # type: ignore[no-untyped-def]
    from mlops_kit.errors import CommandError
    from mlops_kit.workflows.restic import Repository

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
