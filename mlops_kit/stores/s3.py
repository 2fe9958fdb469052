"""s3 mode: artifacts in the operator's bucket (AWS or any S3 server), MLflow proxying or presigning.

The keys are the operator's (`init --s3-credentials-stdin`, or the secret files); the
bucket is not the stack's, so `down --volumes` never deletes from it. Restore and
migrate write into a fresh key prefix, never over the one in use.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_kit.config.secrets import S3_SECRET_FILES, read_s3_secret
from mlops_kit.stores.base import ArtifactStore, fresh_prefix

if TYPE_CHECKING:
    from mlops_kit.config.loader import KitConfig

logger = logging.getLogger(__name__)

OVERLAY = Path("docker/compose/artifacts-s3.yaml")
#: MLOPS_KIT_S3_NETWORK set: MLflow joins that existing Docker network to reach the store.
NETWORK_OVERLAY = Path("docker/compose/s3-network.yaml")


class BucketStore(ArtifactStore):
    """What the bucket modes share: the S3 overlay, keys, a key prefix as the location."""

    in_bucket = True
    secret_files = S3_SECRET_FILES
    location_settings = ("MLOPS_KIT_S3_PREFIX",)
    switch_settings = (
        "MLOPS_KIT_S3_ENDPOINT_URL",
        "MLOPS_KIT_S3_BUCKET",
        "MLOPS_KIT_S3_REGION",
        "MLOPS_KIT_S3_ADDRESSING",
        "MLOPS_KIT_S3_NETWORK",
    )

    def overlays(self, s3_network: str = "") -> tuple[Path, ...]:
        return (OVERLAY, NETWORK_OVERLAY) if s3_network else (OVERLAY,)

    def endpoint(self, config: KitConfig) -> str:
        return config.s3_endpoint_url

    def destination(self, config: KitConfig) -> str:
        # kit-s3:// makes MLflow proxy every transfer; s3:// lets clients use presigned URLs.
        scheme = "s3" if config.s3_presigned == "true" else "kit-s3"
        return f"{scheme}://{config.s3_bucket}/{config.s3_prefix}".rstrip("/")

    def describe(self, config: KitConfig) -> str:
        return f"{self.name} s3://{config.s3_bucket}/{config.s3_prefix}"

    def relocated(self, config: KitConfig, generation: str) -> dict[str, Any]:
        return {"s3_prefix": fresh_prefix(config.s3_prefix, generation)}

    def secret_paths(self, config: KitConfig) -> list[Path]:
        keys = [config.secrets_path / name for name in self.secret_files]
        return keys + ([config.s3_ca_file] if config.s3_ca_file else [])

    def read_secrets(self, secrets_path: Path) -> None:
        for name in self.secret_files:
            read_s3_secret(secrets_path, name)


class S3Store(BucketStore):
    """The operator's bucket (AWS or any S3 server), reached with the operator's keys."""

    name = "s3"

    def validate(self, config: KitConfig) -> None:
        if config.s3_endpoint_url.startswith("http://") and config.s3_network == "":
            logger.warning(
                "MLOPS_KIT_S3_ENDPOINT_URL=%s is plain HTTP: keys are signed, but artifacts cross the network "
                "unencrypted",
                config.s3_endpoint_url,
            )

    def kept_on_delete(self, config: KitConfig) -> str:
        return f"the artifacts in s3://{config.s3_bucket}/{config.s3_prefix} are kept (an external bucket)"


S3 = S3Store()
