"""`mlops-kit upgrade`: new images and schema migrations on a copy of the database, with a way back.

The one command after updating the kit's checkout or changing a pinned image. It
never writes the database the stack runs on:

1. **Plan** (read-only; all `--dry-run` shows): what runs now (the containers'
   images, MLflow's and PostgreSQL's versions, both databases' schema revisions) and
   what the configuration asks for (`.env` after this kit's updates: image tags, new
   settings), the target image's schema heads, the disk the copy needs and the free space.
2. Under the stack's lock: a **backup set tagged pre-upgrade**, then a restore drill of it.
3. **Writers stop** (proxy and MLflow); the row count of every table is taken; PostgreSQL
   stops and its volume is **copied** (cold, files as they are) into a fresh volume.
4. On the copy, with the target images: `mlflow db upgrade` (tracking) and the basic-auth
   database's migrations; every table must keep at least the rows it had.
5. The whole stack starts on the copy with the target images; healthy; `check` passes.
6. Only then `.env` names the copy and the target images. The previous volume, images
   and `.env` values are kept and recorded, for `upgrade --rollback`.

A failure at any step stops the new stack, removes the copy, puts `.env` back and
starts the previous version on its untouched volume; the error names the step and the
failing command's own last line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from mlops_kit import __version__
from mlops_kit.config.envfile import env_file_updates, update_env_file
from mlops_kit.config.loader import KitConfig, load_config, read_env_file
from mlops_kit.config.settings import SETTINGS_BY_ENV, settings_values
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_line
from mlops_kit.errors import CommandError, KitError, StackError, UpgradeError
from mlops_kit.runner import CommandRunner
from mlops_kit.services import MLFLOW, POSTGRES, PROXY, kit_services, stack_services
from mlops_kit.services.backup import AGENT, BACKUP, RESTORE_ROOT, STAGING_MOUNT
from mlops_kit.services.mlflow import AUTH_DATABASE_URI, BACKEND_STORE_URI, server_version
from mlops_kit.services.postgres import AUTH_DATABASE, DATABASE
from mlops_kit.workflows.backup import STAGING_SET, run_agent, run_backup
from mlops_kit.workflows.lifecycle import build_missing, require_running
from mlops_kit.workflows.lock import backup_lock
from mlops_kit.workflows.preflight import read_engine
from mlops_kit.workflows.restore import UPGRADE_STATE_FILE, drill
from mlops_kit.workflows.schema import (
    database_facts,
    dropped_denies,
    image_postgres_version,
    image_schema_heads,
    moved_rows,
)
from mlops_kit.workflows.smoke import run_smoke_check
from mlops_kit.workflows.users import admin_access

logger = logging.getLogger(__name__)

#: What a successful upgrade keeps for `upgrade --rollback` (in the kit's folder).
STATE_FILE = UPGRADE_STATE_FILE
WAIT_TIMEOUT = 600
#: The snapshot tag of the backup set an upgrade makes first.
PRE_UPGRADE_TAG = "pre-upgrade"
#: Where the copy job sees the two database volumes.
COPY_FROM, COPY_TO = "/copy/from", "/copy/to"
_KIT_TAG = re.compile(r"-?kit(\d+\.\d+\.\d+)$")
_PG_MAJOR = re.compile(r"\(PostgreSQL\)\s+(\d+)")
Step = Callable[[str], None]


@dataclass(frozen=True)
class ImageChange:
    """One service's image now and after the upgrade."""

    service: str
    setting: str
    current: str
    target: str

    @property
    def changed(self) -> bool:
        return self.current != self.target


@dataclass(frozen=True)
class SchemaChange:
    """One database's schema revision now, and the heads the target MLflow migrates it to."""

    database: str
    current: str | None
    target: tuple[str, ...]
    #: The migrations between the two (None: the current revision is not in the target's history).
    pending: tuple[str, ...] | None = ()

    @property
    def migrates(self) -> bool:
        return bool(self.target) and self.current not in self.target


@dataclass
class UpgradePlan:
    """What an upgrade would change; all of it read without changing anything."""

    kit_current: str
    kit_target: str
    mlflow_current: str
    mlflow_target: str
    postgres_current: str
    postgres_target: str
    images: list[ImageChange]
    env_changes: dict[str, str]
    schemas: list[SchemaChange]
    database_bytes: int
    free_bytes: int
    #: The kept state of the previous upgrade, which this one replaces (its volume stays).
    replaces_rollback: str = ""
    notes: list[str] = field(default_factory=list)
    #: Per user, the explicit denies (NO_PERMISSIONS grants) MLflow's migrations will drop
    #: (None: unknown, the target's migrations could not be read).
    dropped_denies: dict[str, int] | None = field(default_factory=dict)
    #: What a user without a grant may do after the upgrade (MLOPS_KIT_AUTH_DEFAULT_PERMISSION).
    default_permission: str = "NO_PERMISSIONS"

    @property
    def data_migration(self) -> bool:
        return any(s.migrates for s in self.schemas)

    @property
    def postgres_major_changes(self) -> bool:
        known = "unknown" not in (self.postgres_current, self.postgres_target)
        return known and _major(self.postgres_current) != _major(self.postgres_target)

    @property
    def needed_bytes(self) -> int:
        """The database copy, plus room for the pre-upgrade backup's new data (at most its dump)."""
        return self.database_bytes + self.database_bytes // 2

    @property
    def downtime_seconds(self) -> float:
        """A rough, generous estimate: stop, copy (or dump and load), migrate, start, check.

        Measured (docs/upgrading.md): a 782 MiB database, 3.10.1 -> 3.17.2, was down 37 s
        where this says 64 s.
        """
        migrate = 10 + self.database_bytes / 100e6 if self.data_migration else 5
        move = self.database_bytes / (20e6 if self.postgres_major_changes else 150e6)
        return 15 + move + migrate + 25

    @property
    def widens_access(self) -> bool:
        """Dropped denies give way to a default permission that grants something."""
        return bool(self.dropped_denies) and self.default_permission != "NO_PERMISSIONS"

    @property
    def anything_to_do(self) -> bool:
        changes = any(i.changed for i in self.images) or bool(self.env_changes)
        return changes or self.data_migration or self.postgres_major_changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "kit": {"current": self.kit_current, "target": self.kit_target},
            "mlflow": {"current": self.mlflow_current, "target": self.mlflow_target},
            "postgres": {"current": self.postgres_current, "target": self.postgres_target},
            "images": [asdict(i) | {"changed": i.changed} for i in self.images],
            "env_changes": self.env_changes,
            "schemas": [
                {
                    "database": s.database,
                    "current": s.current,
                    "target": list(s.target),
                    "migrates": s.migrates,
                    "pending": None if s.pending is None else list(s.pending),
                }
                for s in self.schemas
            ],
            "data_migration": self.data_migration,
            "anything_to_do": self.anything_to_do,
            "database_bytes": self.database_bytes,
            "needed_bytes": self.needed_bytes,
            "free_bytes": self.free_bytes,
            "downtime_seconds_estimate": round(self.downtime_seconds),
            "replaces_rollback": self.replaces_rollback,
            "dropped_denies": self.dropped_denies,
            "default_permission": self.default_permission,
            "widens_access": self.widens_access,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class UpgradeResult:
    plan: UpgradePlan
    backup_set: str
    drill_rto_seconds: float
    previous_volume: str
    upgraded_volume: str
    previous_images: dict[str, str]
    rows_before: int
    rows_after: int
    downtime_seconds: float
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["plan"] = self.plan.to_dict()
        return data


@dataclass(frozen=True)
class RollbackResult:
    restored_volume: str
    kept_volume: str
    images: dict[str, str]


# ---- the plan --------------------------------------------------------------------------


def load_upgrade_configs(
    project_dir: Path, env_file: Path, runner: CommandRunner, *, start_if_stopped: bool = False
) -> tuple[ComposeProject, KitConfig]:
    """The stack as its containers run it (their images), and the configuration it upgrades to.

    The target is `.env` with this kit's updates applied in memory (nothing is written):
    new image tags an older kit pinned, settings it did not know. A stopped stack is
    started on its current version first with ``start_if_stopped`` (the backup needs it).
    """
    loaded = load_config(project_dir, env_file)
    project = ComposeProject(loaded, runner)
    containers = project.service_containers()
    states = list(containers.values())
    images = {name: image for name, s in containers.items() if (image := project.configured_image(s.container))}
    if MLFLOW.name not in images:
        raise UpgradeError(
            f"stack {loaded.project_name} has no MLflow container to upgrade from",
            hint="start it on the version it ran (mlops-kit up with that MLOPS_KIT_MLFLOW_IMAGE), then upgrade",
        )
    current_fields: dict[str, Any] = {
        SETTINGS_BY_ENV[s.image_setting].attr: images[s.name] for s in kit_services(loaded) if s.name in images
    }
    current = ComposeProject(replace(loaded, **current_fields), runner)
    long_running = {s.name for s in stack_services(loaded)}
    if not all(s.state == "running" for s in states if s.service in long_running):
        if not start_if_stopped:
            raise UpgradeError(
                f"stack {loaded.project_name} is stopped",
                hint="mlops-kit upgrade (without --dry-run) starts it on its current version first",
            )
        current.up(wait_timeout=WAIT_TIMEOUT)
    require_running(current)
    updates = env_file_updates(env_file)
    target_fields = {
        SETTINGS_BY_ENV[env].attr: SETTINGS_BY_ENV[env].check(value, env, f"fix {env}")
        for env, value in updates.items()
    }
    return current, replace(loaded, **target_fields)


@contextmanager
def upgrade_session(
    project_dir: Path, env_file: Path, runner: CommandRunner, *, on_step: Step = lambda _s: None
) -> Iterator[tuple[ComposeProject, KitConfig]]:
    """Hold the stack's lock, start a stopped stack on its current version and build the new images.

    Everything an upgrade does happens inside: a backup, restore or migration that runs
    makes it exit 8 before anything changes, and none can start while it runs.
    """
    loaded = load_config(project_dir, env_file)
    with backup_lock(loaded, "upgrade"):
        on_step("Reading what runs and what the configuration asks for")
        project, target = load_upgrade_configs(project_dir, env_file, runner, start_if_stopped=True)
        on_step("Building the new images (first time: a few minutes)")
        build_missing(ComposeProject(target, runner))
        yield project, target


def plan_upgrade(project: ComposeProject, target: KitConfig) -> UpgradePlan:
    """Read what runs and what the target asks for; changes nothing."""
    current = project.config
    runner = project.runner
    images = [
        ImageChange(
            s.name,
            s.image_setting,
            getattr(current, SETTINGS_BY_ENV[s.image_setting].attr),
            getattr(target, SETTINGS_BY_ENV[s.image_setting].attr),
        )
        for s in kit_services(target)
    ]
    tracking = database_facts(project, DATABASE)
    auth = database_facts(project, AUTH_DATABASE)
    unbuilt = ComposeProject(target, runner).missing_images()
    revisions = {"tracking": tracking.get("alembic_revision"), "auth": auth.get("alembic_revision")}
    heads = {} if MLFLOW.name in unbuilt else image_schema_heads(runner, target.mlflow_image, revisions)
    env_changes = {
        env: value
        for env, value in env_file_updates(current.env_file).items()
        if not any(env == i.setting for i in images)
    }
    previous = read_state(current)
    engine = read_engine(runner)
    free = shutil.disk_usage(engine.docker_root).free if engine.docker_root and Path(engine.docker_root).exists() else 0
    plan = UpgradePlan(
        kit_current=_kit_version(current.mlflow_image),
        kit_target=__version__,
        mlflow_current=server_version(admin_access(current)) or "unknown",
        mlflow_target=str(heads.get("mlflow_version", "unknown")),
        postgres_current=str(tracking.get("server_version", "unknown")),
        postgres_target="unknown"
        if POSTGRES.name in unbuilt
        else image_postgres_version(runner, target.postgres_image),
        images=images,
        env_changes={**{i.setting: i.target for i in images if i.changed}, **env_changes},
        schemas=[
            SchemaChange(
                DATABASE,
                revisions["tracking"],
                tuple(heads.get("tracking") or ()),
                _pending(heads.get("tracking_pending", [])),
            ),
            SchemaChange(
                AUTH_DATABASE,
                revisions["auth"],
                tuple(heads.get("auth") or ()),
                _pending(heads.get("auth_pending", [])),
            ),
        ],
        database_bytes=volume_bytes(project, current.postgres_volume),
        free_bytes=free,
        replaces_rollback=str(previous.get("previous_volume", "")) if previous else "",
        dropped_denies=None
        if heads.get("auth_pending") is None
        else dropped_denies(project, list(heads["auth_pending"]), auth.get("row_counts", {})),
        default_permission=target.auth_default_permission,
    )
    if unbuilt:
        plan.notes.append(
            f"not built yet: {', '.join(unbuilt)} (upgrade builds them first; their versions and schema heads show "
            "once built: mlops-kit build)"
        )
    if plan.dropped_denies is None:
        plan.notes.append(
            "which explicit NO_PERMISSIONS denies MLflow's auth migrations drop is not known yet (the target "
            "image is not built, or the user database's revision is not in its history)"
        )
    elif plan.dropped_denies:
        plan.notes.append(
            f"MLflow's move to roles drops explicit NO_PERMISSIONS denies ({_denies(plan)}); afterwards those "
            f"users get the default permission ({plan.default_permission}) on those resources"
        )
    if plan.postgres_major_changes:
        plan.notes.append(
            f"PostgreSQL {_major(plan.postgres_current)} -> {_major(plan.postgres_target)}: a major upgrade; both "
            "databases are dumped and loaded into a fresh volume of the new major (row counts checked)"
        )
    return plan


def volume_bytes(project: ComposeProject, volume: str) -> int:
    """Bytes the files of ``volume`` take (`du` in a job of the backup image, read-only mount)."""
    result = project.run_job(
        BACKUP.name, ["du", "-sb", COPY_FROM], mounts=(f"{volume}:{COPY_FROM}:ro",), check=False, timeout=600
    )
    match = re.match(r"(\d+)", result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "")
    return int(match.group(1)) if match else 0


def _denies(plan: UpgradePlan) -> str:
    return ", ".join(f"{user}: {count}" for user, count in sorted((plan.dropped_denies or {}).items()))


def _pending(revisions: Any) -> tuple[str, ...] | None:
    return None if revisions is None else tuple(str(r) for r in revisions)


def _kit_version(image: str) -> str:
    match = _KIT_TAG.search(image)
    return match.group(1) if match else "unknown"


def _major(version: str) -> str:
    return version.split(".")[0]


# ---- the upgrade -----------------------------------------------------------------------


def refuse_unsafe_plan(plan: UpgradePlan, *, accept_dropped_denies: bool = False) -> None:
    """Raise :class:`UpgradeError` for a plan not to start: nothing to do, too little disk, or
    access that would widen (explicit denies dropped, unless ``accept_dropped_denies``)."""
    if not plan.anything_to_do:
        raise UpgradeError("nothing to upgrade: the stack runs what its configuration asks for")
    if plan.free_bytes and plan.free_bytes < plan.needed_bytes:
        raise UpgradeError(
            f"the upgrade needs about {plan.needed_bytes // 2**20} MiB of free disk, "
            f"{plan.free_bytes // 2**20} MiB are free",
            hint="free some space in Docker's data folder and run it again",
        )
    if plan.widens_access and not accept_dropped_denies:
        raise UpgradeError(
            f"the upgrade would widen access: MLflow's move to roles drops explicit NO_PERMISSIONS denies "
            f"({_denies(plan)}), and MLOPS_KIT_AUTH_DEFAULT_PERMISSION={plan.default_permission} would then apply",
            hint="set MLOPS_KIT_AUTH_DEFAULT_PERMISSION=NO_PERMISSIONS in .env and grant what the default gave, "
            "or accept it: mlops-kit upgrade --accept-dropped-denies",
        )


def run_upgrade(
    project: ComposeProject,
    target: KitConfig,
    plan: UpgradePlan,
    *,
    drill_sample: int = 20,
    on_step: Step = lambda _s: None,
    take_lock: bool = True,
    accept_dropped_denies: bool = False,
) -> UpgradeResult:
    """Upgrade ``project``'s stack to ``target`` as planned (see the module's docstring).

    ``take_lock=False`` inside :func:`upgrade_session`, which holds the lock already.
    An upgrade that would open resources to users who were explicitly denied them is
    refused unless ``accept_dropped_denies``.
    """
    current = project.config
    refuse_unsafe_plan(plan, accept_dropped_denies=accept_dropped_denies)
    started = time.monotonic()
    with backup_lock(current, "upgrade") if take_lock else contextlib.nullcontext(), _signals_interrupt():
        on_step("Backing up first (a set tagged pre-upgrade)")
        backup = run_backup(project, on_step=on_step, tags=(PRE_UPGRADE_TAG,), take_lock=False)
        on_step("Verifying that backup set restores (restore drill)")
        report = drill(project, sample=drill_sample, on_step=on_step, take_lock=False)
        down_since = time.monotonic()
        pending = [r for s in plan.schemas for r in (s.pending or ())]
        rows_before, rows_after, upgraded_volume = _migrate_on_a_copy(
            project, target, on_step, pending=pending, major_change=plan.postgres_major_changes
        )
        downtime = time.monotonic() - down_since
    return UpgradeResult(
        plan=plan,
        backup_set=backup.set_id,
        drill_rto_seconds=report.rto_seconds,
        previous_volume=current.postgres_volume,
        upgraded_volume=upgraded_volume,
        previous_images={i.service: i.current for i in plan.images},
        rows_before=rows_before,
        rows_after=rows_after,
        downtime_seconds=downtime,
        seconds=time.monotonic() - started,
    )


def _migrate_on_a_copy(
    project: ComposeProject,
    target: KitConfig,
    on_step: Step,
    *,
    pending: list[str] | None = None,
    major_change: bool = False,
) -> tuple[int, int, str]:
    """Steps 3-6 of the module's docstring; any failure switches back. Returns (rows before, after, volume)."""
    current = project.config
    generation = time.strftime("u%Y%m%d%H%M%S")
    upgraded_volume = f"{current.project_name}_postgres-data-{generation}"
    switched = ComposeProject(replace(target, postgres_volume_name=upgraded_volume), project.runner)
    # Every setting that differs, and every update this kit makes to an older `.env` (a new
    # setting may equal its default, and must still be written, or the next upgrade plans it again).
    changed_settings = tuple(
        dict.fromkeys([*_changed_settings(current, switched.config), *env_file_updates(current.env_file)])
    )
    previous_env = _previous_env_values(current, changed_settings)
    step = "stopping the writers"
    env_written = False
    dump_dir = current.backup_path / "staging" / f"upgrade-{generation}"
    try:
        on_step("Stopping MLflow and the proxy (writers)")
        project.stop_services([PROXY.name, MLFLOW.name])
        step = "counting rows before"
        before = {db: database_facts(project, db)["row_counts"] for db in (DATABASE, AUTH_DATABASE)}
        moved = moved_rows(project, pending or [], before)
        if major_change:
            # A new PostgreSQL major cannot open the old data folder: dump and load instead.
            step = "dumping both databases"
            on_step("Dumping both databases (a new PostgreSQL major: dump and load)")
            dump_dir.mkdir(parents=True)
            job_set = f"{STAGING_MOUNT}/{dump_dir.name}/{STAGING_SET}"
            dump = [AGENT, "prepare", "--out", job_set, "--artifacts", RESTORE_ROOT]
            run_agent(project, [*dump, "--database", DATABASE, "--database", AUTH_DATABASE], "dumping the databases")
            project.stop_services([POSTGRES.name])
            project.create_volume(upgraded_volume, "postgres-data")
            step = "starting the new PostgreSQL on a fresh volume"
            on_step("Starting the new PostgreSQL on a fresh volume")
            switched.start_services([POSTGRES.name], wait_timeout=WAIT_TIMEOUT)
            step = "loading the dump into the new PostgreSQL"
            on_step("Loading the dump (row counts and schema revisions checked)")
            run_agent(switched, [AGENT, "load", "--set", job_set], "loading the dump")
        else:
            step = "copying the database volume"
            on_step(f"Copying the database volume {current.postgres_volume} -> {upgraded_volume}")
            project.stop_services([POSTGRES.name])
            project.create_volume(upgraded_volume, "postgres-data")
            project.run_job(
                BACKUP.name,
                ["cp", "-a", f"{COPY_FROM}/.", f"{COPY_TO}/"],
                mounts=(f"{current.postgres_volume}:{COPY_FROM}:ro", f"{upgraded_volume}:{COPY_TO}"),
                timeout=7200,
            )
            step = "starting PostgreSQL on the copy"
            on_step("Starting PostgreSQL on the copy")
            switched.start_services([POSTGRES.name], wait_timeout=WAIT_TIMEOUT)
        step = "migrating the tracking database (mlflow db upgrade)"
        on_step("Migrating the tracking database on the copy (mlflow db upgrade)")
        switched.run_job(MLFLOW.name, ["mlflow", "db", "upgrade", BACKEND_STORE_URI], timeout=7200)
        step = "migrating the user database (basic-auth)"
        on_step("Migrating the user database on the copy")
        switched.run_job(
            MLFLOW.name,
            ["python", "-m", "mlflow.server.auth", "db", "upgrade", "--url", AUTH_DATABASE_URI],
            timeout=3600,
        )
        step = "comparing row counts"
        after = {db: database_facts(switched, db)["row_counts"] for db in (DATABASE, AUTH_DATABASE)}
        compare_row_counts(before, after, moved)
        step = "starting the new version on the copy"
        on_step("Starting the new version on the copy and waiting until it is healthy")
        switched.up(wait_timeout=WAIT_TIMEOUT)
        step = "the end-to-end check"
        on_step("Checking end to end through the MLflow API")
        run_smoke_check(admin_access(switched.config))
        step = "writing .env"
        env_written = True
        update_env_file(
            current.env_file, settings_values(switched.config, changed_settings), added_by="mlops-kit upgrade"
        )
        write_state(
            current,
            {
                "generation": generation,
                "finished_at": time.time(),
                "kit_version": __version__,
                "previous_volume": current.postgres_volume,
                "upgraded_volume": upgraded_volume,
                "previous_env": previous_env,
            },
        )
    except BaseException as error:
        on_step(f"Upgrade failed ({step}): switching back to the previous version")
        failed = _switch_back(project, switched, upgraded_volume, previous_env if env_written else None)
        if not isinstance(error, (KitError, OSError)) and not failed:
            raise
        outcome = (
            f"switching back failed too ({'; '.join(failed)}): the previous version's data is untouched in "
            f"{current.postgres_volume}"
            if failed
            else "the previous version serves again on its untouched data"
        )
        raise UpgradeError(
            f"upgrade failed at {step}: {_said(error)}; {outcome}",
            hint="run mlops-kit up"
            if failed
            else "the pre-upgrade backup set is in the repository (mlops-kit backup list); see: mlops-kit logs",
        ) from error
    finally:
        shutil.rmtree(dump_dir, ignore_errors=True)
    rows = (sum(sum(t.values()) for t in before.values()), sum(sum(t.values()) for t in after.values()))
    return rows[0], rows[1], upgraded_volume


def compare_row_counts(
    before: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    moved: dict[tuple[str, str], int] | None = None,
) -> None:
    """Every table keeps at least the rows it had, less those a migration moved into columns (``moved``).

    Migrations add tables and rows; the only rows they may take away are the ones MLflow
    declares it moves (:data:`~mlops_kit.workflows.schema.MIGRATION_MOVES`).
    """
    for database, tables in before.items():
        for table, had in tables.items():
            rows = had - (moved or {}).get((database, table), 0)
            now = after.get(database, {}).get(table)
            if now is None or now < rows:
                has = "no such table" if now is None else f"{now}"
                raise UpgradeError(f"the migration lost rows: {database}.{table} had {had}, has {has}")


def _changed_settings(current: KitConfig, target: KitConfig) -> tuple[str, ...]:
    """Every setting whose value differs between the two configurations (the database volume among them)."""
    return tuple(
        env
        for env, setting in SETTINGS_BY_ENV.items()
        if getattr(current, setting.attr) != getattr(target, setting.attr)
    )


def _previous_env_values(current: KitConfig, envs: tuple[str, ...]) -> dict[str, str]:
    """What `.env` must say to run ``current`` again: the running images, the other values as they were."""
    in_file = read_env_file(current.env_file)
    values = settings_values(current, envs)
    for env in envs:
        if not env.endswith("_IMAGE") and env != "MLOPS_KIT_POSTGRES_VOLUME":
            values[env] = in_file.get(env, SETTINGS_BY_ENV[env].default)
    return values


def _switch_back(
    project: ComposeProject, switched: ComposeProject, upgraded_volume: str, previous_env: dict[str, str] | None
) -> list[str]:
    """Each step on its own (one failing must not stop the next, above all the restart); the failed ones.

    A second Ctrl-C does not cut it short.
    """
    steps: list[tuple[str, Callable[[], object]]] = [
        ("stop the new version", lambda: switched.down(volumes=False)),
        ("remove the copy", lambda: switched.remove_volumes([upgraded_volume])),
    ]
    if previous_env is not None:
        steps.append(
            (
                "put .env back",
                lambda: update_env_file(project.config.env_file, previous_env, added_by="mlops-kit upgrade"),
            )
        )
    steps.append(("start the previous version", lambda: project.up(wait_timeout=WAIT_TIMEOUT)))
    failed: list[str] = []
    previous_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                logger.error("upgrade rollback: could not %s: %s", what, exc)
                failed.append(f"could not {what}")
    finally:
        signal.signal(signal.SIGINT, previous_handler)
    return failed


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed SSH session) interrupt like Ctrl-C, so the switch back still runs."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _said(error: BaseException) -> str:
    """The failing command's own last line (alembic's error, not Compose's), else the error's message."""
    if isinstance(error, CommandError):
        return last_line(error.stderr) or last_line(error.stdout) or error.message
    return error.message if isinstance(error, KitError) else str(error)


# ---- the way back ----------------------------------------------------------------------


def rollback_upgrade(project: ComposeProject, *, on_step: Step = lambda _s: None) -> RollbackResult:
    """`upgrade --rollback`: run the version before the last upgrade again, on its kept volume.

    What was written since the upgrade stays in the upgraded volume (kept, named).
    """
    config = project.config
    state = read_state(config)
    if not state:
        raise UpgradeError(
            "there is no upgrade to roll back",
            hint="only the last upgrade can be rolled back, until the next one or `down --volumes`",
        )
    previous_volume = str(state["previous_volume"])
    if config.postgres_volume != state.get("upgraded_volume"):
        raise UpgradeError(
            f"the stack no longer runs on the upgraded volume {state.get('upgraded_volume')} "
            f"(it runs on {config.postgres_volume}: restored or changed since)",
            hint="a rollback would drop what happened since; restore a backup set instead (mlops-kit backup list)",
        )
    if not project.volume_exists(previous_volume):
        raise UpgradeError(
            f"the previous database volume {previous_volume} no longer exists", hint="restore a backup set instead"
        )
    previous_env = {str(k): str(v) for k, v in dict(state["previous_env"]).items()}
    upgraded_env = settings_values(config, tuple(previous_env))
    previous_config = replace(
        config,
        **{SETTINGS_BY_ENV[k].attr: SETTINGS_BY_ENV[k].check(v, k, f"fix {k}") for k, v in previous_env.items()},
    )
    previous = ComposeProject(previous_config, project.runner)
    missing = previous.missing_images()
    if missing:
        raise UpgradeError(
            f"the previous version's images are gone: {', '.join(missing)}",
            hint="build them from the previous kit's checkout (mlops-kit build), then roll back",
        )
    with backup_lock(config, "roll back the upgrade"), _signals_interrupt():
        on_step("Stopping the upgraded version")
        project.down(volumes=False)
        update_env_file(config.env_file, previous_env, added_by="mlops-kit upgrade --rollback")
        on_step("Starting the previous version on its kept volume")
        try:
            previous.up(wait_timeout=WAIT_TIMEOUT)
        except BaseException as error:
            # The way back failed: the upgraded version serves again, as it did.
            previous.down(volumes=False)
            update_env_file(config.env_file, upgraded_env, added_by="mlops-kit upgrade --rollback")
            project.up(wait_timeout=WAIT_TIMEOUT)
            if not isinstance(error, KitError):
                raise
            raise StackError(
                f"the previous version did not start ({error.message}); the upgraded version serves again",
                hint="see: mlops-kit logs",
            ) from error
        state_path(config).unlink(missing_ok=True)
    images = {k: v for k, v in previous_env.items() if k.endswith("_IMAGE")}
    return RollbackResult(restored_volume=previous_volume, kept_volume=str(state["upgraded_volume"]), images=images)


def state_path(config: KitConfig) -> Path:
    return config.project_dir / STATE_FILE


def read_state(config: KitConfig) -> dict[str, Any]:
    try:
        return dict(json.loads(state_path(config).read_text()))
    except (OSError, json.JSONDecodeError, TypeError):
        return {}


def write_state(config: KitConfig, state: dict[str, Any]) -> None:
    path = state_path(config)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(path)


__all__ = [
    "UpgradePlan",
    "UpgradeResult",
    "load_upgrade_configs",
    "plan_upgrade",
    "rollback_upgrade",
    "run_upgrade",
    "upgrade_session",
]
