"""`mlops-kit restore` and `mlops-kit backup verify` (the restore drill).

A restore never touches the running stack until the set has been proven whole:
the repository passes `restic check`, the set is restored into fresh volumes and
every checksum in its manifest matches. Only then is the stack switched over to
the fresh volumes (database loaded, row counts and alembic revision compared,
schema migrated with `mlflow db upgrade`). If anything fails after the switch
began, the stack is switched back to its previous volumes, which were never
written to. The previous volumes are kept; the summary names them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from mlops_kit import MLFLOW_VERSION, __version__
from mlops_kit.config.envfile import update_env_file
from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import write_private_file
from mlops_kit.config.settings import settings_values
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import BackupError, KitError
from mlops_kit.services.backup import (
    AGENT,
    RESTORE_ARTIFACTS_MOUNT,
    RESTORE_ROOT,
    RESTORE_STAGING_MOUNT,
    STAGING_MOUNT,
)
from mlops_kit.services.mlflow import BACKEND_STORE_URI, KEK_FILE, RESET_ADMIN, ServerAccess
from mlops_kit.stores.check import require_store
from mlops_kit.workflows import records
from mlops_kit.workflows.backup import STAGING_SET, run_agent
from mlops_kit.workflows.lock import backup_lock
from mlops_kit.workflows.restic import Repository, set_id_of
from mlops_kit.workflows.users import admin_access

logger = logging.getLogger(__name__)

WAIT_TIMEOUT = 600
#: What `upgrade --rollback` goes back to (written by workflows/upgrade.py; a restore ends it).
UPGRADE_STATE_FILE = ".mlops-kit-upgrade.json"
Step = Callable[[str], None]


@dataclass(frozen=True)
class RestoreSummary:
    snapshot_id: str
    set_id: str
    seconds: float
    database_rows: int
    artifact_files: int
    backup_mlflow_version: str
    postgres_volume: str
    artifacts_volume: str
    previous_volumes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DrillReport:
    snapshot_id: str
    set_id: str
    rto_seconds: float
    database_rows: int
    alembic_revision: str
    artifacts_sampled: int
    artifacts_total: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Restored:
    """A set restored into fresh volumes and verified, not yet switched to."""

    snapshot: dict[str, Any]
    manifest: dict[str, Any]
    work: Path
    job_set_dir: str
    postgres_volume: str
    artifacts_volume: str
    #: s3/minio modes: the fresh prefix the artifacts were uploaded to ("" otherwise).
    s3_prefix: str = ""

    @property
    def fresh_volumes(self) -> list[str]:
        """The volumes this restore made (in bucket modes the artifacts stay in the stack's volume)."""
        return [self.postgres_volume] if self.s3_prefix else [self.postgres_volume, self.artifacts_volume]

    def artifacts_location(self, config: KitConfig) -> str:
        return f"s3://{config.s3_bucket}/{self.s3_prefix}" if self.s3_prefix else self.artifacts_volume


def restore_backup(
    project: ComposeProject, snapshot: str = "latest", *, on_step: Step = lambda _s: None
) -> RestoreSummary:
    """Restore ``snapshot`` (default: the latest set) into the stack, as described above."""
    config = project.config
    started = time.monotonic()
    with backup_lock(config, "restore"):
        restored = _restore_and_verify(project, snapshot, on_step)
        previous = (
            (config.postgres_volume,) if config.uses_bucket else (config.postgres_volume, config.artifacts_volume)
        )
        was_running = bool(project.ps())
        try:
            _switch(project, restored, on_step, rollback_to_previous=was_running, persist=True)
        finally:
            shutil.rmtree(restored.work, ignore_errors=True)
    return RestoreSummary(
        snapshot_id=str(restored.snapshot["id"])[:8],
        set_id=set_id_of(restored.snapshot),
        seconds=time.monotonic() - started,
        database_rows=_rows(restored.manifest),
        artifact_files=int(restored.manifest["artifacts"]["file_count"]),
        backup_mlflow_version=str(restored.manifest.get("mlflow_version", "")),
        postgres_volume=restored.postgres_volume,
        artifacts_volume=restored.artifacts_location(config),
        previous_volumes=tuple(v for v in previous if project.volume_exists(v)),
    )


def drill(
    project: ComposeProject, *, sample: int = 20, on_step: Step = lambda _s: None, take_lock: bool = True
) -> DrillReport:
    """Restore the latest set into a throwaway stack, check it through the MLflow API, remove it.

    ``take_lock=False`` when the caller already holds the stack's lock (an upgrade).
    """
    config = project.config
    throwaway = ComposeProject(
        replace(
            config,
            project_name=f"{config.project_name}-drill-{uuid.uuid4().hex[:6]}",
            port=_free_port(),
            bind_address="127.0.0.1",
            postgres_volume_name="",
            artifacts_volume_name="",
            # A second Prometheus and Alertmanager would send the real stack's alerts again.
            monitoring="false",
        ),
        project.runner,
    )
    if throwaway.volume_names() or throwaway.ps():
        raise BackupError(f"a project named {throwaway.config.project_name} already exists", hint="try again")
    started = time.monotonic()
    with (
        backup_lock(config, "verify backups") if take_lock else contextlib.nullcontext(),
        records.failure_recorded(config, records.DRILL, keep=("rto_seconds",)),
    ):
        restored: _Restored | None = None
        try:
            restored = _restore_and_verify(throwaway, "latest", on_step)
            _switch(throwaway, restored, on_step, rollback_to_previous=False, persist=False)
            on_step("Fetching sample artifacts through the MLflow API")
            files = restored.manifest["artifacts"]["files"]
            sampled = _check_artifacts_over_api(admin_access(throwaway.config), files, sample)
            rto = time.monotonic() - started
        finally:
            # Also after a failed phase 1: its jobs made the project's Compose volumes.
            on_step("Removing the throwaway stack")
            throwaway.down(volumes=True)
            kept = restored.fresh_volumes if restored else []
            throwaway.remove_volumes(list(dict.fromkeys([*kept, *throwaway.volume_names()])))
            if restored and restored.s3_prefix:
                run_agent(throwaway, [AGENT, "delete-prefix", "--prefix", restored.s3_prefix], "removing the copy")
            if restored:
                shutil.rmtree(restored.work, ignore_errors=True)
    records.write_record(config, records.DRILL, ok=True, rto_seconds=round(rto, 1))
    database = next(iter(restored.manifest["databases"].values()))
    return DrillReport(
        snapshot_id=str(restored.snapshot["id"])[:8],
        set_id=set_id_of(restored.snapshot),
        rto_seconds=rto,
        database_rows=_rows(restored.manifest),
        alembic_revision=str(database.get("alembic_revision")),
        artifacts_sampled=sampled,
        artifacts_total=len(files),
    )


# ---- the two phases --------------------------------------------------------------------


def _restore_and_verify(project: ComposeProject, snapshot: str, on_step: Step) -> _Restored:
    """Phase 1: nothing the stack uses is touched. Raises BackupError on any doubt."""
    config = project.config
    repository = Repository(project)
    if not repository.exists():
        raise BackupError(
            f"there is no backup repository at {config.backup_path / 'repository'}",
            hint="set MLOPS_KIT_BACKUP_DIR to the folder holding it (its repository/ subfolder)",
        )
    on_step("Checking the repository's integrity")
    repository.check()
    chosen = repository.find(snapshot)
    generation = time.strftime("r%Y%m%d%H%M%S")
    postgres_volume = f"{config.project_name}_postgres-data-{generation}"
    artifacts_volume = f"{config.project_name}_artifacts-{generation}"
    work = config.backup_path / "staging" / f"restore-{generation}"
    for volume in (postgres_volume, artifacts_volume):
        if project.volume_exists(volume):
            raise BackupError(f"volume {volume} already exists", hint="another restore just ran; try again")
    try:
        work.mkdir(parents=True)
        project.create_volume(postgres_volume, "postgres-data")
        project.create_volume(artifacts_volume, "artifacts", driver_opts=config.store.volume_driver_opts(config))
        on_step(f"Restoring set {set_id_of(chosen) or chosen['id'][:8]} into fresh volumes and verifying checksums")
        script = (
            f"restic restore {chosen['id']} --target {RESTORE_ROOT} "
            f"&& {AGENT} verify --set {RESTORE_STAGING_MOUNT}/{STAGING_SET} --artifacts {RESTORE_ARTIFACTS_MOUNT}"
        )
        try:
            answer = run_agent(
                project,
                ["sh", "-c", script],
                "restoring the backup set",
                mounts=(f"{work}:{RESTORE_STAGING_MOUNT}", f"{artifacts_volume}:{RESTORE_ARTIFACTS_MOUNT}"),
            )
        except BackupError as error:
            raise BackupError(
                f"backup set {set_id_of(chosen) or chosen['id'][:8]} cannot be restored: {error.message}",
                hint="the stack was not touched; try an older set (mlops-kit backup list) or the offsite copy",
            ) from error
        logger.info("verified %s artifact files", answer.get("artifacts_checked"))
        manifest: dict[str, Any] = json.loads((work / STAGING_SET / "manifest.json").read_text())
        _check_versions(manifest)
        s3_prefix = ""
        if config.uses_bucket:
            # Never over the stack's objects: into a fresh prefix, switched to in phase 2.
            s3_prefix = str(config.store.relocated(config, generation)["s3_prefix"])
            # minio mode: MinIO may be stopped, or new and empty after `down --volumes`
            # (its data went with the stack's volumes): start it and create the bucket first.
            on_step(f"Checking the artifact store ({config.artifact_store})")
            require_store(project, error=BackupError)
            on_step(f"Uploading the artifacts into s3://{config.s3_bucket}/{s3_prefix} (each read back)")
            run_agent(
                project,
                [AGENT, "upload", "--source", RESTORE_ARTIFACTS_MOUNT, "--prefix", s3_prefix],
                "uploading the artifacts",
                mounts=(f"{artifacts_volume}:{RESTORE_ARTIFACTS_MOUNT}:ro",),
            )
            project.remove_volumes([artifacts_volume])
            artifacts_volume = config.artifacts_volume
    except BaseException:
        project.remove_volumes(
            [postgres_volume]
            if artifacts_volume == config.artifacts_volume and config.uses_bucket
            else [postgres_volume, artifacts_volume]
        )
        shutil.rmtree(work, ignore_errors=True)
        raise
    return _Restored(
        chosen,
        manifest,
        work,
        f"{STAGING_MOUNT}/{work.name}/{STAGING_SET}",
        postgres_volume,
        artifacts_volume,
        s3_prefix,
    )


def _switch(
    project: ComposeProject, restored: _Restored, on_step: Step, *, rollback_to_previous: bool, persist: bool
) -> None:
    """Phase 2: point the stack at the fresh volumes; on any failure, back to the previous ones.

    With ``persist``, `.env` names the fresh volumes once the stack is healthy on them;
    that write is inside the protected part, so `.env` and the running stack agree.
    """
    config = project.config
    switched = ComposeProject(
        replace(
            config,
            postgres_volume_name=restored.postgres_volume,
            artifacts_volume_name=restored.artifacts_volume,
            s3_prefix=restored.s3_prefix or config.s3_prefix,
        ),
        project.runner,
    )
    # The settings a restore switches; each maps itself to its `.env` line, for the write and the way back.
    switched_settings = ("MLOPS_KIT_POSTGRES_VOLUME", *config.store.location_settings)
    previous = settings_values(config, switched_settings)
    previous_kek: str | None = None
    try:
        if persist:
            previous_kek = _adopt_set_passphrase(config, restored.work / STAGING_SET)
        on_step("Stopping the stack")
        project.down(volumes=False)
        on_step("Starting PostgreSQL on the fresh volume and loading the dump")
        switched.start_services(["postgres"], wait_timeout=WAIT_TIMEOUT)
        run_agent(switched, [AGENT, "load", "--set", restored.job_set_dir], "loading the database")
        on_step("Migrating the schema to this MLflow release (mlflow db upgrade)")
        switched.run_job("mlflow", ["mlflow", "db", "upgrade", BACKEND_STORE_URI])
        # The restored user database holds the admin password of the host the
        # backup came from; the kit logs in with this host's secret.
        on_step("Setting the kit's admin login to this host's password")
        switched.run_job("mlflow", [RESET_ADMIN])
        on_step("Starting the stack on the restored data")
        switched.up(wait_timeout=WAIT_TIMEOUT)
        if persist:
            update_env_file(
                config.env_file,
                settings_values(switched.config, switched_settings),
                added_by="mlops-kit restore",
            )
            # The last upgrade's way back led to the data this restore replaced.
            (config.project_dir / UPGRADE_STATE_FILE).unlink(missing_ok=True)
    except BaseException as error:  # Ctrl-C and OS errors too: never leave the stack half-switched
        on_step("Restore failed: switching back to the previous data")
        _rollback(
            project,
            switched,
            restored,
            previous,
            rollback_to_previous=rollback_to_previous,
            persist=persist,
            previous_kek=previous_kek,
        )
        if not isinstance(error, (KitError, OSError)):
            raise
        message = error.message if isinstance(error, KitError) else str(error)
        raise BackupError(
            f"restore failed ({message}); "
            + ("the stack runs on its previous data again" if rollback_to_previous else "nothing was changed"),
            hint="see: mlops-kit logs",
        ) from error


def _rollback(
    project: ComposeProject,
    switched: ComposeProject,
    restored: _Restored,
    previous: dict[str, str],
    *,
    rollback_to_previous: bool,
    persist: bool,
    previous_kek: str | None = None,
) -> None:
    """Each step on its own: one failing must not stop the next (above all, the restart)."""
    steps: list[tuple[str, Callable[[], object]]] = [
        ("stop the restored stack", lambda: switched.down(volumes=False)),
        (
            "remove the fresh volumes",
            lambda: switched.remove_volumes(restored.fresh_volumes),
        ),
    ]
    if persist:
        steps.append(
            ("put .env back", lambda: update_env_file(project.config.env_file, previous, added_by="mlops-kit restore"))
        )
    if previous_kek is not None:
        steps.append(
            ("put MLflow's key-encryption passphrase back", lambda: _put_back_passphrase(project, previous_kek))
        )
    if rollback_to_previous:
        steps.append(("start the stack on its previous data", lambda: project.up(wait_timeout=WAIT_TIMEOUT)))
    for what, step in steps:
        try:
            step()
        except Exception as exc:
            logger.error("rollback: could not %s: %s", what, exc)


def _adopt_set_passphrase(config: KitConfig, set_dir: Path) -> str | None:
    """Use the set's key-encryption passphrase, so MLflow decrypts the secrets of the restored database.

    Returns the passphrase it replaced (for the rollback), or None when nothing changed:
    the set carries none (made by an older kit) or the same one (this host's own backup).
    """
    carried = set_dir / KEK_FILE
    if not carried.is_file():
        return None
    ours = config.secrets_path / KEK_FILE
    previous = ours.read_text(encoding="utf-8") if ours.is_file() else ""
    wanted = carried.read_text(encoding="utf-8")
    if wanted == previous:
        return None
    if previous:
        # The kept previous volumes' secrets open only with it: keep it beside them.
        write_private_file(ours.with_name(f"{KEK_FILE}.before-{set_dir.parent.name}"), previous)
    write_private_file(ours, wanted)
    logger.info("restore: MLflow's key-encryption passphrase is now the backup set's (%s)", ours)
    return previous


def _put_back_passphrase(project: ComposeProject, previous: str) -> None:
    """Undo ``_adopt_set_passphrase``: "" means there was none before (`up` generates one)."""
    kek_file = project.config.secrets_path / KEK_FILE
    if previous:
        write_private_file(kek_file, previous)
    else:
        kek_file.unlink(missing_ok=True)


def _check_versions(manifest: dict[str, Any]) -> None:
    """Refuse sets from a newer kit or MLflow; older MLflow sets are migrated after loading."""
    for field, current, what in (
        ("kit_version", __version__, "mlops-kit"),
        ("mlflow_version", MLFLOW_VERSION, "MLflow"),
    ):
        made_with = str(manifest.get(field, "0"))
        try:
            newer = Version(made_with) > Version(current)
        except InvalidVersion:
            raise BackupError(f"the backup set names an unreadable {what} version {made_with!r}") from None
        if newer:
            raise BackupError(
                f"the backup set was made by {what} {made_with}, newer than this {what} {current}",
                hint=f"upgrade this host's {what} first; a restore never downgrades a schema",
            )


def _check_artifacts_over_api(access: ServerAccess, files: dict[str, dict[str, Any]], sample: int) -> int:
    """Download a sample (always including the largest file) through the HTTPS proxy; compare sha256."""
    if not files:
        return 0
    names = sorted(files)
    largest = max(names, key=lambda n: int(files[n]["size"]))
    chosen = {largest, *random.sample(names, min(sample, len(names)) - 1)} if len(names) > 1 else {largest}
    session = access.session()
    for name in chosen:
        digest = hashlib.sha256()
        url = f"{access.base_url}/api/2.0/mlflow-artifacts/artifacts/{name}"
        with session.get(url, stream=True, timeout=120) as response:
            if response.status_code != 200:
                raise BackupError(f"restore drill: artifact {name} is not served (HTTP {response.status_code})")
            for block in response.iter_content(2**20):
                digest.update(block)
        if digest.hexdigest() != files[name]["sha256"]:
            raise BackupError(f"restore drill: artifact {name} served with other bytes than backed up")
    return len(chosen)


def _rows(manifest: dict[str, Any]) -> int:
    return sum(sum(db["row_counts"].values()) for db in manifest["databases"].values())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
