"""volume mode: artifacts in the named Docker volume `<project>_artifacts`, served through MLflow's proxy."""

from __future__ import annotations

from mlops_kit.stores.base import ArtifactStore


class VolumeStore(ArtifactStore):
    """The default: a local Docker volume, backed up with the database."""

    name = "volume"


VOLUME = VolumeStore()
