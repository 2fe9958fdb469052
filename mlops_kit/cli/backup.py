"""backup (list, verify, schedule) and restore."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json, steps
from mlops_kit.cli.options import cron_dir_option, json_option, yes_option
from mlops_kit.workflows.backup import list_backups, run_backup
from mlops_kit.workflows.restore import drill, restore_backup
from mlops_kit.workflows.schedule import install_schedule, remove_schedule, render_schedule


@click.group(invoke_without_command=True)
@json_option
@pass_app
@click.pass_context
def backup(ctx: click.Context, app: AppContext, as_json: bool) -> None:
    """Make a backup set now (database, artifacts, manifest) in the encrypted repository.

    Subcommands: list, verify, schedule.
    """
    if ctx.invoked_subcommand is not None:
        return
    project = app.project()
    with steps("Backing up") as on_step:
        summary = run_backup(project, on_step=on_step)
    if as_json:
        print_json(summary.to_dict())
        return
    ui.success(
        f"backup {summary.set_id} (snapshot {summary.snapshot_id[:8]}): {summary.database_rows} rows, "
        f"{summary.artifact_files} artifact files ({ui.human_bytes(summary.artifact_bytes)}); "
        f"new data {ui.human_bytes(summary.data_added_bytes)}, repository {ui.human_bytes(summary.repository_bytes)}, "
        f"{summary.seconds:.1f} s" + (f"; copied to {summary.offsite}" if summary.offsite else "")
    )


@backup.command("list")
@json_option
@pass_app
def backup_list(app: AppContext, as_json: bool) -> None:
    """Show the backup sets in the repository: id, time, age, size."""
    sets = list_backups(app.project())
    if as_json:
        print_json([s.to_dict() for s in sets])
        return
    if not sets:
        ui.info("no backup sets yet (make one: mlops-kit backup)")
        return
    table = Table(title="backup sets", title_justify="left")
    for column in ("snapshot", "set", "time", "age", "size", "new data"):
        table.add_column(column)
    for s in sets:
        table.add_row(
            s.snapshot_id,
            s.set_id,
            s.time,
            ui.human_age(s.age_seconds),
            ui.human_bytes(s.size_bytes),
            ui.human_bytes(s.added_bytes),
        )
    ui.out.print(table)


@backup.command("verify")
@click.option(
    "--sample",
    type=click.IntRange(1, 10000),
    default=20,
    show_default=True,
    envvar="MLOPS_KIT_VERIFY_SAMPLE",
    help="Artifacts fetched through the MLflow API and compared. [env var: MLOPS_KIT_VERIFY_SAMPLE]",
)
@json_option
@pass_app
def backup_verify(app: AppContext, sample: int, as_json: bool) -> None:
    """Restore drill: restore the latest set into a throwaway stack, check it, remove it."""
    with steps("Restore drill") as on_step:
        report = drill(app.project(), sample=sample, on_step=on_step)
    if as_json:
        print_json(report.to_dict())
        return
    ui.success(
        f"backup set {report.set_id} restores: {report.database_rows} rows and alembic revision "
        f"{report.alembic_revision} as in its manifest, {report.artifacts_sampled} of {report.artifacts_total} "
        f"artifacts fetched through the MLflow API with matching sha256; RTO {report.rto_seconds:.0f} s"
    )


@backup.command("schedule")
@click.option(
    "--at",
    "at",
    default="02:30",
    show_default=True,
    envvar="MLOPS_KIT_BACKUP_AT",
    help="Time of the nightly backup (HH:MM, host time). [env var: MLOPS_KIT_BACKUP_AT]",
)
@click.option(
    "--verify-weekly",
    metavar="DAY",
    envvar="MLOPS_KIT_BACKUP_VERIFY_DAY",
    help="Also run the restore drill weekly on DAY (sun..sat), an hour after the backup. "
    "[env var: MLOPS_KIT_BACKUP_VERIFY_DAY]",
)
@click.option("--remove", is_flag=True, help="Take the scheduled jobs out of cron.")
@cron_dir_option
@pass_app
def backup_schedule(app: AppContext, at: str, verify_weekly: str | None, remove: bool, cron_dir: str) -> None:
    """Install (or --remove) a nightly backup in the host's cron, logging to BACKUP_DIR/logs/backup.log."""
    config = app.config()
    if remove:
        removed = remove_schedule(config, Path(cron_dir))
        ui.success(f"removed {removed}" if removed else f"no schedule was installed for stack {config.project_name}")
        return
    schedule = render_schedule(config, at, verify_day=verify_weekly, cron_dir=Path(cron_dir))
    install_schedule(schedule)
    ui.success(f"nightly backup at {at} installed in {schedule.path}; log: {schedule.log_file}")


@click.command()
@click.argument("backup_set", required=False, default="latest")
@yes_option
@json_option
@pass_app
def restore(app: AppContext, backup_set: str, yes: bool, as_json: bool) -> None:
    """Restore a backup set (default: the latest) into fresh volumes and switch the stack to it."""
    config = app.config()
    confirm(
        f"Restore backup set {backup_set} into stack {config.project_name}? The stack stops while it is "
        "switched; its current data is kept in its volumes.",
        yes=yes,
    )
    with steps("Restoring") as on_step:
        summary = restore_backup(app.project(config), backup_set, on_step=on_step)
    if as_json:
        print_json(summary.to_dict())
        return
    ui.success(
        f"restored set {summary.set_id} (snapshot {summary.snapshot_id}): {summary.database_rows} rows, "
        f"{summary.artifact_files} artifact files, in {summary.seconds:.0f} s; the stack is healthy"
    )
    if summary.previous_volumes:
        ui.info(
            "the previous data is kept in "
            + ", ".join(summary.previous_volumes)
            + " (remove when satisfied: docker volume rm "
            + " ".join(summary.previous_volumes)
            + ")"
        )
