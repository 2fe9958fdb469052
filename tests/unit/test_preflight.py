"""Preflight checks that need no engine: versions, ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from mlops_kit.compose import ComposeProject
from mlops_kit.config import load_config
from mlops_kit.envfile import HostFacts, init_env_file
from mlops_kit.errors import PreflightError
from mlops_kit.preflight import FAIL, OK, CheckResult, Preflight, parse_version, raise_on_failure
from mlops_kit.runner import CommandRunner

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


def preflight_for(kit_dir: Path, port: int) -> Preflight:
    init_env_file(kit_dir, {"MLOPS_KIT_PORT": str(port)}, host=HOST)
    return Preflight(ComposeProject(load_config(kit_dir, environ={}), CommandRunner()))


def test_port_check_names_a_taken_port(kit_dir: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = preflight_for(kit_dir, port).check_port()
    assert result.status == FAIL
    assert str(port) in result.detail
    assert "MLOPS_KIT_PORT" in result.fix


def test_port_check_passes_for_a_free_port(kit_dir: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert preflight_for(kit_dir, port).check_port().status == OK


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
    preflight = Preflight(ComposeProject(config, FakeEngineRunner(version)))
    assert preflight.check_engine().status == OK
    result = preflight.check_loopback_exposure()
    assert result.status == status
    if status == "warn":
        assert "45610" in result.detail
        assert "docs/security.md" in result.fix
