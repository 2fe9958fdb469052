"""The artifact store modes: what each declares, and that the rest of the kit asks the mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import compose_file_value, load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.runner import CommandRunner
from mlops_kit.stores import STORES, fresh_prefix, store_named

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")


def test_restore_volume_in_nfs_mode_is_an_nfs_mount(kit_dir: Path) -> None:
    init_env_file(
        kit_dir,
        {"MLOPS_KIT_ARTIFACT_STORE": "nfs", "MLOPS_KIT_NFS_SERVER": "nas", "MLOPS_KIT_NFS_EXPORT": "/srv/ml"},
        host=HOST,
    )
    config = load_config(kit_dir, environ={})
    opts = config.store.volume_driver_opts(config)
    assert opts["type"] == "nfs" and opts["device"] == ":/srv/ml" and opts["o"].startswith("addr=nas,")
    runner = CommandRunner(dry_run=True)
    ComposeProject(config, runner).create_volume("v1", "artifacts", driver_opts=opts)
    assert "--driver local --opt type=nfs" in runner.dry_run_log[0]
    assert runner.dry_run_log[0].endswith(" v1")


@pytest.mark.parametrize(
    ("mode", "network", "overlays"),
    [
        ("volume", "", ""),
        ("nfs", "", "compose.yaml:docker/compose/artifacts-nfs.yaml"),
        ("s3", "", "compose.yaml:docker/compose/artifacts-s3.yaml"),
        ("s3", "net", "compose.yaml:docker/compose/artifacts-s3.yaml:docker/compose/s3-network.yaml"),
        ("minio", "", "compose.yaml:docker/compose/artifacts-s3.yaml:docker/compose/artifacts-minio.yaml"),
        (
            "minio",
            "net",
            "compose.yaml:docker/compose/artifacts-s3.yaml:docker/compose/artifacts-minio.yaml"
            ":docker/compose/s3-network.yaml",
        ),
    ],
)
def test_each_mode_names_its_overlays_in_order(mode: str, network: str, overlays: str) -> None:
    assert compose_file_value(store_named(mode), network) == overlays


def test_every_mode_has_one_module_and_a_fresh_location_never_the_current_one(kit_dir: Path) -> None:
    assert sorted(STORES) == ["minio", "nfs", "s3", "volume"]
    init_env_file(kit_dir, {"MLOPS_KIT_S3_PREFIX": "artifacts-r20250101000000"}, host=HOST)
    config = load_config(kit_dir, environ={})
    for store in STORES.values():
        fresh = store.relocated(config, "m20260101000000")
        assert fresh and all(getattr(config, attr) != value for attr, value in fresh.items())
    assert fresh_prefix("artifacts-r20250101000000", "m20260101000000") == "artifacts-m20260101000000"


def test_only_the_kits_own_minio_is_removed_with_the_stack(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    config = load_config(kit_dir, environ={})
    assert "kept" in store_named("s3").kept_on_delete(config)
    assert store_named("minio").kept_on_delete(config) == ""
    assert store_named("minio").fixed_env() == {"MLOPS_KIT_S3_ENDPOINT_URL": "http://minio:9000"}
    assert [s.name for s in store_named("minio").extra_services] == ["minio"]
