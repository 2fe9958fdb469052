"""Phase 2 of a restore: `_switch` points the stack at the fresh volumes, `_rollback` undoes it.

A fake runner stands in for Docker: it records every command (with the Compose
environment it got and what `.env` said at that moment) and fails the ones a test asks for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file, update_env_file
from mlops_kit.config.loader import KitConfig, load_config, read_env_file
from mlops_kit.config.secrets import write_s3_keys
from mlops_kit.config.settings import settings_values
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import BackupError, CommandError
from mlops_kit.runner import CommandResult, CommandRunner
from mlops_kit.services.backup import AGENT, STAGING_MOUNT
from mlops_kit.services.mlflow import KEK_FILE, RESET_ADMIN
from mlops_kit.stores import fresh_prefix
from mlops_kit.workflows import restore
from mlops_kit.workflows.backup import STAGING_SET
from mlops_kit.workflows.restore import _Restored, _rollback, _switch

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")
GENERATION = "r20260101080000"
#: The `.env` lines a restore switches (bucket modes add MLOPS_KIT_S3_PREFIX).
VOLUME_KEYS = ("MLOPS_KIT_POSTGRES_VOLUME", "MLOPS_KIT_ARTIFACTS_VOLUME")
BUCKET_KEYS = (*VOLUME_KEYS, "MLOPS_KIT_S3_PREFIX")
#: Compose's global options that take a value (they come before the subcommand).
_COMPOSE_OPTIONS = {"--project-name", "--project-directory", "--env-file", "--file"}
#: What a failing `mlflow db upgrade` prints last.
ALEMBIC_FAILURE = "alembic.util.exc.CommandError: Can't locate revision identified by 'ffffffffffff'"


@dataclass(frozen=True)
class Call:
    """One command the fake engine received."""

    step: str
    argv: list[str]
    #: The environment Compose got (empty for plain `docker` commands).
    env: dict[str, str]
    #: `.env`'s switched settings at the moment the command ran.
    env_file: dict[str, str]


Failure = Callable[[Call], BaseException | None]


def _never(_call: Call) -> BaseException | None:
    return None


def failing(step: str, stderr: str = "boom", *, volume: str | None = None) -> Failure:
    """Fail every ``step`` (only on the project whose postgres volume is ``volume``, when given)."""

    def decide(call: Call) -> BaseException | None:
        if call.step != step or (volume is not None and call.env.get("MLOPS_KIT_POSTGRES_VOLUME") != volume):
            return None
        return CommandError(call.argv, 1, "", stderr)

    return decide


def step_of(argv: Sequence[str]) -> str:
    """A short name for a command: "down", "start postgres", "agent load", "db upgrade", "up", ..."""
    if list(argv[:3]) == ["docker", "volume", "rm"]:
        return "volume rm"
    assert list(argv[:2]) == ["docker", "compose"], f"unexpected command {argv}"
    index = 2
    while argv[index] in _COMPOSE_OPTIONS:
        index += 2
    args = list(argv[index:])
    if args[0] == "down":
        return "down"
    if args[0] == "up":
        services = [a for a in args[1:] if not a.startswith("--") and not a.isdigit()]
        return f"start {' '.join(services)}" if services else "up"
    if args[0] == "run":
        rest = args[args.index("-T") + 1 :]
        while rest[0] == "--volume":
            rest = rest[2:]
        service, command = rest[0], rest[1:]
        if command[0] == AGENT:
            return f"agent {command[1]}"
        if command[:3] == ["mlflow", "db", "upgrade"]:
            return "db upgrade"
        if command == [RESET_ADMIN]:
            return "reset admin"
        return f"run {service} {' '.join(command)}"
    raise AssertionError(f"unexpected compose command {args}")


class FakeEngine(CommandRunner):
    """Records each command; answers like a healthy engine unless ``fail`` returns an exception for it."""

    def __init__(self, env_file: Path, fail: Failure = _never) -> None:
        super().__init__()
        self.env_file = env_file
        self.fail = fail
        self.calls: list[Call] = []

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> CommandResult:
        args = [str(a) for a in argv]
        env_now = read_env_file(self.env_file)
        call = Call(
            step_of(args),
            args,
            dict(kwargs.get("env") or {}),
            {key: env_now.get(key, "") for key in BUCKET_KEYS},
        )
        self.calls.append(call)
        error = self.fail(call)
        if error is not None:
            raise error
        stdout = 'loaded 42 rows\n{"ok": true, "rows": 42}\n' if call.step == "agent load" else ""
        return CommandResult(args, 0, stdout, "")

    @property
    def steps(self) -> list[str]:
        return [call.step for call in self.calls]

    def call(self, step: str, occurrence: int = 0) -> Call:
        """The ``occurrence``-th call of ``step`` (0: the first)."""
        return [c for c in self.calls if c.step == step][occurrence]


def make_config(kit_dir: Path, *, bucket: bool = False) -> KitConfig:
    """A volume-mode (or s3-mode) stack's configuration, with `.env` and secrets written."""
    choices: dict[str, str | None] = (
        {"MLOPS_KIT_ARTIFACT_STORE": "s3", "MLOPS_KIT_S3_ENDPOINT_URL": "https://s3.example.com"} if bucket else {}
    )
    init_env_file(kit_dir, choices, host=HOST)
    if bucket:
        write_s3_keys(kit_dir / "secrets", "AKIAEXAMPLEKEY0001", "secret-example-key-0000000000")
    return load_config(kit_dir, environ={})


def make_restored(config: KitConfig, tmp_path: Path, *, passphrase: str | None = None) -> _Restored:
    """A set restored into fresh volumes (and, in bucket modes, a fresh prefix), as phase 1 leaves it."""
    work = tmp_path / "staging" / f"restore-{GENERATION}"
    (work / STAGING_SET).mkdir(parents=True)
    if passphrase is not None:
        (work / STAGING_SET / KEK_FILE).write_text(passphrase)
    bucket = config.uses_bucket
    return _Restored(
        snapshot={"id": "0123456789abcdef" * 4, "tags": []},
        manifest={},
        work=work,
        job_set_dir=f"{STAGING_MOUNT}/{work.name}/{STAGING_SET}",
        postgres_volume=f"{config.project_name}_postgres-data-{GENERATION}",
        # Bucket modes: phase 1 uploaded the artifacts and kept the stack's own volume.
        artifacts_volume=config.artifacts_volume if bucket else f"{config.project_name}_artifacts-{GENERATION}",
        s3_prefix=fresh_prefix(config.s3_prefix, GENERATION) if bucket else "",
    )


def switched_lines(config: KitConfig, keys: Sequence[str] = VOLUME_KEYS) -> dict[str, str]:
    """What `.env` says now about ``keys``."""
    values = read_env_file(config.env_file)
    return {key: values.get(key, "") for key in keys}


SWITCH_STEPS = ["down", "start postgres", "agent load", "db upgrade", "reset admin", "up"]


def test_a_switch_runs_its_steps_in_order_and_then_writes_the_fresh_volumes_into_env(
    kit_dir: Path, tmp_path: Path
) -> None:
    config = make_config(kit_dir)
    restored = make_restored(config, tmp_path)
    engine = FakeEngine(config.env_file)
    said: list[str] = []
    _switch(ComposeProject(config, engine), restored, said.append, rollback_to_previous=True, persist=True)

    assert engine.steps == SWITCH_STEPS
    assert said[-1] == "Starting the stack on the restored data"
    # The previous stack is stopped as it is; every later step runs on the fresh volumes.
    assert engine.call("down").env["MLOPS_KIT_POSTGRES_VOLUME"] == config.postgres_volume
    assert "--volumes" not in engine.call("down").argv
    for step in SWITCH_STEPS[1:]:
        env = engine.call(step).env
        assert env["MLOPS_KIT_POSTGRES_VOLUME"] == restored.postgres_volume, step
        assert env["MLOPS_KIT_ARTIFACTS_VOLUME"] == restored.artifacts_volume, step
    assert engine.call("agent load").argv[-2:] == ["--set", restored.job_set_dir]
    # `.env` names the fresh volumes only once the stack is healthy on them.
    assert engine.call("up").env_file["MLOPS_KIT_POSTGRES_VOLUME"] == ""
    assert switched_lines(config) == {
        "MLOPS_KIT_POSTGRES_VOLUME": restored.postgres_volume,
        "MLOPS_KIT_ARTIFACTS_VOLUME": restored.artifacts_volume,
    }
    assert load_config(kit_dir, environ={}).postgres_volume == restored.postgres_volume
    assert "volume rm" not in engine.steps


def test_a_failed_migration_switches_back_to_the_previous_data(kit_dir: Path, tmp_path: Path) -> None:
    config = make_config(kit_dir)
    before = read_env_file(config.env_file)
    restored = make_restored(config, tmp_path)
    engine = FakeEngine(config.env_file, failing("db upgrade", ALEMBIC_FAILURE))
    said: list[str] = []
    with pytest.raises(BackupError) as caught:
        _switch(ComposeProject(config, engine), restored, said.append, rollback_to_previous=True, persist=True)

    message = caught.value.message
    assert message.startswith("restore failed (")
    assert "Can't locate revision identified by 'ffffffffffff'" in message
    assert message.endswith("the stack runs on its previous data again")
    assert caught.value.hint == "see: mlops-kit logs"
    assert isinstance(caught.value.__cause__, CommandError)
    assert "Restore failed: switching back to the previous data" in said

    # Nothing after the failure; then: stop the switched stack, drop the fresh volumes, start the previous one.
    assert engine.steps == ["down", "start postgres", "agent load", "db upgrade", "down", "volume rm", "up"]
    rollback_down = engine.call("down", 1)
    assert rollback_down.env["MLOPS_KIT_POSTGRES_VOLUME"] == restored.postgres_volume
    assert engine.call("volume rm").argv == [
        "docker",
        "volume",
        "rm",
        "--force",
        restored.postgres_volume,
        restored.artifacts_volume,
    ]
    restart = engine.call("up")
    assert restart.env["MLOPS_KIT_POSTGRES_VOLUME"] == config.postgres_volume
    assert restart.env["MLOPS_KIT_ARTIFACTS_VOLUME"] == config.artifacts_volume
    # `.env` was back to the previous values before that restart, and stays so.
    assert restart.env_file["MLOPS_KIT_POSTGRES_VOLUME"] == ""
    assert read_env_file(config.env_file) == before


def test_a_failing_env_write_stops_the_restored_stack_again(kit_dir: Path, tmp_path: Path) -> None:
    """The `.env` write is inside the protected part: if it fails, `.env` and the stack still agree."""
    config = make_config(kit_dir)
    before = read_env_file(config.env_file)
    restored = make_restored(config, tmp_path)
    engine = FakeEngine(config.env_file)
    writes: list[dict[str, str]] = []

    def full_disk_once(env_file: Path, values: dict[str, str], added_by: str) -> None:
        writes.append(values)
        if len(writes) == 1:
            raise OSError(28, "No space left on device")
        update_env_file(env_file, values, added_by)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(restore, "update_env_file", full_disk_once)
        with pytest.raises(BackupError) as caught:
            _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=True, persist=True)
    assert "No space left on device" in caught.value.message
    assert writes[0]["MLOPS_KIT_POSTGRES_VOLUME"] == restored.postgres_volume
    assert writes[1] == {"MLOPS_KIT_POSTGRES_VOLUME": "", "MLOPS_KIT_ARTIFACTS_VOLUME": ""}
    assert engine.steps == [*SWITCH_STEPS, "down", "volume rm", "up"]
    assert engine.call("up", 1).env["MLOPS_KIT_POSTGRES_VOLUME"] == config.postgres_volume
    assert read_env_file(config.env_file) == before


def test_the_rollback_goes_on_when_a_step_fails(kit_dir: Path, tmp_path: Path) -> None:
    """Above all the restart of the previous stack must happen, whatever failed before it."""
    config = make_config(kit_dir)
    restored = make_restored(config, tmp_path)
    previous = settings_values(config, VOLUME_KEYS)
    # `.env` as the switch would have left it, had it got that far.
    update_env_file(
        config.env_file,
        {
            "MLOPS_KIT_POSTGRES_VOLUME": restored.postgres_volume,
            "MLOPS_KIT_ARTIFACTS_VOLUME": restored.artifacts_volume,
        },
        added_by="test",
    )
    engine = FakeEngine(config.env_file, failing("down", "Error response from daemon: container is paused"))
    project = ComposeProject(config, engine)
    switched = ComposeProject(
        replace(
            config,
            postgres_volume_name=restored.postgres_volume,
            artifacts_volume_name=restored.artifacts_volume,
        ),
        engine,
    )
    _rollback(project, switched, restored, previous, rollback_to_previous=True, persist=True)

    assert engine.steps == ["down", "volume rm", "up"]
    assert engine.call("volume rm").argv[-2:] == [restored.postgres_volume, restored.artifacts_volume]
    assert switched_lines(config) == previous == {"MLOPS_KIT_POSTGRES_VOLUME": "", "MLOPS_KIT_ARTIFACTS_VOLUME": ""}
    assert engine.call("up").env["MLOPS_KIT_POSTGRES_VOLUME"] == config.postgres_volume


def test_a_failing_rollback_stop_still_restarts_the_previous_stack_through_switch(
    kit_dir: Path, tmp_path: Path
) -> None:
    """Same, seen from `_switch`: the reset-admin job fails, then stopping the switched stack fails too."""
    config = make_config(kit_dir)
    before = read_env_file(config.env_file)
    restored = make_restored(config, tmp_path)

    def fail(call: Call) -> BaseException | None:
        return failing("reset admin")(call) or failing("down", volume=restored.postgres_volume)(call)

    engine = FakeEngine(config.env_file, fail)
    with pytest.raises(BackupError) as caught:
        _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=True, persist=True)
    # The message names the first failure, not the rollback's.
    assert "mlflow-reset-admin" in caught.value.message
    assert engine.steps == [*SWITCH_STEPS[:5], "down", "volume rm", "up"]
    assert read_env_file(config.env_file) == before


def test_the_drill_never_writes_env(kit_dir: Path, tmp_path: Path) -> None:
    """persist=False, rollback_to_previous=False: the throwaway stack's switch, well or badly."""
    config = make_config(kit_dir)
    before = config.env_file.read_bytes()
    mtime = config.env_file.stat().st_mtime_ns

    engine = FakeEngine(config.env_file)
    _switch(
        ComposeProject(config, engine),
        make_restored(config, tmp_path / "ok"),
        lambda _s: None,
        rollback_to_previous=False,
        persist=False,
    )
    assert engine.steps == SWITCH_STEPS

    restored = make_restored(config, tmp_path / "bad")
    engine = FakeEngine(config.env_file, failing("agent load", "Error: the dump is truncated"))
    with pytest.raises(BackupError) as caught:
        _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=False, persist=False)
    assert caught.value.message.endswith("nothing was changed")
    assert "loading the database failed" in caught.value.message
    # The rollback stops and removes what the switch made, and starts nothing.
    assert engine.steps == ["down", "start postgres", "agent load", "down", "volume rm"]
    assert config.env_file.read_bytes() == before
    assert config.env_file.stat().st_mtime_ns == mtime


def test_a_restore_of_a_stopped_stack_puts_env_back_and_starts_nothing(kit_dir: Path, tmp_path: Path) -> None:
    """rollback_to_previous=False with persist=True: the stack was not running before the restore."""
    config = make_config(kit_dir)
    before = read_env_file(config.env_file)
    restored = make_restored(config, tmp_path)
    engine = FakeEngine(config.env_file, failing("up"))
    with pytest.raises(BackupError) as caught:
        _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=False, persist=True)
    assert caught.value.message.endswith("nothing was changed")
    assert engine.steps == [*SWITCH_STEPS, "down", "volume rm"]
    assert read_env_file(config.env_file) == before


def test_the_sets_passphrase_is_adopted_and_put_back_on_failure(kit_dir: Path, tmp_path: Path) -> None:
    config = make_config(kit_dir)
    ours = config.secrets_path / KEK_FILE
    mine = ours.read_text()

    _switch(
        ComposeProject(config, FakeEngine(config.env_file)),
        make_restored(config, tmp_path / "ok", passphrase="Passphrase-Of-The-Old-Host-1"),
        lambda _s: None,
        rollback_to_previous=True,
        persist=True,
    )
    assert ours.read_text() == "Passphrase-Of-The-Old-Host-1"

    ours.write_text(mine)
    engine = FakeEngine(config.env_file, failing("db upgrade", ALEMBIC_FAILURE))
    with pytest.raises(BackupError):
        _switch(
            ComposeProject(config, engine),
            make_restored(config, tmp_path / "bad", passphrase="Passphrase-Of-The-Old-Host-2"),
            lambda _s: None,
            rollback_to_previous=True,
            persist=True,
        )
    # While the switch ran, MLflow got the set's passphrase; the previous stack gets its own back.
    assert ours.read_text() == mine
    assert engine.steps[-1] == "up"


def test_an_interrupt_rolls_back_and_is_raised_again(kit_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C during the switch: never a half-switched stack, and the interrupt is not swallowed."""
    config = make_config(kit_dir)
    before = read_env_file(config.env_file)
    restored = make_restored(config, tmp_path)

    def interrupt(call: Call) -> BaseException | None:
        return KeyboardInterrupt() if call.step == "start postgres" else None

    engine = FakeEngine(config.env_file, interrupt)
    with pytest.raises(KeyboardInterrupt):
        _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=True, persist=True)
    assert engine.steps == ["down", "start postgres", "down", "volume rm", "up"]
    assert read_env_file(config.env_file) == before


def test_bucket_mode_switches_the_prefix_and_puts_it_back_on_failure(kit_dir: Path, tmp_path: Path) -> None:
    config = make_config(kit_dir, bucket=True)
    assert config.uses_bucket
    before = read_env_file(config.env_file)
    before_text = config.env_file.read_bytes()
    restored = make_restored(config, tmp_path / "ok")
    assert restored.fresh_volumes == [restored.postgres_volume]

    engine = FakeEngine(config.env_file)
    _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=True, persist=True)
    assert engine.steps == SWITCH_STEPS
    assert engine.call("up").env["MLOPS_KIT_S3_PREFIX"] == restored.s3_prefix
    assert engine.call("down").env["MLOPS_KIT_S3_PREFIX"] == config.s3_prefix == "artifacts"
    assert switched_lines(config, BUCKET_KEYS) == {
        "MLOPS_KIT_POSTGRES_VOLUME": restored.postgres_volume,
        # The artifacts volume is untouched (the bucket mode's location is its prefix): .env keeps it as it was.
        "MLOPS_KIT_ARTIFACTS_VOLUME": "",
        "MLOPS_KIT_S3_PREFIX": f"artifacts-{GENERATION}",
    }
    switched_config = load_config(kit_dir, environ={})
    assert switched_config.s3_prefix == restored.s3_prefix

    # A failed restore of the same stack, from the configuration as it was.
    config.env_file.write_bytes(before_text)
    restored = make_restored(config, tmp_path / "bad")
    engine = FakeEngine(config.env_file, failing("db upgrade", ALEMBIC_FAILURE))
    with pytest.raises(BackupError) as caught:
        _switch(ComposeProject(config, engine), restored, lambda _s: None, rollback_to_previous=True, persist=True)
    assert caught.value.message.endswith("the stack runs on its previous data again")
    # Only the fresh database volume goes: the artifacts volume is the stack's own.
    assert engine.call("volume rm").argv == ["docker", "volume", "rm", "--force", restored.postgres_volume]
    assert engine.steps == ["down", "start postgres", "agent load", "db upgrade", "down", "volume rm", "up"]
    assert engine.call("up").env["MLOPS_KIT_S3_PREFIX"] == "artifacts"
    assert engine.call("up").env_file["MLOPS_KIT_S3_PREFIX"] == "artifacts"
    assert switched_lines(config, BUCKET_KEYS) == {key: before.get(key, "") for key in BUCKET_KEYS}
    # Observed: the rollback does not delete the objects uploaded into the fresh prefix
    # (no `kit-backup-agent delete-prefix` job, unlike the drill's cleanup); they stay in the bucket.
    assert not any(step.startswith("agent delete-prefix") for step in engine.steps)
