"""A restore brings the backup set's key-encryption passphrase along (mlops_kit/workflows/restore.py)."""

from __future__ import annotations

import stat
from pathlib import Path

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.workflows.restore import _adopt_set_passphrase

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost", addresses=())


def set_with(tmp_path: Path, passphrase: str | None) -> Path:
    current = tmp_path / "staging" / "restore-r20261130080000" / "current"
    current.mkdir(parents=True)
    if passphrase is not None:
        (current / "mlflow_kek_passphrase").write_text(passphrase)
    return current


def test_the_sets_passphrase_replaces_this_hosts_and_this_hosts_is_kept(kit_dir: Path, tmp_path: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    ours = config.secrets_path / "mlflow_kek_passphrase"
    mine = ours.read_text()
    previous = _adopt_set_passphrase(config, set_with(tmp_path, "Passphrase-Of-The-Old-Host-1"))
    assert previous == mine
    assert ours.read_text() == "Passphrase-Of-The-Old-Host-1"
    assert stat.S_IMODE(ours.stat().st_mode) == 0o600
    kept = ours.with_name("mlflow_kek_passphrase.before-restore-r20261130080000")
    assert kept.read_text() == mine and stat.S_IMODE(kept.stat().st_mode) == 0o600


def test_nothing_changes_for_the_same_passphrase_or_a_set_without_one(kit_dir: Path, tmp_path: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    mine = (config.secrets_path / "mlflow_kek_passphrase").read_text()
    assert _adopt_set_passphrase(config, set_with(tmp_path / "same", mine)) is None
    assert _adopt_set_passphrase(config, set_with(tmp_path / "old-kit", None)) is None
    assert (config.secrets_path / "mlflow_kek_passphrase").read_text() == mine
    assert not list(config.secrets_path.glob("mlflow_kek_passphrase.before-*"))
