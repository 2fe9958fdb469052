"""minio mode: the kit's own MinIO (built from source) on the internal storage network.

Like the s3 mode, plus the MinIO service; the kit generates MinIO's root keys, and
MinIO's data is a volume of the stack (so `down --volumes` removes it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops_kit.config.secrets import ensure_generated_s3_keys, read_s3_secret
from mlops_kit.services.minio import MINIO
from mlops_kit.stores.s3 import BucketStore

if TYPE_CHECKING:
    from mlops_kit.config.loader import KitConfig

OVERLAY = Path("docker/compose/artifacts-minio.yaml")
#: Where MLflow reaches the kit's own MinIO, on the internal storage network.
ENDPOINT = "http://minio:9000"


class MinioStore(BucketStore):
    """The kit's MinIO: a bucket the stack owns."""

    name = "minio"
    extra_services = (MINIO,)
    creates_bucket = True

    def overlays(self, s3_network: str = "") -> tuple[Path, ...]:
        s3_overlays = super().overlays(s3_network)
        return (s3_overlays[0], OVERLAY, *s3_overlays[1:])

    def fixed_env(self) -> dict[str, str]:
        return {"MLOPS_KIT_S3_ENDPOINT_URL": ENDPOINT}

    def endpoint(self, config: KitConfig) -> str:
        return ENDPOINT

    def read_secrets(self, secrets_path: Path) -> None:
        # `up` generates missing keys (MinIO starts with whatever they are).
        for name in self.secret_files:
            if (secrets_path / name).exists():
                read_s3_secret(secrets_path, name)

    def prepare(self, secrets_path: Path) -> tuple[Path, ...]:
        return ensure_generated_s3_keys(secrets_path)


MINIO_STORE = MinioStore()
