"""MinIO (minio artifact mode): the kit's own S3 server, built from source, internal only."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

MINIO = ServiceSpec(
    name="minio",
    image_setting="MLOPS_KIT_MINIO_IMAGE",
    dockerfile="docker/minio/Dockerfile",
    healthcheck="minio-healthcheck",
    description="MinIO object store (minio mode; community release built from source)",
)
