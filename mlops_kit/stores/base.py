"""What every artifact store mode declares. The rest of the kit asks the mode, never tests its name.

A mode says which Compose overlays it adds to `compose.yaml`, which secret files and
extra services it needs, which `.env` values it fixes, how a fresh location for a
restore or a migration is named, what it checks before the stack starts, and how it
is described to people. The job that checks a bucket before MLflow starts lives in
:mod:`mlops_kit.stores.check` (it drives Compose, which this module must not import).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_kit.services.base import ServiceSpec

if TYPE_CHECKING:
    from mlops_kit.config.loader import KitConfig

#: Where MLflow keeps artifacts in the volume modes (the artifacts volume's mount point).
VOLUME_DESTINATION = "/mlflow/artifacts"
#: The suffix restore (-r<time>) or migrate (-m<time>) adds to a location's name.
_GENERATION = re.compile(r"-[mr]\d{14}$")


def fresh_prefix(prefix: str, generation: str) -> str:
    """A new key prefix for ``generation`` (r/m + time), replacing the generation ``prefix`` already has."""
    return f"{_GENERATION.sub('', prefix)}-{generation}".lstrip("-")


class ArtifactStore:
    """A store mode. Subclasses override what differs; the defaults describe a Docker volume."""

    #: The value of MLOPS_KIT_ARTIFACT_STORE.
    name = ""
    #: Artifacts live in a bucket reached through the S3 API (not in a volume).
    in_bucket = False
    #: The kit creates the bucket (its own MinIO) instead of expecting the operator's.
    creates_bucket = False
    #: Services only this mode runs (their images are built like the others).
    extra_services: tuple[ServiceSpec, ...] = ()
    #: Secret files this mode reads (besides the kit's own).
    secret_files: tuple[str, ...] = ()
    #: The settings that name where the artifacts are (what restore and migrate switch).
    location_settings: tuple[str, ...] = ("MLOPS_KIT_ARTIFACTS_VOLUME",)
    #: The settings a migration to this mode writes into `.env`, besides the location.
    switch_settings: tuple[str, ...] = ()

    def overlays(self, s3_network: str = "") -> tuple[Path, ...]:
        """Compose files (relative to the kit's folder) this mode adds after compose.yaml, in order."""
        return ()

    def fixed_env(self) -> dict[str, str]:
        """`.env` values this mode fixes whatever the operator chose."""
        return {}

    def endpoint(self, config: KitConfig) -> str:
        """The S3 endpoint MLflow and the jobs use ("" for volume modes)."""
        return ""

    def destination(self, config: KitConfig) -> str:
        """MLflow's --artifacts-destination."""
        return VOLUME_DESTINATION

    def describe(self, config: KitConfig) -> str:
        """Where this stack keeps its artifacts, for people."""
        return f"{self.name} volume {config.artifacts_volume}"

    def relocated(self, config: KitConfig, generation: str) -> dict[str, Any]:
        """The config fields of a fresh location for ``generation`` (never the one in use)."""
        return {"artifacts_volume_name": f"{config.project_name}_artifacts-{generation}"}

    def volume_driver_opts(self, config: KitConfig) -> dict[str, str]:
        """Driver options of a fresh artifacts volume: what compose.yaml would create."""
        return {}

    def secret_paths(self, config: KitConfig) -> list[Path]:
        """Files MLflow reads at start for this mode (a change must recreate its container)."""
        return []

    def read_secrets(self, secrets_path: Path) -> None:
        """Validate (and mask from here on) this mode's secret files; raise ConfigError naming the file."""

    def prepare(self, secrets_path: Path) -> tuple[Path, ...]:
        """Create what this mode needs on the host before `up` (files it generated)."""
        return ()

    def validate(self, config: KitConfig) -> None:
        """Raise ConfigError (naming the variable) when this mode's settings do not fit together."""

    def kept_on_delete(self, config: KitConfig) -> str:
        """What `down --volumes` leaves in place on purpose ("" when everything goes)."""
        return ""
