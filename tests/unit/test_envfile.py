"""`init`: .env rendering, secret generation, file modes, refusal to overwrite."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, allowed_host_patterns, init_env_file, render_env, sized_settings
from mlops_kit.config.loader import load_config, read_env_file
from mlops_kit.config.secrets import generate_secret
from mlops_kit.config.settings import SETTINGS
from mlops_kit.errors import ConfigError

HOST = HostFacts(
    memory_bytes=24 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost.corp.example", addresses=("10.1.2.3",)
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_env_and_secret_with_private_modes(kit_dir: Path) -> None:
    result = init_env_file(kit_dir, {"MLOPS_KIT_PORT": "5123"}, host=HOST)
    assert result.env_file == kit_dir / ".env"
    assert mode(kit_dir / ".env") == 0o600
    assert mode(kit_dir / "secrets") == 0o700
    secret = kit_dir / "secrets" / "postgres_password"
    assert mode(secret) == 0o600
    assert len(secret.read_text()) >= 40
    values = read_env_file(kit_dir / ".env")
    assert values["MLOPS_KIT_PORT"] == "5123"
    # Comments from .env.example survive.
    assert "# ---- Network" in (kit_dir / ".env").read_text()
    load_config(kit_dir, environ={})


def test_generated_secrets_are_strong_and_distinct() -> None:
    values = {generate_secret() for _ in range(50)}
    assert len(values) == 50
    assert all(len(v) >= 43 for v in values)


def test_init_refuses_to_overwrite_without_force(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    before = (kit_dir / ".env").read_text()
    with pytest.raises(ConfigError) as caught:
        init_env_file(kit_dir, {"MLOPS_KIT_PORT": "6000"}, host=HOST)
    assert "already exists" in caught.value.message
    assert "--force" in (caught.value.hint or "")
    assert (kit_dir / ".env").read_text() == before


def test_force_keeps_a_backup_and_the_existing_secret(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    password = (kit_dir / "secrets" / "postgres_password").read_text()
    result = init_env_file(kit_dir, {"MLOPS_KIT_PORT": "6000"}, force=True, host=HOST)
    assert result.backup is not None and result.backup.exists()
    assert mode(result.backup) == 0o600
    assert (kit_dir / "secrets" / "postgres_password").read_text() == password
    assert read_env_file(kit_dir / ".env")["MLOPS_KIT_PORT"] == "6000"


def test_env_example_documents_exactly_the_settings() -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    keys = set(read_env_file(example))
    assert keys == {s.env for s in SETTINGS}


def test_render_env_appends_unknown_keys_and_keeps_order() -> None:
    text = render_env("# head\nA=1\n# B=\nC=3\n", {"B": "2", "D": "4"})
    assert text == "# head\nA=1\nB=2\nC=3\n\n# Added by mlops-kit init\nD=4\n"


def test_sizing_follows_host_memory() -> None:
    small = sized_settings(HostFacts(memory_bytes=2 * 2**30, cpus=1, hostname="h", fqdn="h"))
    large = sized_settings(HOST)
    assert small["POSTGRES_SHARED_BUFFERS"] == "128MB"
    # A quarter of PostgreSQL's container memory (a quarter of the host) for shared buffers;
    # the cache it may count on fits in that container too.
    assert large["MLOPS_KIT_POSTGRES_MEMORY"] == "6144m"
    assert large["POSTGRES_SHARED_BUFFERS"] == "1536MB"
    assert large["POSTGRES_EFFECTIVE_CACHE_SIZE"] == "4608MB"
    assert small["MLOPS_KIT_MLFLOW_WORKERS"] == "1"


def test_allowed_host_patterns_cover_names_with_and_without_port() -> None:
    assert allowed_host_patterns(["mlhost", "fd00::1"]) == "mlhost,mlhost:*,[fd00::1],[[]fd00::1]:*"


def test_upgrade_moves_an_older_kits_image_tags_and_sizes_new_limits(tmp_path: Path) -> None:
    from mlops_kit.config.envfile import upgrade_env_file
    from mlops_kit.config.settings import SETTINGS_BY_ENV

    env_file = tmp_path / ".env"
    env_file.write_text(
        "MLOPS_KIT_MLFLOW_IMAGE=mlops-kit/mlflow:3.17.2-kit0.1.0\n"
        "MLOPS_KIT_POSTGRES_IMAGE=registry.corp.example/postgres:own\n"
        "MLOPS_KIT_PORT=5000\n"
    )
    one_cpu = HostFacts(memory_bytes=4 * 2**30, cpus=1, hostname="h", fqdn="h", addresses=())
    changes = upgrade_env_file(env_file, one_cpu)
    text = env_file.read_text()
    assert changes["MLOPS_KIT_MLFLOW_IMAGE"] == SETTINGS_BY_ENV["MLOPS_KIT_MLFLOW_IMAGE"].default
    assert "MLOPS_KIT_POSTGRES_IMAGE" not in changes  # the operator's choice stays
    assert "MLOPS_KIT_POSTGRES_IMAGE=registry.corp.example/postgres:own" in text
    assert changes["MLOPS_KIT_MLFLOW_CPUS"] == "1"
    assert "MLOPS_KIT_MLFLOW_CPUS=1" in text
    assert upgrade_env_file(env_file, one_cpu) == {}  # idempotent


def test_env_update_changes_the_real_assignment_not_a_comment() -> None:
    text = "# MLOPS_KIT_POSTGRES_VOLUME=old-comment\nA=1\nMLOPS_KIT_POSTGRES_VOLUME=old\n"
    out = render_env(text, {"MLOPS_KIT_POSTGRES_VOLUME": "new"})
    assert out == "# MLOPS_KIT_POSTGRES_VOLUME=old-comment\nA=1\nMLOPS_KIT_POSTGRES_VOLUME=new\n"
    only_comment = render_env("# B=\n", {"B": "2"})
    assert only_comment == "B=2\n"


def test_init_force_that_fails_validation_says_where_the_previous_env_is(kit_dir: Path) -> None:
    from mlops_kit.errors import ConfigError
    from mlops_kit.workflows.lifecycle import init_stack

    init_env_file(kit_dir, {}, host=HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h"))
    with pytest.raises(ConfigError) as caught:
        init_stack(kit_dir, kit_dir / ".env", {"artifact_store": "nfs"}, force=True)
    assert "MLOPS_KIT_NFS_SERVER" in caught.value.message
    assert ".env.bak-" in (caught.value.hint or "")
