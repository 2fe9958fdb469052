"""User management as the CLI sees it, without a server: files, variables, refusals."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.errors import ConfigError
from mlops_kit.services.mlflow import ServerAccess, as_mlflow_client
from mlops_kit.workflows.tls import ensure_certificates
from mlops_kit.workflows.users import UserAdmin, client_variables, password_file

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="h", fqdn="h", addresses=())


def test_client_variables_for_the_admin_and_an_unknown_user(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_PORT": "5443"}, host=HOST)
    config = load_config(kit_dir, environ={})
    ensure_certificates(config)
    variables = client_variables(config, "admin")
    assert variables["MLFLOW_TRACKING_URI"] == "https://localhost:5443"
    assert variables["MLFLOW_TRACKING_PASSWORD"] == (kit_dir / "secrets" / "mlflow_admin_password").read_text()
    assert variables["MLFLOW_TRACKING_SERVER_CERT_PATH"] == str(kit_dir / "tls" / "mlops-kit-ca.crt")
    with pytest.raises(ConfigError) as error:
        client_variables(config, "nobody")
    assert "nobody" in str(error.value) and "users" in (error.value.hint or "")


def test_user_passwords_live_in_private_files(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    assert password_file(config, "admin") == config.secrets_path / "mlflow_admin_password"
    path = UserAdmin(config, ServerAccess("https://localhost:1"))._store("alice", "A-Generated-Password-123")
    assert path == config.secrets_path / "users" / "alice"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_kits_admin_cannot_be_removed(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    with pytest.raises(ConfigError) as error:
        UserAdmin(config, ServerAccess("https://localhost:1")).remove("admin")
    assert "MLOPS_KIT_ADMIN_USER" in str(error.value)


def test_mlflow_client_variables_are_restored_after_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    access = ServerAccess("https://localhost:5443", verify="/ca.crt", username="admin", password="Pw-For-The-Test-1")
    with as_mlflow_client(access):
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] == "/ca.crt"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "someone-else"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert "Pw-For-The-Test-1" not in repr(access)


def test_mlflow_client_goes_to_the_access_even_after_set_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tracking URI set with mlflow.set_tracking_uri (an earlier caller in the process) wins
    over the environment: inside the block the access's URI must be used, and the old one after."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    mlflow.set_tracking_uri("https://an-old-server:1")
    try:
        with as_mlflow_client(ServerAccess("https://localhost:5443", verify="/ca.crt")):
            assert mlflow.get_tracking_uri() == "https://localhost:5443"
        assert mlflow.get_tracking_uri() == "https://an-old-server:1"
    finally:
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    with as_mlflow_client(ServerAccess("https://localhost:5443", verify="/ca.crt")):
        assert mlflow.get_tracking_uri() == "https://localhost:5443"
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ


def test_compose_file_passes_compose_lint_at_medium() -> None:
    """The CI gate of the issue: compose-lint (PyPI), --fail-on medium, with the kit's config."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    lint = Path(sys.executable).with_name("compose-lint")
    result = subprocess.run(
        [str(lint), "check", "--fail-on", "medium", "--strict-config", "-q", "compose.yaml"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_names_cannot_walk_out_of_the_secrets_folder(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    with pytest.raises(ConfigError) as error:
        client_variables(config, "../postgres_password")
    assert "user name" in str(error.value)
    assert (kit_dir / "secrets" / "postgres_password").read_text() not in str(error.value)


@pytest.mark.parametrize("chosen", ["short-1", "has%percent-and-is-long-enough", "space in it is long enough"])
def test_a_chosen_password_must_be_a_valid_secret_and_is_never_echoed(kit_dir: Path, chosen: str) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    admin = UserAdmin(config, ServerAccess("https://localhost:1"))
    with pytest.raises(ConfigError) as error:
        admin.set_password("alice", chosen)  # refused before any request is made
    assert "stdin" in str(error.value)
    assert chosen not in str(error.value)
