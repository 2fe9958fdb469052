"""The databases' schema revisions, and what an MLflow image would migrate them to.

Read-only helpers for `upgrade` (its plan) and `up` (which refuses to start a new
MLflow on a database its schema is behind: that is `upgrade`'s job, with a backup and
a way back).
"""

from __future__ import annotations

import json
import re
from typing import Any

from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_json, last_line, run_json_job
from mlops_kit.errors import StackError, UpgradeError
from mlops_kit.probes import probe_script
from mlops_kit.runner import CommandRunner
from mlops_kit.services import MLFLOW, POSTGRES
from mlops_kit.services.backup import AGENT, BACKUP
from mlops_kit.services.postgres import AUTH_DATABASE, DATABASE

#: Where a job sees a database volume it inspects.
VOLUME_MOUNT = "/inspect/volume"
UPGRADE_HINT = "run mlops-kit upgrade (it backs up, migrates a copy of the database, and switches back on failure)"


def database_facts(project: ComposeProject, database: str) -> dict[str, Any]:
    """Row counts, alembic revision and server version of ``database`` (the backup agent, read-only)."""
    return run_json_job(
        project, BACKUP.name, [AGENT, "facts", "--database", database], what=f"reading the {database} database"
    )


def image_schema_heads(
    runner: CommandRunner, image: str, current: dict[str, str | None] | None = None
) -> dict[str, Any]:
    """The MLflow version and schema heads of ``image`` (a throwaway container without network).

    With ``current`` ({"tracking": revision, "auth": revision}) also the migrations each
    database still needs (``tracking_pending``, ``auth_pending``).
    """
    result = runner.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--entrypoint",
            "python",
            image,
            "-",
            json.dumps(current or {}),
        ],
        input_text=probe_script("schema_heads"),
        changes_state=False,
        check=False,
        timeout=300,
    )
    answer = last_json(result.stdout)
    if not result.ok or not isinstance(answer, dict):
        raise UpgradeError(
            f"cannot read the schema revisions of the image {image}: {last_line(result.stderr) or 'no answer'}",
            hint="is the image built? mlops-kit build",
        )
    return answer


def image_postgres_version(runner: CommandRunner, image: str) -> str:
    """`postgres --version` of ``image``, e.g. '17.6' ('unknown' when it does not say)."""
    result = runner.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "postgres", image, "--version"],
        changes_state=False,
        check=False,
        timeout=120,
    )
    match = re.search(r"\(PostgreSQL\)\s+([0-9.]+)", result.stdout)
    return match.group(1) if match else "unknown"


def refuse_unplanned_migration(project: ComposeProject, *, wait_timeout: int) -> None:
    """Raise StackError when `up` would start an MLflow that migrates this stack's existing database.

    A new MLflow image on an existing database is an upgrade: MLflow refuses an old
    tracking schema, and migrates the user database in place by itself. Fast when the
    MLflow container already runs this image; after `down`, the schema is compared.
    """
    config = project.config
    runner = project.runner
    if not project.volume_exists(config.postgres_volume):
        return  # a new stack: MLflow creates its schema
    containers = project.service_containers()
    postgres = containers.get(POSTGRES.name)
    postgres_image = project.configured_image(postgres.container) if postgres else ""
    if postgres_image and postgres_image != config.postgres_image:
        # A new major cannot open the old data folder: that is a dump and load, `upgrade`'s job.
        now, then = (
            image_postgres_version(runner, postgres_image),
            image_postgres_version(runner, config.postgres_image),
        )
        if now.split(".")[0] != then.split(".")[0]:
            raise StackError(
                f"MLOPS_KIT_POSTGRES_IMAGE changes PostgreSQL {now} to {then} (a new major) on existing data",
                hint=f"{UPGRADE_HINT}; or put MLOPS_KIT_POSTGRES_IMAGE back",
            )
    elif not postgres_image:
        data_major = volume_postgres_major(project, config.postgres_volume)
        image_major = image_postgres_version(runner, config.postgres_image).split(".")[0]
        if data_major and data_major != image_major:
            raise StackError(
                f"the database volume {config.postgres_volume} holds PostgreSQL {data_major} data and "
                f"MLOPS_KIT_POSTGRES_IMAGE is PostgreSQL {image_major}",
                hint=f"{UPGRADE_HINT} from the image that wrote it; or put MLOPS_KIT_POSTGRES_IMAGE back",
            )
    mlflow = containers.get(MLFLOW.name)
    mlflow_image = project.configured_image(mlflow.container) if mlflow else ""
    if mlflow_image == config.mlflow_image:
        return
    target = image_schema_heads(runner, config.mlflow_image)
    if mlflow_image:
        # Another tag (a kit release) with the same MLflow migrations is no upgrade of the data.
        try:
            running = image_schema_heads(runner, mlflow_image)
        except UpgradeError:
            running = {}
        if all(running.get(key) == target.get(key) for key in ("tracking", "auth")) and running:
            return
        raise StackError(
            f"MLOPS_KIT_MLFLOW_IMAGE changes from {mlflow_image} to {config.mlflow_image} on existing data",
            hint=f"{UPGRADE_HINT}; or put MLOPS_KIT_MLFLOW_IMAGE back",
        )
    # No MLflow container to compare with (after `down`): compare the databases' schemas.
    project.start_services([POSTGRES.name], wait_timeout=wait_timeout)
    for database, key in ((DATABASE, "tracking"), (AUTH_DATABASE, "auth")):
        revision = database_facts(project, database).get("alembic_revision")
        if revision is not None and target.get(key) and revision not in target[key]:
            raise StackError(
                f"the {database} database's schema ({revision}) is not what MLflow {target.get('mlflow_version')} "
                f"of {config.mlflow_image} expects ({', '.join(target[key])})",
                hint=UPGRADE_HINT,
            )


def volume_postgres_major(project: ComposeProject, volume: str) -> str:
    """The PostgreSQL major that wrote ``volume`` (its PG_VERSION file), '' for a fresh volume."""
    result = project.run_job(
        BACKUP.name, ["cat", f"{VOLUME_MOUNT}/PG_VERSION"], mounts=(f"{volume}:{VOLUME_MOUNT}:ro",), check=False
    )
    return result.stdout.strip() if result.ok else ""


#: Rows MLflow's own migrations move into columns and then delete: fewer rows there is no loss.
#: revision -> (database, table, the moved rows' condition). MLflow 3.17's trace analytics
#: (75868b020152) moves trace names, sessions, token counts and costs into columns.
MIGRATION_MOVES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "75868b020152": (
        (DATABASE, "trace_tags", "key = 'mlflow.traceName'"),
        (
            DATABASE,
            "trace_request_metadata",
            "key IN ('mlflow.trace.session', 'mlflow.trace.tokenUsage', 'mlflow.trace.cost')",
        ),
        (
            DATABASE,
            "trace_metrics",
            "key IN ('input_tokens', 'output_tokens', 'total_tokens', 'cache_read_input_tokens', "
            "'cache_creation_input_tokens', 'cache_creation_input_tokens_above_1hr')",
        ),
        (DATABASE, "span_metrics", "key IN ('input_cost', 'output_cost', 'total_cost')"),
    ),
}


def moved_rows(
    project: ComposeProject, pending: list[str], tables: dict[str, dict[str, int]]
) -> dict[tuple[str, str], int]:
    """How many rows the pending migrations will move out of each table (counted before they run).

    ``tables`` are the databases' tables now (row counts by table); a table not there yet has
    nothing to move.
    """
    moved: dict[tuple[str, str], int] = {}
    for revision in pending:
        for database, table, condition in MIGRATION_MOVES.get(revision, ()):
            if table not in tables.get(database, {}):
                continue
            answer = _query(project, database, f"SELECT count(*) FROM public.{table} WHERE {condition}")
            moved[(database, table)] = moved.get((database, table), 0) + int(answer or 0)
    return moved


#: Grants MLflow's own migrations stop honouring: revision -> the auth tables whose explicit
#: denies (permission NO_PERMISSIONS) it does not carry over. 3.17's move to roles
#: (e5f6a7b8c9d0) keeps the old tables as a snapshot but reads only roles afterwards, and
#: "an explicit deny row is no longer supported": with a default permission that grants
#: access, a denied user gets that access after the upgrade.
DROPPED_DENIES: dict[str, tuple[str, ...]] = {
    "e5f6a7b8c9d0": (
        "experiment_permissions",
        "registered_model_permissions",
        "scorer_permissions",
        "gateway_secret_permissions",
        "gateway_endpoint_permissions",
        "gateway_model_definition_permissions",
        "workspace_permissions",
    ),
}


def dropped_denies(project: ComposeProject, pending: list[str], tables: dict[str, int]) -> dict[str, int]:
    """Per user, the explicit denies the pending auth migrations will drop (read before they run).

    ``tables`` are the auth database's tables now (row counts by table).
    """
    denies: dict[str, int] = {}
    for revision in pending:
        for table in DROPPED_DENIES.get(revision, ()):
            if not tables.get(table):
                continue
            # One JSON object (user -> count): MLflow allows any character in a user name.
            answer = _query(
                project,
                AUTH_DATABASE,
                "SELECT coalesce(json_object_agg(u.username, d.n), '{}') FROM "
                f"(SELECT user_id, count(*) AS n FROM public.{table} WHERE permission = 'NO_PERMISSIONS' "
                "GROUP BY user_id) d JOIN public.users u ON u.id = d.user_id",
            )
            for user, count in json.loads(answer or "{}").items():
                denies[user] = denies.get(user, 0) + int(count)
    return denies


def _query(project: ComposeProject, database: str, sql: str) -> str:
    """One read-only query in ``database`` as PostgreSQL's superuser (psql's unaligned output)."""
    psql = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", database, "-Atc", sql]
    result = project.run(["exec", "-T", "--user", "postgres", POSTGRES.name, *psql], changes_state=False)
    return result.stdout.strip()
