"""The backup job image: restic, the PostgreSQL client and the kit's agent."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

BACKUP = ServiceSpec(
    name="backup",
    image_setting="MLOPS_KIT_BACKUP_IMAGE",
    dockerfile="docker/backup/Dockerfile",
    healthcheck="",
    description="backup and restore jobs (restic, pg_dump, manifest agent)",
    long_running=False,
)

#: Where the job container sees things (see the backup service in compose.yaml).
ARTIFACTS_MOUNT = "/data/artifacts"
STAGING_MOUNT = "/staging"
REPOSITORY_MOUNT = "/repository"
OFFSITE_MOUNT = "/offsite"
AGENT = "kit-backup-agent"
#: Where restore mounts its work folder and the fresh artifacts volume.
RESTORE_ROOT = "/restore"
RESTORE_STAGING_MOUNT = f"{RESTORE_ROOT}/staging"
RESTORE_ARTIFACTS_MOUNT = f"{RESTORE_ROOT}/data/artifacts"
#: Where `artifacts migrate` mounts the volume it copies from or into.
MIGRATE_VOLUME_MOUNT = "/migrate/volume"
#: Compose mounts each secret file of the stack here (compose.yaml `secrets:`).
SECRETS_MOUNT = "/run/secrets"
#: The repository key as the job sees it.
RESTIC_PASSWORD_FILE = f"{SECRETS_MOUNT}/restic_password"
