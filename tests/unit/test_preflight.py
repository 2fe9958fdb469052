"""Preflight checks that need no engine: versions, ports."""

from __future__ import annotations

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
