"""nfs mode: the artifacts volume is an NFS mount (Docker's local driver mounts the export)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops_kit.errors import ConfigError
from mlops_kit.stores.base import ArtifactStore

if TYPE_CHECKING:
    from mlops_kit.config.loader import KitConfig

OVERLAY = Path("docker/compose/artifacts-nfs.yaml")


class NfsStore(ArtifactStore):
    """A volume mode whose volume is the operator's NFS export."""

    name = "nfs"

    def overlays(self, s3_network: str = "") -> tuple[Path, ...]:
        return (OVERLAY,)

    def volume_driver_opts(self, config: KitConfig) -> dict[str, str]:
        return {"type": "nfs", "o": f"addr={config.nfs_server},{config.nfs_options}", "device": f":{config.nfs_export}"}

    def validate(self, config: KitConfig) -> None:
        for attr, env in (("nfs_server", "MLOPS_KIT_NFS_SERVER"), ("nfs_export", "MLOPS_KIT_NFS_EXPORT")):
            if not getattr(config, attr):
                raise ConfigError(
                    f"{env} is empty but MLOPS_KIT_ARTIFACT_STORE=nfs",
                    hint=f"set {env} in {config.env_file} (or: mlops-kit init --force --nfs-server S --nfs-export P)",
                )
        if not config.nfs_export.startswith("/"):
            raise ConfigError(
                f"MLOPS_KIT_NFS_EXPORT={config.nfs_export!r} must be an absolute path on the NFS server",
                hint=f"fix MLOPS_KIT_NFS_EXPORT in {config.env_file}",
            )


NFS = NfsStore()
