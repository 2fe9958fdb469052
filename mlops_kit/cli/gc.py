"""gc (and gc schedule): retention and garbage collection of deleted MLflow data."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json, steps
from mlops_kit.cli.options import cron_dir_option, json_option, yes_option
from mlops_kit.config.settings import parse_duration
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.gc import GcReport, collect_garbage
from mlops_kit.workflows.schedule import install_schedule, remove_schedule, render_gc_schedule

#: Rows of each table a human sees (the JSON output lists up to 1,000).
SHOWN = 20


def _older_than(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as problem:
        raise ConfigError(
            f"--older-than {value!r} {problem}", hint="use whole days, hours, minutes or seconds (d, h, m, s)"
        ) from None


@click.group(invoke_without_command=True)
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Remove what was deleted longer ago than this (30d, 12h, 1d12h; default from .env: 30d). "
    "[env var: MLOPS_KIT_GC_OLDER_THAN]",
)
@click.option(
    "--retention-days",
    type=click.IntRange(0, 36500),
    help="First soft-delete finished runs older than this many days (0: off; default from .env). "
    "An experiment's tag mlops-kit.retention-days wins. [env var: MLOPS_KIT_RETENTION_DAYS]",
)
@click.option("--no-retention", is_flag=True, help="Skip the retention step (no run is soft-deleted).")
@click.option(
    "--dry-run", "list_only", is_flag=True, help="List what would be soft-deleted and removed; change nothing."
)
@yes_option
@json_option
@pass_app
@click.pass_context
def gc(
    ctx: click.Context,
    app: AppContext,
    older_than: str | None,
    retention_days: int | None,
    no_retention: bool,
    list_only: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Permanently remove deleted experiments, runs, logged models and trace artifacts, with their artifacts.

    Only what has been deleted longer than --older-than goes; what a registered model
    version needs stays (and is listed). With retention on, finished runs past it are
    soft-deleted first and wait out the same grace period. Subcommand: schedule.
    """
    if ctx.invoked_subcommand is not None:
        return
    config = app.config()
    seconds = _older_than(older_than)
    grace = config.gc_older_than_seconds if seconds is None else seconds
    days = config.retention_days if retention_days is None else retention_days
    dry_run = list_only or app.dry_run
    if not dry_run:
        confirm(
            f"Permanently remove from stack {config.project_name} what was deleted more than "
            f"{ui.human_age(grace)} ago, with its artifacts"
            + ("" if no_retention else ", after soft-deleting finished runs past their retention (if any is set)")
            + "? (See first: mlops-kit gc --dry-run)",
            yes=yes,
        )
    with steps("Collecting garbage" if not dry_run else "Listing garbage") as on_step:
        report = collect_garbage(
            app.project(config),
            older_than_seconds=grace,
            retention_days=days,
            retention=not no_retention,
            dry_run=dry_run,
            on_step=on_step,
        )
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    report.raise_if_incomplete()


def _print_report(report: GcReport) -> None:
    removed = report.removed
    if report.retention_listed or report.retention_kept:
        _table(
            f"retention: {report.retention_runs} finished run(s) {'would be' if report.dry_run else 'were'} "
            "soft-deleted",
            ("run", "experiment", "days"),
            ([r["run_id"], r["experiment_id"], str(r["days"])] for r in report.retention_listed),
            report.retention_runs,
        )
        _table(
            "retention keeps",
            ("run", "experiment", "why"),
            ([r["run_id"], r["experiment_id"], r.get("reason", "")] for r in report.retention_kept),
            len(report.retention_kept),
        )
    for ignored in report.retention_ignored:
        # Tag values and URIs come from the database: never read as markup.
        ui.warning(
            escape(
                f"experiment {ignored['experiment_id']}: {ignored['reason']} ({ignored['value']!r}): no retention there"
            )
        )
    _table(
        "removed" if not report.dry_run else "would be removed",
        ("kind", "id", "experiment", "size"),
        ([i["kind"], i["id"], i["experiment_id"], ui.human_bytes(int(i["bytes"]))] for i in report.items),
        sum(int(removed.get(kind, 0)) for kind in ("experiments", "runs", "logged_models", "trace_artifact_folders")),
    )
    _table(
        "kept",
        ("kind", "id", "experiment", "why"),
        ([k["kind"], k["id"], k["experiment_id"], k["reason"]] for k in report.kept),
        report.kept_count,
    )
    for note in report.notes:
        ui.info(escape(note))
    summary = (
        f"{removed.get('experiments', 0)} experiment(s), {removed.get('runs', 0)} run(s), "
        f"{removed.get('logged_models', 0)} logged model(s), {removed.get('traces', 0)} trace(s) and the "
        f"artifacts of {removed.get('trace_artifact_folders', 0)} deleted trace(s): "
        f"{removed.get('files', 0)} files, {ui.human_bytes(report.bytes_freed)}"
    )
    if report.dry_run:
        ui.info(f"dry run: would remove {summary}; nothing was changed")
    else:
        ui.success(f"removed {summary} freed, in {report.finished_at - report.started_at:.1f} s")


def _table(title: str, columns: tuple[str, ...], rows: Iterable[list[str]], total: int) -> None:
    shown = list(rows)[:SHOWN]
    if not shown:
        return
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in shown:
        # Ids and reasons come from the database: never read as markup.
        table.add_row(*(escape(str(cell)) for cell in row))
    ui.out.print(table)
    if total > len(shown):
        ui.info(f"... and {total - len(shown)} more (all of them: --json)")


@gc.command("schedule")
@click.option(
    "--at",
    "at",
    default="03:30",
    show_default=True,
    envvar="MLOPS_KIT_GC_AT",
    help="Time of the nightly gc (HH:MM, host time). [env var: MLOPS_KIT_GC_AT]",
)
@click.option("--remove", is_flag=True, help="Take the scheduled gc out of cron.")
@cron_dir_option
@pass_app
def gc_schedule(app: AppContext, at: str, remove: bool, cron_dir: str) -> None:
    """Install (or --remove) a nightly gc in the host's cron, logging to BACKUP_DIR/logs/gc.log."""
    config = app.config()
    if remove:
        removed = remove_schedule(config, Path(cron_dir), "gc")
        ui.success(f"removed {removed}" if removed else f"no gc schedule was installed for stack {config.project_name}")
        return
    schedule = render_gc_schedule(config, at, cron_dir=Path(cron_dir))
    install_schedule(schedule)
    retention = f", retention {config.retention_days} days" if config.retention_days else ""
    ui.success(
        f"nightly gc at {at} installed in {schedule.path} (grace period {ui.human_age(config.gc_older_than_seconds)}"
        f"{retention}, from .env at each run); log: {schedule.log_file}"
    )


def last_gc_line(info: dict[str, Any] | None, now: float) -> str:
    """`status`'s line about the last gc."""
    if not info:
        return "last gc: never (mlops-kit gc; nightly: mlops-kit gc schedule)"
    removed = info.get("removed") or {}
    age = ui.human_age(now - float(info.get("finished_at", now)))
    return (
        f"last gc: {age} ago, freed {ui.human_bytes(int(info.get('bytes_freed', 0)))} "
        f"({removed.get('runs', 0)} runs, {removed.get('experiments', 0)} experiments, "
        f"{removed.get('logged_models', 0)} logged models; retention soft-deleted "
        f"{(info.get('retention') or {}).get('runs', 0)} runs)"
    )
