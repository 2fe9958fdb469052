"""upgrade: new images and schema migrations on a copy of the database; --rollback goes back."""

from __future__ import annotations

import contextlib

import click
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json, steps
from mlops_kit.cli.options import json_option, yes_option
from mlops_kit.errors import ConfigError
from mlops_kit.runner import CommandRunner
from mlops_kit.workflows.upgrade import (
    UpgradePlan,
    load_upgrade_configs,
    plan_upgrade,
    refuse_unsafe_plan,
    rollback_upgrade,
    run_upgrade,
    upgrade_session,
)


@click.command()
@click.option(
    "--dry-run",
    "plan_only",
    is_flag=True,
    help="Only show the plan: versions, images, schema revisions, .env changes, disk, downtime.",
)
@click.option(
    "--rollback",
    is_flag=True,
    help="Go back to the version before the last upgrade, on its kept database volume.",
)
@click.option(
    "--accept-dropped-denies",
    is_flag=True,
    envvar="MLOPS_KIT_UPGRADE_ACCEPT_DROPPED_DENIES",
    help="Upgrade even though MLflow's migration drops explicit NO_PERMISSIONS denies and the default "
    "permission then grants those users access. [env var: MLOPS_KIT_UPGRADE_ACCEPT_DROPPED_DENIES]",
)
@yes_option
@json_option
@pass_app
def upgrade(
    app: AppContext, plan_only: bool, rollback: bool, accept_dropped_denies: bool, yes: bool, as_json: bool
) -> None:
    """Upgrade the running stack to what its configuration asks for, keeping every byte.

    \b
    Run it after updating the kit's checkout (git pull) or changing a pinned image.
    A backup set (tagged pre-upgrade) is made and verified first; the migrations run on
    a copy of the database volume; the stack switches only when the new version is
    healthy and passes `check`. Any failure puts the previous version back.
    """
    if rollback:
        _rollback(app, yes=yes, as_json=as_json)
        return
    runner = CommandRunner(cwd=app.project_dir)
    if plan_only or app.dry_run:
        with steps("Reading what runs and what the configuration asks for"):
            project, target = load_upgrade_configs(app.project_dir, app.env_file, runner)
            plan = plan_upgrade(project, target)
        print_json(plan.to_dict()) if as_json else _print_plan(plan)
        return
    with contextlib.ExitStack() as session:
        with steps("Taking the stack's lock") as on_step:
            project, target = session.enter_context(
                upgrade_session(app.project_dir, app.env_file, runner, on_step=on_step)
            )
            on_step("Planning")
            plan = plan_upgrade(project, target)
        if not plan.anything_to_do:
            if as_json:
                print_json({"upgraded": False, "plan": plan.to_dict()})
            else:
                ui.success("nothing to upgrade: the stack runs what its configuration asks for")
            return
        if not as_json:
            _print_plan(plan)
        refuse_unsafe_plan(plan, accept_dropped_denies=accept_dropped_denies)
        confirm(
            f"Upgrade stack {project.config.project_name}? It is backed up first; MLflow stops for about "
            f"{plan.downtime_seconds:.0f} s; the previous version stays for `upgrade --rollback`.",
            yes=yes,
        )
        with steps("Upgrading") as on_step:
            result = run_upgrade(
                project,
                target,
                plan,
                on_step=on_step,
                take_lock=False,
                accept_dropped_denies=accept_dropped_denies,
            )
    if as_json:
        print_json({"upgraded": True, **result.to_dict()})
        return
    ui.success(
        f"upgraded to MLflow {plan.mlflow_target} in {result.seconds:.0f} s "
        f"(MLflow down {result.downtime_seconds:.0f} s); "
        f"backup set {result.backup_set} first (drill RTO {result.drill_rto_seconds:.0f} s); "
        f"{result.rows_before} rows before, {result.rows_after} after; `check` passes"
    )
    ui.info(
        f"kept for `mlops-kit upgrade --rollback`: database volume {result.previous_volume}, images "
        + ", ".join(f"{s} {i}" for s, i in result.previous_images.items() if i != _target_image(plan, s))
    )


def _target_image(plan: UpgradePlan, service: str) -> str:
    return next((i.target for i in plan.images if i.service == service), "")


def _print_plan(plan: UpgradePlan) -> None:
    table = Table(title="mlops-kit upgrade plan", title_justify="left")
    for column in ("", "now", "after the upgrade"):
        table.add_column(column)
    table.add_row("kit", plan.kit_current, plan.kit_target)
    table.add_row("MLflow", plan.mlflow_current, plan.mlflow_target)
    table.add_row("PostgreSQL", plan.postgres_current, plan.postgres_target)
    for image in plan.images:
        style = "warn" if image.changed else "muted"
        table.add_row(f"image {image.service}", image.current, f"[{style}]{image.target}[/]")
    for schema in plan.schemas:
        style = "warn" if schema.migrates else "muted"
        table.add_row(
            f"schema {schema.database}", str(schema.current), f"[{style}]{', '.join(schema.target) or '?'}[/]"
        )
    for env, value in plan.env_changes.items():
        table.add_row(f".env {env}", "", value)
    ui.out.print(table)
    kind = "a data migration (schema changes)" if plan.data_migration else "new images only (no schema change)"
    ui.info(
        f"{kind}; disk: about {ui.human_bytes(plan.needed_bytes)} needed, {ui.human_bytes(plan.free_bytes)} free; "
        f"expected downtime about {plan.downtime_seconds:.0f} s (a backup and a restore drill run before it)"
    )
    if plan.replaces_rollback:
        ui.info(f"the previous upgrade's way back ({plan.replaces_rollback}) is replaced by this one's")
    for note in plan.notes:
        ui.warning(note)


def _rollback(app: AppContext, *, yes: bool, as_json: bool) -> None:
    if app.dry_run:
        raise ConfigError(
            "--dry-run does not apply to --rollback", hint="run mlops-kit upgrade --rollback (it asks first)"
        )
    project = app.project()
    confirm(
        f"Roll stack {project.config.project_name} back to the version before its last upgrade? What was written "
        "since stays in the upgraded volume (kept), not in the one it goes back to.",
        yes=yes,
    )
    with steps("Rolling back") as on_step:
        result = rollback_upgrade(project, on_step=on_step)
    if as_json:
        print_json(
            {"restored_volume": result.restored_volume, "kept_volume": result.kept_volume, "images": result.images}
        )
        return
    ui.success(f"the previous version serves again on {result.restored_volume}")
    ui.info(f"the upgraded database is kept in volume {result.kept_volume} (remove it when satisfied)")
