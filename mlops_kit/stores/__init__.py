"""The artifact store modes, one module each: volume, nfs, s3, minio."""

from __future__ import annotations

from mlops_kit.stores.base import ArtifactStore, fresh_prefix
from mlops_kit.stores.minio import MINIO_STORE
from mlops_kit.stores.nfs import NFS
from mlops_kit.stores.s3 import S3
from mlops_kit.stores.volume import VOLUME

#: Every mode by its MLOPS_KIT_ARTIFACT_STORE value.
STORES: dict[str, ArtifactStore] = {store.name: store for store in (VOLUME, NFS, MINIO_STORE, S3)}


def store_named(name: str) -> ArtifactStore:
    """The mode called ``name`` (validated by the settings table before it gets here)."""
    return STORES[name]


__all__ = ["STORES", "ArtifactStore", "fresh_prefix", "store_named"]
