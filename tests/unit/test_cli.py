"""The CLI layer: exit codes, one-line errors, confirmations (no Docker needed)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from tests.harness import run_cli


def kit(
    kit_dir: Path, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in ``kit_dir``, as an operator would (stdin: ``stdin``, never a tty)."""
    return run_cli(kit_dir, *args, env=env, input=stdin, timeout=120)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_every_command_has_help(kit_dir: Path) -> None:
    for command in ("init", "build", "up", "down", "status", "logs", "check", "client-env", "doctor", "gc"):
        result = kit(kit_dir, command, "--help")
        assert result.returncode == 0, command
        assert "Usage:" in result.stdout


def test_command_without_env_file_fails_in_one_line(kit_dir: Path) -> None:
    result = kit(kit_dir, "status")
    assert result.returncode == 2
    assert_one_line_error(result, ".env", "mlops-kit init")


def test_init_creates_private_files_and_refuses_to_overwrite(kit_dir: Path) -> None:
    first = kit(kit_dir, "init", "--port", "5111", "--project-name", "cli-test")
    assert first.returncode == 0, first.stderr
    assert (kit_dir / ".env").stat().st_mode & 0o777 == 0o600
    second = kit(kit_dir, "init")
    assert second.returncode == 2
    assert_one_line_error(second, "already exists", "--force")


def test_init_rejects_a_bad_option_value_before_writing(kit_dir: Path) -> None:
    result = kit(kit_dir, "init", "--port", "http")
    assert result.returncode == 2
    assert_one_line_error(result, "--port", "MLOPS_KIT_PORT")
    assert not (kit_dir / ".env").exists()


def test_malformed_value_in_env_file_names_variable(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    env_file = kit_dir / ".env"
    env_file.write_text(env_file.read_text().replace("MLOPS_KIT_MLFLOW_WORKERS=", "MLOPS_KIT_MLFLOW_WORKERS=many#"))
    result = kit(kit_dir, "up")
    assert result.returncode == 2
    assert_one_line_error(result, "MLOPS_KIT_MLFLOW_WORKERS", str(env_file))


def test_environment_variable_overrides_env_file(kit_dir: Path) -> None:
    assert kit(kit_dir, "init", "--port", "5111").returncode == 0
    result = kit(kit_dir, "client-env", env={"MLOPS_KIT_PORT": "5222"})
    assert result.stdout.splitlines()[0] == "export MLFLOW_TRACKING_URI=https://localhost:5222"


def test_init_writes_settings_given_in_the_environment(kit_dir: Path) -> None:
    result = kit(kit_dir, "init", env={"MLOPS_KIT_PORT": "5333", "COMPOSE_PROJECT_NAME": "from-env"})
    assert result.returncode == 0, result.stderr
    text = (kit_dir / ".env").read_text()
    assert "MLOPS_KIT_PORT=5333" in text
    assert "COMPOSE_PROJECT_NAME=from-env" in text
    bad = kit(kit_dir, "init", "--force", env={"MLOPS_KIT_PORT": "x"})
    assert bad.returncode == 2
    assert_one_line_error(bad, "MLOPS_KIT_PORT", "environment")


def test_client_env_prints_evaluable_lines(kit_dir: Path) -> None:
    assert kit(kit_dir, "init", "--bind-address", "0.0.0.0", "--public-host", "ml.corp.example").returncode == 0
    result = kit(kit_dir, "client-env")
    ca = kit_dir / "tls" / "mlops-kit-ca.crt"
    assert result.stdout == (
        f"export MLFLOW_TRACKING_URI=https://ml.corp.example:5000\nexport MLFLOW_TRACKING_SERVER_CERT_PATH={ca}\n"
    )
    assert ca.is_file() and ca.stat().st_mode & 0o777 == 0o644
    with_user = kit(kit_dir, "client-env", "--user", "admin", "--shell", "json")
    variables = json.loads(with_user.stdout)
    assert variables["MLFLOW_TRACKING_USERNAME"] == "admin"
    assert variables["MLFLOW_TRACKING_PASSWORD"] == (kit_dir / "secrets" / "mlflow_admin_password").read_text()
    unknown = kit(kit_dir, "client-env", "--user", "nobody")
    assert unknown.returncode == 2
    assert_one_line_error(unknown, "nobody", "users add")
    env_text = (kit_dir / ".env").read_text()
    assert "ml.corp.example:*" in env_text


def test_down_volumes_refuses_without_confirmation_when_not_interactive(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, "down", "--volumes")
    assert result.returncode == 1
    assert_one_line_error(result, "confirmation", "--yes")


def test_down_volumes_dry_run_with_yes_prints_the_command(kit_dir: Path) -> None:
    init_env_file(
        kit_dir, {"COMPOSE_PROJECT_NAME": "dry"}, host=HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")
    )
    result = kit(kit_dir, "--dry-run", "down", "--volumes", "--yes")
    assert result.returncode == 0, result.stderr
    assert "docker compose --project-name dry" in result.stdout
    assert result.stdout.strip().splitlines()[0].endswith("--volumes")


def test_unknown_service_for_logs_is_named(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, "logs", "mlfow")
    assert result.returncode == 2
    assert_one_line_error(result, "mlfow", "mlflow")


@pytest.mark.parametrize("command", ["status", "up", "doctor"])
def test_stopped_engine_is_one_clear_line(kit_dir: Path, command: str) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, command, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 3
    assert_one_line_error(result, "Docker engine", "bootstrap-host.sh")
