"""`mlops-kit backup`: one consistent, encrypted, deduplicated backup set of the stack.

Order matters: the database is dumped first (one snapshot: the dump, row counts and
alembic revision agree), then the artifacts are read. Artifacts are immutable once
written, so every artifact a dumped run refers to is already on disk when they are
read. restic stores the set (dump + manifest + artifacts) as one snapshot: a failed
backup creates no snapshot, so it never replaces the last good one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_kit import MLFLOW_VERSION, __version__
from mlops_kit.compose import ComposeProject
from mlops_kit.config import KitConfig
from mlops_kit.envfile import ensure_secret_files
from mlops_kit.errors import BackupError, BackupLockedError, CommandError
from mlops_kit.services.backup import AGENT, ARTIFACTS_MOUNT, OFFSITE_MOUNT, STAGING_MOUNT
from mlops_kit.services.mlflow import server_version
from mlops_kit.services.postgres import DATABASES
from mlops_kit.stack import require_running
from mlops_kit.users import admin_access

logger = logging.getLogger(__name__)

SNAPSHOT_TAG = "mlops-kit"
STAGING_SET = "current"
LAST_SUCCESS = "last-success.json"
PREVIOUS_MANIFEST = "previous-manifest.json"
#: s3/minio modes: the bucket's local mirror (under BACKUP_DIR) and what it last fetched.
BUCKET_MIRROR = "bucket-mirror"
BUCKET_INDEX = "bucket-index.json"
_WRONG_KEY = ("wrong password", "no key found")
# What `restic check` prints when the repository itself is damaged.
_DAMAGE = ("contains errors", "ciphertext verification failed", "does not match", "pack file", "invalid data returned")


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


# ---- locking ---------------------------------------------------------------------------


@contextmanager
def backup_lock(config: KitConfig, purpose: str) -> Iterator[None]:
    """Exclusive per-stack lock for backup, restore and verify (released if the process dies)."""
    config.backup_path.mkdir(parents=True, exist_ok=True)
    path = config.backup_path / ".lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BackupLockedError(
                f"cannot {purpose}: {holder} holds the backup lock of stack {config.project_name} ({path})",
                hint="wait for it to finish and try again",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{purpose} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        yield
    finally:
        handle.close()


# ---- restic through the backup job container ------------------------------------------


class Repository:
    """The stack's restic repository, driven through `docker compose run backup restic ...`."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.config = project.config

    def restic(self, *args: str, mounts: tuple[str, ...] = (), check: bool = True) -> str:
        try:
            result = self.project.run_job("backup", ["restic", *args], mounts=mounts, check=check)
        except CommandError as error:
            raise self._explain(error) from error
        return result.stdout

    def _explain(self, error: CommandError) -> BackupError:
        text = f"{error.stderr}\n{error.stdout}".lower()
        key = self.config.secrets_path / "restic_password"
        if any(marker in text for marker in _WRONG_KEY):
            return BackupError(
                f"the key {key} does not open the backup repository {self.config.backup_path / 'repository'}",
                hint="put back the key this repository was created with (it is never stored in the repository)",
            )
        if "unable to open config file" in text or "is there a repository at the following location" in text:
            return BackupError(
                f"there is no backup repository at {self.config.backup_path / 'repository'}",
                hint="make a backup first (mlops-kit backup), or set MLOPS_KIT_BACKUP_DIR to the folder that holds it",
            )
        if "already locked" in text:
            return BackupError(
                "the backup repository is locked by another restic process",
                hint="if no backup or restore is running (a killed one leaves its lock), remove the stale lock: "
                "docker compose run --rm backup restic unlock",
            )
        restic_line = _restic_message(error.stderr) or error.message
        return BackupError(f"restic failed: {restic_line}", hint="run again with -vv to see the full output")

    def exists(self) -> bool:
        return (self.config.backup_path / "repository" / "config").is_file()

    def ensure_initialized(self) -> bool:
        """Create the repository on first use; True if it was created."""
        if self.exists():
            return False
        self.restic("init")
        return True

    def snapshots(self) -> list[dict[str, Any]]:
        output = self.restic("snapshots", "--json", "--tag", SNAPSHOT_TAG)
        return list(json.loads(_last_json_line(output, "[")))

    def latest(self) -> dict[str, Any]:
        snapshots = self.snapshots()
        if not snapshots:
            raise BackupError("the backup repository holds no backup set yet", hint="make one: mlops-kit backup")
        return max(snapshots, key=lambda s: _parse_time(str(s["time"])))

    def find(self, snapshot: str) -> dict[str, Any]:
        if snapshot in ("", "latest"):
            return self.latest()
        matches = [c for c in self.snapshots() if str(c["id"]).startswith(snapshot) or set_id_of(c) == snapshot]
        if len(matches) > 1:
            raise BackupError(f"{snapshot!r} matches {len(matches)} backup sets", hint="give more of the id")
        if matches:
            return matches[0]
        raise BackupError(f"no backup set {snapshot!r} in the repository", hint="list them: mlops-kit backup list")

    def check(self, *, read_data_subset: str | None = None) -> None:
        args = ["check"]
        if read_data_subset:
            args.append(f"--read-data-subset={read_data_subset}")
        try:
            self.restic(*args)
        except BackupError as error:
            # Only restic's own verdict means damage; a lock or a Docker error does not.
            cause = error.__cause__
            said = f"{cause.stderr}\n{cause.stdout}".lower() if isinstance(cause, CommandError) else ""
            if not any(marker in said for marker in _DAMAGE):
                raise
            raise BackupError(
                "the backup repository failed its integrity check (restic check)",
                hint="do not prune it; restore from the offsite copy, or run restic check to see the damage",
            ) from error

    def size_bytes(self) -> int:
        output = self.restic("stats", "--mode", "raw-data", "--json")
        return int(json.loads(_last_json_line(output, "{")).get("total_size", 0))


def _restic_message(stderr: str) -> str:
    """restic's own last error line (Fatal: ...), without Compose's noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else ""


def _last_json_line(output: str, opener: str) -> str:
    for line in reversed(output.strip().splitlines()):
        if line.startswith(opener):
            return line
    raise BackupError("restic printed no JSON result", hint="run again with -vv to see its output")


def set_id_of(snapshot: dict[str, Any]) -> str:
    for tag in snapshot.get("tags") or []:
        if str(tag).startswith("set:"):
            return str(tag)[4:]
    return ""


# ---- the backup --------------------------------------------------------------------


def run_backup(project: ComposeProject, *, on_step: Callable[[str], None] = lambda _s: None) -> BackupSummary:
    """Make one backup set: lock, dump, hash, store, apply retention, check, copy offsite."""
    config = project.config
    with backup_lock(config, "back up"):
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
                f"{STAGING_MOUNT}/{STAGING_SET}",
                ARTIFACTS_MOUNT,
            )
            stored = json.loads(_last_json_line(output, "{"))

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
        return summary


def run_agent(project: ComposeProject, command: list[str], what: str, mounts: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the agent in a backup job container and return its JSON answer."""
    try:
        result = project.run_job("backup", command, mounts=mounts)
    except CommandError as error:
        detail = _agent_error(error.stdout) or error.message
        raise BackupError(f"{what} failed: {detail}", hint="see the job output with -vv") from error
    answer: dict[str, Any] = json.loads(_last_json_line(result.stdout, "{"))
    return answer


def _agent_error(stdout: str) -> str:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return str(json.loads(line).get("error") or "; ".join(json.loads(line).get("problems") or []))
            except json.JSONDecodeError:
                return ""
    return ""


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
    key = "/run/secrets/restic_password"
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
                "/repository",
                "--from-password-file",
                key,
                "--copy-chunker-params",
                mounts=mounts,
            )
    repository.restic(
        *common,
        "copy",
        "--from-repo",
        "/repository",
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
        stamp = _parse_time(str(snapshot["time"]))
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


_RESTIC_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def _parse_time(text: str) -> float:
    """restic's RFC 3339 time (nanoseconds; Python 3.10 parses microseconds at most)."""
    match = _RESTIC_TIME.match(text.strip())
    if not match:
        return time.time()
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}").timestamp()


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
