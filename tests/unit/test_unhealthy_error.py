"""`up` failed: `_unhealthy_error` names the service to blame and what it said last (lifecycle.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.engine.compose import ComposeProject, ServiceState
from mlops_kit.errors import CommandError
from mlops_kit.runner import CommandResult, CommandRunner
from mlops_kit.stores.check import CHECK_SERVICE
from mlops_kit.workflows.lifecycle import _unhealthy_error

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")
UP = ["docker", "compose", "up", "--detach", "--wait"]


class FakeInspector(CommandRunner):
    """Answers `docker logs` and `docker inspect ... .State.Health` per container; records what was asked."""

    def __init__(self, logs: Mapping[str, str] | None = None, health: Mapping[str, object] | None = None) -> None:
        super().__init__()
        self.logs = dict(logs or {})
        self.health = dict(health or {})
        self.asked: list[list[str]] = []

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> CommandResult:
        args = [str(a) for a in argv]
        self.asked.append(args)
        container = args[-1]
        if args[:2] == ["docker", "logs"]:
            return CommandResult(args, 0, self.logs.get(container, ""), "")
        if args[:2] == ["docker", "inspect"] and "{{json .State.Health}}" in args:
            return CommandResult(args, 0, json.dumps(self.health.get(container)) + "\n", "")
        raise AssertionError(f"unexpected command {args}")

    def asked_about(self, container: str) -> list[str]:
        """The commands (docker logs / docker inspect) run for ``container``."""
        return [args[1] for args in self.asked if args[-1] == container]


@pytest.fixture
def config_dir(kit_dir: Path) -> Path:
    init_env_file(kit_dir, {}, host=HOST)
    return kit_dir


def project_with(kit_dir: Path, runner: FakeInspector) -> ComposeProject:
    return ComposeProject(load_config(kit_dir, environ={}), runner)


def compose_failure(stderr: str) -> CommandError:
    """What `docker compose up --wait` raises when a service does not become healthy."""
    return CommandError(UP, 1, "", stderr)


def state(service: str, state: str = "running", health: str = "healthy", exit_code: int = 0) -> ServiceState:
    return ServiceState(service, f"mlkt-{service}-1", state, health, f"mlops-kit/{service}:test", exit_code=exit_code)


def health_with(*outputs: str) -> dict[str, object]:
    """`.State.Health` as `docker inspect` prints it: the log holds the last checks, oldest first."""
    return {
        "Status": "unhealthy",
        "FailingStreak": len(outputs),
        "Log": [{"Start": "2026-01-01T08:00:00Z", "ExitCode": 1, "Output": text} for text in outputs],
    }


def test_the_unhealthy_service_compose_names_is_blamed_with_its_last_healthcheck_output(config_dir: Path) -> None:
    runner = FakeInspector(
        health={
            "mlkt-mlflow-1": health_with(
                "curl: (7) Failed to connect to localhost port 5000\n",
                "curl: (22) The requested URL returned error: 503\n",
            )
        }
    )
    states = [
        # Listed first, never started because MLflow did not become healthy: not the one to blame.
        state("proxy", "created", ""),
        state("postgres"),
        state("mlflow", "running", "unhealthy"),
    ]
    error = _unhealthy_error(
        project_with(config_dir, runner),
        states,
        compose_failure("dependency failed to start: container mlkt-mlflow-1 is unhealthy"),
    )
    assert error.message == (
        "service mlflow did not become healthy (running, unhealthy): curl: (22) The requested URL returned error: 503"
    )
    assert error.hint == "see its log: mlops-kit logs mlflow"
    assert error.exit_code == 5
    # A running container: its healthcheck says why, its log is not needed.
    assert runner.asked_about("mlkt-mlflow-1") == ["inspect"]
    assert runner.asked_about("mlkt-proxy-1") == []


def test_a_named_container_is_blamed_even_when_it_looks_healthy_for_an_instant(config_dir: Path) -> None:
    """A crash-looping container may read "running, healthy" by the time `ps` looks."""
    runner = FakeInspector(health={"mlkt-postgres-1": health_with("/var/run/postgresql:5432 - rejecting connections")})
    states = [state("mlflow", "running", "starting"), state("postgres")]
    error = _unhealthy_error(
        project_with(config_dir, runner), states, compose_failure("container mlkt-postgres-1 is unhealthy")
    )
    assert error.message == (
        "service postgres did not become healthy (running, healthy): /var/run/postgresql:5432 - rejecting connections"
    )
    assert error.hint == "see its log: mlops-kit logs postgres"


def test_an_exited_container_is_blamed_with_the_last_line_of_its_log(config_dir: Path) -> None:
    runner = FakeInspector(
        logs={
            "mlkt-mlflow-1": (
                "[2026-01-01 08:00:00] Starting gunicorn\n"
                "Traceback (most recent call last):\n"
                'sqlalchemy.exc.OperationalError: could not translate host name "postgres"\n\n'
            )
        }
    )
    states = [state("postgres"), state("mlflow", "exited", "", exit_code=1)]
    error = _unhealthy_error(
        project_with(config_dir, runner), states, compose_failure("container mlkt-mlflow-1 exited (1)")
    )
    assert error.message == (
        "service mlflow did not become healthy (exited): "
        'sqlalchemy.exc.OperationalError: could not translate host name "postgres"'
    )
    assert error.hint == "see its log: mlops-kit logs mlflow"
    # The log said why: no need to ask for a healthcheck it no longer runs.
    assert runner.asked_about("mlkt-mlflow-1") == ["logs"]
    assert ["docker", "logs", "--tail", "20", "mlkt-mlflow-1"] in runner.asked


def test_without_a_name_from_compose_the_first_service_that_is_not_healthy_is_blamed(config_dir: Path) -> None:
    """Compose's words did not name a container (e.g. the wait timed out): the states decide."""
    runner = FakeInspector(health={"mlkt-proxy-1": health_with("wget: can't connect to remote host")})
    states = [state("postgres"), state("proxy", "running", "starting"), state("mlflow", "running", "unhealthy")]
    error = _unhealthy_error(
        project_with(config_dir, runner), states, compose_failure("timeout waiting for the services to be healthy")
    )
    assert (
        error.message == "service proxy did not become healthy (running, starting): wget: can't connect to remote host"
    )


def test_a_failed_store_check_is_reported_as_the_artifact_store_with_its_verdict(config_dir: Path) -> None:
    verdict = {
        "ok": False,
        "problem": "credentials",
        "message": "the endpoint https://s3.example.com refused the keys (InvalidAccessKeyId)",
        "fix": "check s3_access_key_id and s3_secret_access_key in the secrets folder",
    }
    runner = FakeInspector(logs={"mlkt-s3-check-1": "checking https://s3.example.com\n" + json.dumps(verdict) + "\n"})
    states = [
        state("postgres"),
        state(CHECK_SERVICE, "exited", "", exit_code=1),
        state("mlflow", "created", ""),
    ]
    error = _unhealthy_error(
        project_with(config_dir, runner),
        states,
        compose_failure('service "s3-check" didn\'t complete successfully: exit 1'),
    )
    assert error.message == f"artifact store: {verdict['message']}"
    assert error.hint == verdict["fix"]
    assert runner.asked_about("mlkt-mlflow-1") == []


def test_a_store_check_that_printed_no_verdict_is_reported_with_its_last_words(config_dir: Path) -> None:
    runner = FakeInspector(logs={"mlkt-s3-check-1": "Traceback (most recent call last):\nMemoryError\n"})
    states = [state(CHECK_SERVICE, "exited", "", exit_code=137), state("mlflow", "created", "")]
    error = _unhealthy_error(project_with(config_dir, runner), states, compose_failure("exit 137"))
    assert error.message == "artifact store: the store check failed: MemoryError"
    assert error.hint == "run again with -vv"


def test_a_store_check_that_succeeded_is_not_blamed(config_dir: Path) -> None:
    runner = FakeInspector(health={"mlkt-mlflow-1": health_with("HTTP 502")})
    states = [
        state(CHECK_SERVICE, "exited", "", exit_code=0),
        state("postgres"),
        state("mlflow", "running", "unhealthy"),
    ]
    error = _unhealthy_error(
        project_with(config_dir, runner), states, compose_failure("container mlkt-mlflow-1 is unhealthy")
    )
    assert error.message == "service mlflow did not become healthy (running, unhealthy): HTTP 502"
    assert runner.asked_about("mlkt-s3-check-1") == []


def test_when_every_service_looks_well_the_message_falls_back_to_composes(config_dir: Path) -> None:
    runner = FakeInspector()
    states = [state(CHECK_SERVICE, "exited", "", exit_code=0), state("postgres"), state("mlflow")]
    failure = compose_failure("Error response from daemon: driver failed programming external connectivity")
    error = _unhealthy_error(project_with(config_dir, runner), states, failure)
    assert error.message == f"the stack did not start: {failure.message}"
    assert error.hint == "see: mlops-kit logs"
    assert runner.asked == []


def test_with_no_containers_at_all_the_stack_did_not_start(config_dir: Path) -> None:
    failure = compose_failure("network mlkt_backend: failed to create: address pool exhausted")
    error = _unhealthy_error(project_with(config_dir, FakeInspector()), [], failure)
    assert error.message.startswith("the stack did not start: `docker compose up --detach --wait` failed")
    assert error.message.endswith("address pool exhausted")
    assert error.hint == "see: mlops-kit logs"


def test_a_container_that_said_nothing_is_still_named(config_dir: Path) -> None:
    """No log, no healthcheck output: the service and its state are still there."""
    runner = FakeInspector(health={"mlkt-proxy-1": None})
    error = _unhealthy_error(
        project_with(config_dir, runner),
        [state("proxy", "exited", "", exit_code=2)],
        compose_failure("container mlkt-proxy-1 exited (2)"),
    )
    assert error.message == "service proxy did not become healthy (exited)"
    assert error.hint == "see its log: mlops-kit logs proxy"
    # Current behaviour: an exited container's empty log is read twice (before and after the healthcheck).
    assert runner.asked_about("mlkt-proxy-1") == ["logs", "inspect", "logs"]


class Recovering:
    """A project whose ps() answers the given states in turn (the last one from then on)."""

    def __init__(self, *answers: list[ServiceState]) -> None:
        self.answers = list(answers)
        self.runner = CommandRunner()

    def ps(self) -> list[ServiceState]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_a_service_unhealthy_for_a_moment_is_waited_for_and_one_that_stays_so_or_exits_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`up --wait` gives up on the first unhealthy check: a proxy whose MLflow is restarting recovers."""
    import time

    from mlops_kit.workflows import lifecycle

    monkeypatch.setattr(lifecycle, "POLL_SECONDS", 0.0)
    failure = compose_failure("dependency failed to start: container mlkt-proxy-1 is unhealthy")
    later = time.monotonic() + 5
    recovering = Recovering([state("proxy", health="unhealthy")], [state("proxy", health="healthy")])
    assert lifecycle._recovers(recovering, failure, until=later)  # type: ignore[arg-type]
    stays = Recovering([state("proxy", health="unhealthy")])
    assert not lifecycle._recovers(stays, failure, until=time.monotonic() + 0.2)  # type: ignore[arg-type]
    exited = Recovering([state("proxy", health="unhealthy")], [state("proxy", state="exited", exit_code=1)])
    assert not lifecycle._recovers(exited, failure, until=later)  # type: ignore[arg-type]
    # A container that exited is named as failed at once, whatever its state now.
    gone = compose_failure("container mlkt-proxy-1 exited (1)")
    assert not lifecycle._recovers(recovering, gone, until=later)  # type: ignore[arg-type]
