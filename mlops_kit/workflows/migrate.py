"""`mlops-kit artifacts migrate`: move a stack's artifacts to another store and switch over.

Runs, experiments and models name their artifacts `mlflow-artifacts:/...`: the
proxy's URIs never name the store behind it (checked in the tracking database by
the integration tests), so a migration is a copy plus a configuration switch.

The copy never writes over the store in use: it goes into a fresh volume or a fresh
key prefix, recorded in a state file so that an interrupted migration resumes where
it stopped (files already copied with the same sha256 are skipped). Every object is
read back and compared by sha256 as it is copied. The bulk is copied while MLflow
serves; MLflow is then stopped, what arrived meanwhile is copied, both sides are
compared file by file (names and sizes), and only then `.env` names the new store
and the stack starts on it. The old store is kept, untouched.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mlops_kit.config.envfile import artifact_store_values, update_env_file
from mlops_kit.config.loader import KitConfig, load_config
from mlops_kit.config.settings import SETTINGS_BY_ENV, settings_values
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import BackupError, ConfigError
from mlops_kit.services import MLFLOW, PROXY
from mlops_kit.services.backup import AGENT, MIGRATE_VOLUME_MOUNT
from mlops_kit.stores import store_named
from mlops_kit.stores.check import require_store
from mlops_kit.workflows.backup import backup_lock, run_agent
from mlops_kit.workflows.lifecycle import UpResult, bring_up

logger = logging.getLogger(__name__)

STATE_FILE = ".mlops-kit-migration.json"
Step = Callable[[str], None]


@dataclass(frozen=True)
class MigrationResult:
    """What a migration did (or, with dry_run, would do)."""

    source: str
    target: str
    files: int
    bytes: int
    copied: int
    skipped: int
    seconds: float
    dry_run: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe(config: KitConfig) -> str:
    """Where a config keeps its artifacts, for humans."""
    return config.store.describe(config)


def plan_target(config: KitConfig, store: str, settings: dict[str, str]) -> KitConfig:
    """The stack's configuration after the switch: ``store`` with ``settings`` (resuming a started one).

    ``settings`` maps variable names (the S3 ones) to their values from the command line.
    """
    mode = store_named(store)
    if store == config.artifact_store and not mode.in_bucket:
        raise ConfigError(f"the artifacts are in the {store} store already", hint="choose another --to")
    if config.uses_bucket and mode.in_bucket:
        raise ConfigError(
            f"migrating from {config.artifact_store} to {store} is not supported (bucket to bucket)",
            hint="migrate to volume first, then to the other bucket (each step is verified)",
        )
    state = _read_state(config)
    generation = state.get("generation") if state.get("to") == store else None
    generation = generation or time.strftime("m%Y%m%d%H%M%S")
    fields: dict[str, Any] = {"artifact_store": store}
    for env, value in settings.items():
        setting = SETTINGS_BY_ENV[env]
        fields[setting.attr] = setting.check(value, setting.option, f"fix {setting.option}")
    chosen = replace(config, **fields)
    target = replace(chosen, **mode.relocated(chosen, generation))
    _write_state(config, {"to": store, "generation": generation, "target": describe(target)})
    return target


def migrate_artifacts(
    project: ComposeProject, target: KitConfig, *, dry_run: bool, on_step: Step = lambda _s: None
) -> MigrationResult:
    """Copy the artifacts into ``target``'s store, verify, and switch the stack to it (see above)."""
    source = project.config
    started = time.monotonic()
    bucket_side = ComposeProject(target if target.uses_bucket else source, project.runner)
    volume = source.artifacts_volume if target.uses_bucket else target.artifacts_volume
    prefix = bucket_side.config.s3_prefix
    if not dry_run:
        target.store.prepare(target.secrets_path)
    on_step(f"Checking the {bucket_side.config.artifact_store} store")
    require_store(bucket_side)
    if not target.uses_bucket and not project.volume_exists(volume) and not dry_run:
        project.create_volume(volume, "artifacts")

    def copy(what: str) -> dict[str, Any]:
        on_step(what)
        if target.uses_bucket:
            command = [AGENT, "upload", "--source", MIGRATE_VOLUME_MOUNT, "--prefix", prefix]
            mount = f"{volume}:{MIGRATE_VOLUME_MOUNT}:ro"
        else:
            command = [AGENT, "download", "--prefix", prefix, "--target", MIGRATE_VOLUME_MOUNT]
            mount = f"{volume}:{MIGRATE_VOLUME_MOUNT}"
        return run_agent(bucket_side, [*command, *(["--dry-run"] if dry_run else [])], what, mounts=(mount,))

    with backup_lock(source, "migrate artifacts"):
        first = copy(f"Copying {describe(source)} -> {describe(target)} while MLflow serves")
        if dry_run:
            return MigrationResult(
                describe(source), describe(target), first["files"], first["bytes"], 0, 0, 0.0, dry_run=True
            )
        was_running = project.is_running(MLFLOW.name)
        on_step("Stopping MLflow for the final copy")
        if was_running:
            project.stop_services([PROXY.name, MLFLOW.name])
        try:
            final = copy("Copying what arrived meanwhile")
            on_step("Comparing both stores file by file")
            _compare(bucket_side, volume, prefix)
        except BaseException:
            if was_running:
                project.up(wait_timeout=600)
            raise
        on_step(f"Switching the stack to {describe(target)}")
        update_env_file(source.env_file, _env_changes(target), added_by="mlops-kit artifacts migrate")
        (source.project_dir / STATE_FILE).unlink(missing_ok=True)
    return MigrationResult(
        describe(source),
        describe(target),
        final["files"],
        final["bytes"],
        first["copied"] + final["copied"],
        final["skipped"] - first["copied"],
        time.monotonic() - started,
        dry_run=False,
    )


def _compare(bucket_side: ComposeProject, volume: str, prefix: str) -> None:
    mount = f"{volume}:{MIGRATE_VOLUME_MOUNT}:ro"
    in_volume = run_agent(
        bucket_side, [AGENT, "digest", "--sizes", "--folder", MIGRATE_VOLUME_MOUNT], "listing", (mount,)
    )
    in_bucket = run_agent(bucket_side, [AGENT, "digest", "--sizes", "--prefix", prefix], "listing the bucket")
    if in_volume["files"] != in_bucket["files"]:
        differ = sorted(set(in_volume["files"].items()) ^ set(in_bucket["files"].items()))
        raise BackupError(
            f"the stores differ after the copy in {len(differ)} file(s), e.g. {differ[0][0]}; nothing was switched",
            hint="run the migration again (it resumes), or see the job output with -vv",
        )


def _env_changes(target: KitConfig) -> dict[str, str]:
    """The `.env` lines that switch the stack to ``target``'s store (each setting maps itself back)."""
    store = target.store
    changes = settings_values(target, ("MLOPS_KIT_ARTIFACT_STORE", *store.switch_settings, *store.location_settings))
    changes.update(artifact_store_values(target.artifact_store, {"MLOPS_KIT_S3_NETWORK": target.s3_network}))
    # Plain Compose reads this; with the overlays gone it must still name compose.yaml (empty breaks it).
    changes["COMPOSE_FILE"] = target.compose_file_setting or "compose.yaml"
    return changes


def move_artifacts(
    project: ComposeProject,
    target: KitConfig,
    *,
    dry_run: bool,
    wait_timeout: int,
    on_step: Step = lambda _s: None,
) -> tuple[MigrationResult, UpResult | None]:
    """`artifacts migrate`: copy and switch (see :func:`migrate_artifacts`), then start the stack on the new store."""
    result = migrate_artifacts(project, target, dry_run=dry_run, on_step=on_step)
    if dry_run:
        return result, None
    on_step("Starting the stack on the new store")
    switched = load_config(project.config.project_dir, project.config.env_file)
    return result, bring_up(ComposeProject(switched, project.runner), wait_timeout=wait_timeout)


def _read_state(config: KitConfig) -> dict[str, Any]:
    try:
        return dict(json.loads((config.project_dir / STATE_FILE).read_text()))
    except (OSError, json.JSONDecodeError):
        return {}


def _write_state(config: KitConfig, state: dict[str, Any]) -> None:
    path: Path = config.project_dir / STATE_FILE
    path.write_text(json.dumps(state, indent=2) + "\n")
