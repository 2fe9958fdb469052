"""Config loading: precedence, validation messages, secrets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.config.settings import SETTINGS
from mlops_kit.errors import ConfigError

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost.corp.example", addresses=("10.1.2.3",))


@pytest.fixture
def initialised(kit_dir: Path) -> Path:
    init_env_file(kit_dir, {}, host=HOST)
    return kit_dir


def set_in_env_file(kit_dir: Path, key: str, value: str) -> None:
    env_file = kit_dir / ".env"
    text = env_file.read_text()
    text, count = re.subn(rf"^{key}=.*$", f"{key}={value}", text, flags=re.MULTILINE)
    if not count:
        text += f"{key}={value}\n"
    env_file.write_text(text)


def test_defaults_and_env_file_values(initialised: Path) -> None:
    config = load_config(initialised, environ={})
    assert config.port == 5000
    assert config.bind_address == "127.0.0.1"
    assert config.project_name == "mlops-kit"
    assert config.mlflow_workers == 2
    assert config.public_host == "mlhost.corp.example"
    assert "mlhost.corp.example:*" in config.allowed_hosts


def test_precedence_cli_over_environment_over_env_file_over_default(initialised: Path) -> None:
    set_in_env_file(initialised, "MLOPS_KIT_PORT", "6001")
    assert load_config(initialised, environ={}).port == 6001
    assert load_config(initialised, environ={"MLOPS_KIT_PORT": "6002"}).port == 6002
    config = load_config(initialised, environ={"MLOPS_KIT_PORT": "6002"}, overrides={"MLOPS_KIT_PORT": "6003"})
    assert config.port == 6003
    # An override of None means "not given on the command line".
    assert load_config(initialised, environ={}, overrides={"MLOPS_KIT_PORT": None}).port == 6001


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("MLOPS_KIT_PORT", "abc", "TCP port"),
        ("MLOPS_KIT_PORT", "70000", "TCP port"),
        ("MLOPS_KIT_BIND_ADDRESS", "localhost", "IP address"),
        ("MLOPS_KIT_ARTIFACT_STORE", "s4", "one of: volume, nfs"),
        ("COMPOSE_PROJECT_NAME", "My Stack", "lower-case"),
        ("MLOPS_KIT_MLFLOW_WORKERS", "0", "whole number"),
        ("POSTGRES_SHARED_BUFFERS", "lots", "PostgreSQL size"),
    ],
)
def test_malformed_value_names_variable_and_file(initialised: Path, key: str, value: str, expected: str) -> None:
    set_in_env_file(initialised, key, value)
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    message = caught.value.message
    assert key in message
    assert str(initialised / ".env") in message
    assert expected in message
    assert key in (caught.value.hint or "")


def test_error_says_when_the_bad_value_comes_from_the_environment(initialised: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={"MLOPS_KIT_PORT": "x"})
    assert "from the environment" in caught.value.message
    assert "environment" in (caught.value.hint or "")


def test_missing_env_file_says_to_run_init(kit_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(kit_dir, environ={})
    assert ".env" in caught.value.message
    assert "mlops-kit init" in (caught.value.hint or "")


def test_missing_secret_file_names_the_file(initialised: Path) -> None:
    (initialised / "secrets" / "postgres_password").unlink()
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    assert "secrets/postgres_password" in caught.value.message


def test_password_never_appears_in_error_messages(initialised: Path) -> None:
    secret = initialised / "secrets" / "postgres_password"
    bad_password = "Known-Password$with spaces-1234567"
    secret.write_text(bad_password)
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    text = f"{caught.value.message} {caught.value.hint} {caught.value!r}"
    assert bad_password not in text
    assert "postgres_password" in text


def test_config_repr_hides_password(initialised: Path) -> None:
    config = load_config(initialised, environ={})
    assert config.postgres_password not in repr(config)


def test_nfs_mode_requires_server_and_export(initialised: Path) -> None:
    set_in_env_file(initialised, "MLOPS_KIT_ARTIFACT_STORE", "nfs")
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    assert "MLOPS_KIT_NFS_SERVER" in caught.value.message
    set_in_env_file(initialised, "MLOPS_KIT_NFS_SERVER", "nas.corp.example")
    set_in_env_file(initialised, "MLOPS_KIT_NFS_EXPORT", "relative/path")
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    assert "MLOPS_KIT_NFS_EXPORT" in caught.value.message
    set_in_env_file(initialised, "MLOPS_KIT_NFS_EXPORT", "/srv/mlflow")
    config = load_config(initialised, environ={})
    assert [p.name for p in config.compose_files] == ["compose.yaml", "artifacts-nfs.yaml"]


def test_compose_override_file_is_read_last(initialised: Path) -> None:
    (initialised / "compose.override.yaml").write_text("services: {}\n")
    config = load_config(initialised, environ={})
    assert config.compose_files[-1].name == "compose.override.yaml"


def test_unknown_setting_in_env_file_is_reported_with_suggestion(
    initialised: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_in_env_file(initialised, "MLOPS_KIT_PROT", "5001")
    load_config(initialised, environ={})
    assert "MLOPS_KIT_PROT" in caplog.text
    assert "MLOPS_KIT_PORT" in caplog.text


def test_compose_env_carries_every_setting(initialised: Path) -> None:
    config = load_config(initialised, environ={})
    env = config.compose_env()
    for setting in SETTINGS:
        assert setting.env in env
    assert config.postgres_password not in env.values()
    assert Path(env["MLOPS_KIT_SECRETS_DIR"]).is_absolute()


@pytest.mark.parametrize(
    ("bind", "public", "tracking", "local"),
    [
        ("127.0.0.1", "mlhost.corp.example", "https://localhost:5000", "https://localhost:5000"),
        ("0.0.0.0", "mlhost.corp.example", "https://mlhost.corp.example:5000", "https://localhost:5000"),
        ("10.1.2.3", "", "https://10.1.2.3:5000", "https://10.1.2.3:5000"),
    ],
)
def test_tracking_uri_for_clients_and_local_url_for_the_cli(
    initialised: Path, bind: str, public: str, tracking: str, local: str
) -> None:
    config = load_config(initialised, environ={"MLOPS_KIT_BIND_ADDRESS": bind, "MLOPS_KIT_PUBLIC_HOST": public})
    assert config.tracking_uri == tracking
    assert config.local_url == local


def test_too_few_postgres_connections_for_the_workers_names_both_settings(initialised: Path) -> None:
    set_in_env_file(initialised, "MLOPS_KIT_MLFLOW_WORKERS", "16")
    with pytest.raises(ConfigError) as caught:
        load_config(initialised, environ={})
    # 16 workers x 3 pools x 2 connections + the reserve of 20.
    assert "POSTGRES_MAX_CONNECTIONS=100" in str(caught.value) and "MLOPS_KIT_MLFLOW_WORKERS=16" in str(caught.value)
    assert "116" in (caught.value.hint or "")
    set_in_env_file(initialised, "POSTGRES_MAX_CONNECTIONS", "116")
    assert load_config(initialised, environ={}).mlflow_workers == 16


def test_the_kits_own_checkout_is_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No compose.yaml here and no --project-dir: the kit's checkout (where mlops_kit/ lives) is used."""
    from mlops_kit.config.loader import find_project_dir

    monkeypatch.chdir(tmp_path)
    found = find_project_dir()
    assert (found / "compose.yaml").is_file()
    assert (found / "mlops_kit" / "config" / "loader.py").is_file()
