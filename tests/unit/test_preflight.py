"""Preflight checks that need no engine: versions, ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlops_kit.checks import FAIL, OK, CheckResult
from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import KitConfig, load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import PreflightError
from mlops_kit.runner import CommandRunner
from mlops_kit.workflows.preflight import (
    check_engine,
    check_loopback_exposure,
    check_port,
    parse_version,
    raise_on_failure,
    read_engine,
)

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="h", fqdn="h", addresses=())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v2.40.3", (2, 40, 3)),
        ("20.10.24+dfsg1", (20, 10, 24)),
        ("28.2.2", (28, 2, 2)),
        ("2.24.0-desktop.1", (2, 24, 0)),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


def config_for(kit_dir: Path, port: int) -> KitConfig:
    init_env_file(kit_dir, {"MLOPS_KIT_PORT": str(port)}, host=HOST)
    return load_config(kit_dir, environ={})


def test_port_check_names_a_taken_port(kit_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = check_port(config_for(kit_dir, port), published_by_stack=set())
    assert result.status == FAIL
    assert str(port) in result.detail
    assert "MLOPS_KIT_PORT" in result.fix


def test_port_check_passes_for_a_free_port(kit_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert check_port(config_for(kit_dir, port), published_by_stack=set()).status == OK


def test_raise_on_failure_uses_the_first_failure_and_its_fix() -> None:
    results = [CheckResult("a", OK, "fine"), CheckResult("b", FAIL, "broken", "do x"), CheckResult("c", FAIL, "also")]
    with pytest.raises(PreflightError) as caught:
        raise_on_failure(results)
    assert caught.value.message == "b: broken"
    assert caught.value.hint == "do x"


class FakeEngineRunner(CommandRunner):
    """The one runner, patched: `docker info` answers as an engine of the given version would."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version

    def run(self, argv, **kwargs):  # type: ignore[no-untyped-def,override]
        from mlops_kit.runner import CommandResult

        if argv[:2] == ["docker", "info"]:
            stdout = json.dumps({"ServerVersion": self.version, "DockerRootDir": "/var/lib/docker", "Driver": "x"})
            return CommandResult(list(argv), 0, stdout, "")
        raise AssertionError(f"unexpected command {argv}")


@pytest.mark.parametrize(
    ("version", "bind", "status"),
    [("20.10.24+dfsg1", "127.0.0.1", "warn"), ("28.0.1", "127.0.0.1", OK), ("20.10.24", "0.0.0.0", OK)],
)
def test_old_engine_with_loopback_publishing_is_warned_about(
    kit_dir: Path, version: str, bind: str, status: str
) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_BIND_ADDRESS": bind}, host=HOST)
    config = load_config(kit_dir)
    engine = read_engine(FakeEngineRunner(version))
    assert check_engine(engine).status == OK
    result = check_loopback_exposure(config, engine)
    assert result.status == status
    if status == "warn":
        assert "45610" in result.detail
        assert "docs/security.md" in result.fix


def test_the_port_the_stack_already_publishes_is_not_in_use(kit_dir: Path) -> None:
    """`up` on a running stack: its own proxy holds the port, which is fine."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert check_port(config_for(kit_dir, port), published_by_stack={port}).status == OK


def test_an_engine_that_refuses_the_socket_says_so_and_how_to_fix_it() -> None:
    class Refusing(CommandRunner):
        def run(self, argv, **kwargs):  # type: ignore[no-untyped-def,override]
            from mlops_kit.errors import CommandError

            raise CommandError(
                list(argv), 1, "", "permission denied while trying to connect to the Docker daemon socket"
            )

    engine = read_engine(Refusing())
    result = check_engine(engine)
    assert (engine.reachable, result.status) == (False, FAIL)
    assert "permission denied" in result.detail
    assert "docker group" in result.fix


def test_preflight_changes_nothing(kit_dir: Path) -> None:
    """Every command preflight runs is read-only: the dry-run runner records none as a change."""
    from mlops_kit.workflows.preflight import run_preflight

    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    before = sorted(p.name for p in kit_dir.rglob("*"))
    runner = CommandRunner(dry_run=True)
    run_preflight(ComposeProject(config, runner))
    assert runner.dry_run_log == []
    assert sorted(p.name for p in kit_dir.rglob("*")) == before


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?", "down"),
        ("failed to connect to the docker API at unix:///var/run/docker.sock; check if the path is correct", "down"),
        (
            "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
            "perm",
        ),
        ("permission denied while trying to connect to the docker API at unix:///var/run/docker.sock", "perm"),
        ("mkdir /data/x: permission denied", "other"),
        ("Bind for 127.0.0.1:5000 failed: port is already allocated", "port"),
    ],
)
def test_one_classifier_reads_what_every_docker_version_says(stderr: str, kind: str) -> None:
    from mlops_kit.engine import docker_errors

    expected = {
        "down": docker_errors.ENGINE_DOWN,
        "perm": docker_errors.NO_PERMISSION,
        "port": docker_errors.PORT_TAKEN,
        "other": docker_errors.OTHER,
    }
    assert docker_errors.classify("", stderr) == expected[kind]
