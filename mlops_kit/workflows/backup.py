"""`mlops-kit backup`: one consistent, encrypted, deduplicated backup set of the stack.

Order matters: the database is dumped first (one snapshot: the dump, row counts and
alembic revision agree), then the artifacts are read. Artifacts are immutable once
written, so every artifact a dumped run refers to is already on disk when they are
read. restic stores the set (dump + manifest + artifacts) as one snapshot: a failed
backup creates no snapshot, so it never replaces the last good one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlops_kit import MLFLOW_VERSION, __version__
from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import ensure_secret_files
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import run_json_job
from mlops_kit.errors import BackupError
from mlops_kit.services.backup import (
    AGENT,
    ARTIFACTS_MOUNT,
    BACKUP,
    OFFSITE_MOUNT,
    REPOSITORY_MOUNT,
    RESTIC_PASSWORD_FILE,
    STAGING_MOUNT,
)
from mlops_kit.services.mlflow import server_version
from mlops_kit.services.postgres import DATABASES
from mlops_kit.workflows import records
from mlops_kit.workflows.lifecycle import require_running
from mlops_kit.workflows.lock import backup_lock
from mlops_kit.workflows.restic import SNAPSHOT_TAG, Repository, json_answer, parse_time, set_id_of
from mlops_kit.workflows.users import admin_access

__all__ = ["BackupSummary", "backup_lock", "last_success", "list_backups", "run_agent", "run_backup", "set_id_of"]

logger = logging.getLogger(__name__)

STAGING_SET = "current"
LAST_SUCCESS = "last-success.json"
PREVIOUS_MANIFEST = "previous-manifest.json"
#: s3/minio modes: the bucket's local mirror (under BACKUP_DIR) and what it last fetched.
BUCKET_MIRROR = "bucket-mirror"
BUCKET_INDEX = "bucket-index.json"
#: What a failed backup's record carries over from the last good one.
BACKUP_RECORD_KEPT = ("last_success_at", "size_bytes", "repository_bytes", "seconds")


@dataclass(frozen=True)
class BackupSummary:
    """What one backup did; printed as the summary line and kept as last-success.json."""

    snapshot_id: str
    set_id: str
    started_at: float
    finished_at: float
    files_new: int
    files_changed: int
    data_added_bytes: int
    artifact_files: int
    artifact_bytes: int
    database_rows: int
    dump_bytes: int
    repository_bytes: int
    offsite: str

    @property
    def seconds(self) -> float:
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class BackupSet:
    """One snapshot in the repository, as `backup list` shows it."""

    snapshot_id: str
    set_id: str
    time: str
    age_seconds: float
    size_bytes: int
    added_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- the backup --------------------------------------------------------------------


def run_backup(
    project: ComposeProject,
    *,
    on_step: Callable[[str], None] = lambda _s: None,
    tags: tuple[str, ...] = (),
    take_lock: bool = True,
) -> BackupSummary:
    """Make one backup set: lock, dump, hash, store, apply retention, check, copy offsite.

    ``tags`` are added to the snapshot (an upgrade's "pre-upgrade"); ``take_lock=False``
    when the caller already holds the stack's lock.
    """
    config = project.config
    # A backup that found the lock taken did not fail: it did not start (and says so, exit 8).
    with (
        backup_lock(config, "back up") if take_lock else contextlib.nullcontext(),
        records.failure_recorded(config, records.BACKUP, keep=BACKUP_RECORD_KEPT),
    ):
        started = time.time()
        on_step("Checking the stack")
        require_running(project)
        ensure_secret_files(config.secrets_path)
        for sub in ("repository", "staging", "cache", *((BUCKET_MIRROR,) if config.uses_bucket else ())):
            (config.backup_path / sub).mkdir(parents=True, exist_ok=True)
        repository = Repository(project)
        if repository.ensure_initialized():
            logger.info("created the backup repository in %s", config.backup_path / "repository")

        staging = config.backup_path / "staging"
        current = staging / STAGING_SET
        shutil.rmtree(current, ignore_errors=True)
        set_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)) + "-" + uuid.uuid4().hex[:6]
        meta = {
            "set_id": set_id,
            "project": config.project_name,
            "kit_version": __version__,
            "mlflow_version": server_version(admin_access(config)) or MLFLOW_VERSION,
            "started_at": started,
        }
        try:
            on_step("Dumping PostgreSQL (one snapshot) and hashing artifacts")
            prepare = [
                AGENT,
                "prepare",
                "--out",
                f"{STAGING_MOUNT}/{STAGING_SET}",
                "--artifacts",
                ARTIFACTS_MOUNT,
                "--previous",
                f"{STAGING_MOUNT}/{PREVIOUS_MANIFEST}",
                "--meta",
                json.dumps(meta),
            ]
            for database in DATABASES:
                prepare += ["--database", database]
            if config.uses_bucket:
                # The bucket's prefix is mirrored into BACKUP_DIR/bucket-mirror (the job's
                # ARTIFACTS_MOUNT in these modes) after the dump, then stored like a volume.
                prepare += ["--bucket-prefix", config.s3_prefix, "--bucket-index", f"{STAGING_MOUNT}/{BUCKET_INDEX}"]
            prepared = run_agent(project, prepare, "preparing the backup set")

            on_step("Storing the set in the repository (encrypted, deduplicated)")
            output = repository.restic(
                "backup",
                "--json",
                "--quiet",
                "--host",
                config.project_name,
                "--tag",
                SNAPSHOT_TAG,
                "--tag",
                f"set:{set_id}",
                *(arg for tag in tags for arg in ("--tag", tag)),
                f"{STAGING_MOUNT}/{STAGING_SET}",
                ARTIFACTS_MOUNT,
            )
            stored = json_answer(output, "{")

            on_step("Applying retention and checking the repository")
            repository.restic(
                "forget",
                "--prune",
                "--host",
                config.project_name,
                "--tag",
                SNAPSHOT_TAG,
                "--keep-daily",
                str(config.backup_keep_daily),
                "--keep-weekly",
                str(config.backup_keep_weekly),
                "--keep-monthly",
                str(config.backup_keep_monthly),
                "--keep-last",
                "1",
                # The set an upgrade made first stays until the operator removes it.
                "--keep-tag",
                "pre-upgrade",
            )
            repository.check()
            offsite = ""
            if config.backup_offsite:
                on_step("Copying the set to the offsite repository")
                offsite = copy_offsite(repository)
            repository_bytes = repository.size_bytes()
            shutil.copyfile(current / "manifest.json", staging / PREVIOUS_MANIFEST)
        finally:
            shutil.rmtree(current, ignore_errors=True)

        summary = BackupSummary(
            snapshot_id=str(stored.get("snapshot_id", "")),
            set_id=set_id,
            started_at=started,
            finished_at=time.time(),
            files_new=int(stored.get("files_new", 0)),
            files_changed=int(stored.get("files_changed", 0)),
            data_added_bytes=int(stored.get("data_added", 0)),
            artifact_files=int(prepared.get("artifact_files", 0)),
            artifact_bytes=int(prepared.get("artifact_bytes", 0)),
            database_rows=sum(int(d["rows"]) for d in prepared.get("databases", {}).values()),
            dump_bytes=sum(int(d["dump_size"]) for d in prepared.get("databases", {}).values()),
            repository_bytes=repository_bytes,
            offsite=offsite,
        )
        _write_json(config.backup_path / LAST_SUCCESS, summary.to_dict())
        records.write_record(
            config,
            records.BACKUP,
            ok=True,
            last_success_at=round(summary.finished_at, 3),
            size_bytes=summary.artifact_bytes + summary.dump_bytes,
            repository_bytes=summary.repository_bytes,
            seconds=round(summary.seconds, 1),
        )
        return summary


def run_agent(project: ComposeProject, command: list[str], what: str, mounts: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the agent in a backup job container and return its JSON answer (BackupError saying why not)."""
    return run_json_job(project, BACKUP.name, command, what=what, mounts=mounts, error=BackupError)


def copy_offsite(repository: Repository) -> str:
    """Copy new snapshots to MLOPS_KIT_BACKUP_OFFSITE (a folder here, or a restic s3:/sftp: URL)."""
    config = repository.config
    target = config.backup_offsite
    mounts: tuple[str, ...] = ()
    if target.startswith("/"):
        Path(target).mkdir(parents=True, exist_ok=True)
        mounts = (f"{target}:{OFFSITE_MOUNT}",)
        target_in_job = OFFSITE_MOUNT
    else:
        target_in_job = target
    key = RESTIC_PASSWORD_FILE
    common = ["--repo", target_in_job, "--password-file", key]
    if not (target.startswith("/") and (Path(target) / "config").is_file()):
        init = repository.restic(
            *common,
            "cat",
            "config",
            mounts=mounts,
            check=False,
        )
        if "chunker_polynomial" not in init:
            repository.restic(
                *common,
                "init",
                "--from-repo",
                REPOSITORY_MOUNT,
                "--from-password-file",
                key,
                "--copy-chunker-params",
                mounts=mounts,
            )
    repository.restic(
        *common,
        "copy",
        "--from-repo",
        REPOSITORY_MOUNT,
        "--from-password-file",
        key,
        "--host",
        config.project_name,
        "--tag",
        SNAPSHOT_TAG,
        mounts=mounts,
    )
    return target


# ---- listing and status ------------------------------------------------------------------


def list_backups(project: ComposeProject) -> list[BackupSet]:
    repository = Repository(project)
    if not repository.exists():
        return []
    now = time.time()
    sets = []
    for snapshot in sorted(repository.snapshots(), key=lambda s: str(s["time"])):
        summary = snapshot.get("summary") or {}
        stamp = parse_time(str(snapshot["time"]))
        sets.append(
            BackupSet(
                snapshot_id=str(snapshot.get("short_id") or snapshot["id"])[:8],
                set_id=set_id_of(snapshot),
                time=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)),
                age_seconds=max(0.0, now - stamp),
                size_bytes=int(summary.get("total_bytes_processed", 0)),
                added_bytes=int(summary.get("data_added", 0)),
            )
        )
    return sets


def last_success(config: KitConfig) -> dict[str, Any] | None:
    """The summary of the last good backup, or None."""
    path = config.backup_path / LAST_SUCCESS
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
