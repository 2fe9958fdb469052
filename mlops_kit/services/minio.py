"""MinIO (minio artifact mode): the kit's own S3 server, built from source, internal only."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

MINIO = ServiceSpec(
    name="minio",
    image_setting="MLOPS_KIT_MINIO_IMAGE",
    dockerfile="docker/minio/Dockerfile",
    healthcheck="minio-healthcheck",
    description="MinIO object store (minio mode; community release built from source)",
    build_hint=(
        "the build downloads the Go toolchain, MinIO's source and its Go modules: point "
        "MLOPS_KIT_GO_DOWNLOAD_URL, MLOPS_KIT_MINIO_GIT_URL and MLOPS_KIT_GOPROXY at mirrors you can reach, "
        "or set MLOPS_KIT_MINIO_IMAGE to an image you have (docs/minio.md)"
    ),
)
