"""Bad input against the real engine: one clear line, non-zero exit, nothing started."""

from __future__ import annotations

import socket

from tests.harness import StackFactory


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_port_already_taken_is_named_and_nothing_starts(stack_factory: StackFactory) -> None:
    stack = stack_factory()
    stack.init()
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", stack.port))
        holder.listen()
        result = stack.kit("up", check=False)
    assert result.returncode == 3
    assert_one_line_error(result.stderr, f"port {stack.port}", "MLOPS_KIT_PORT")
    assert stack.containers() == []


def test_up_without_env_file_runs_init_first(stack_factory: StackFactory) -> None:
    """No .env is not an error for `up`: it initialises, then starts (other commands refuse)."""
    stack = stack_factory()
    status = stack.kit("status", check=False)
    assert status.returncode == 2
    assert_one_line_error(status.stderr, ".env", "mlops-kit init")
    result = stack.kit("up", env={"COMPOSE_PROJECT_NAME": stack.project, "MLOPS_KIT_PORT": str(stack.port)})
    # The console wraps at 80 columns when it is not a terminal: where depends on the path's length.
    assert "running init first" in " ".join(result.stdout.split())
    assert (stack.directory / ".env").stat().st_mode & 0o777 == 0o600
    assert stack.status()["healthy"] is True


def test_second_stack_on_the_same_host_does_not_collide(stack_factory: StackFactory) -> None:
    first = stack_factory()
    second = stack_factory()
    for stack in (first, second):
        stack.init()
        stack.kit("up")
    for stack in (first, second):
        status = stack.status()
        assert status["healthy"] is True
        assert status["project"] == stack.project
    assert set(first.volumes()).isdisjoint(second.volumes())
