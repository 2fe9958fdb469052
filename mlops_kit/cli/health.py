"""check, client-env, doctor: does it work, how do clients reach it, what is wrong with the host."""

from __future__ import annotations

import shlex

import click
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, pass_app, print_json, progress
from mlops_kit.cli.options import json_option
from mlops_kit.config.secrets import read_secret
from mlops_kit.errors import PreflightError
from mlops_kit.services.metrics import SCRAPE_PASSWORD_FILE
from mlops_kit.workflows.doctor import diagnose
from mlops_kit.workflows.lifecycle import require_running
from mlops_kit.workflows.smoke import run_smoke_check
from mlops_kit.workflows.tls import client_ca_path
from mlops_kit.workflows.users import admin_access, client_variables


@click.command()
@json_option
@pass_app
def check(app: AppContext, as_json: bool) -> None:
    """End-to-end smoke test through the MLflow API (exit 6 names the failing step)."""
    config = app.config()
    require_running(app.project(config))
    with progress() as bar:
        task = bar.add_task("connect", total=None)
        steps = run_smoke_check(
            admin_access(config),
            on_step=lambda name: bar.update(task, description=name),
            metrics_password=read_secret(config.secrets_path, SCRAPE_PASSWORD_FILE),
        )
    if as_json:
        print_json({"ok": True, "tracking_uri": config.local_url, "steps": [s.to_dict() for s in steps]})
        return
    for s in steps:
        detail = f"  [muted]{s.detail}[/]" if s.detail else ""
        ui.out.print(f"[ok]✓[/] {s.name:<18} {s.seconds * 1000:7.0f} ms{detail}")
    ui.success(f"MLflow at {config.local_url} works end to end")


@click.command("client-env")
@click.option(
    "--user",
    "username",
    envvar="MLOPS_KIT_CLIENT_USER",
    help="Include this user's login (the password the kit stored for it). [env var: MLOPS_KIT_CLIENT_USER]",
)
@click.option(
    "--shell",
    type=click.Choice(["sh", "fish", "dotenv", "json"]),
    default="sh",
    show_default=True,
    help="Syntax of the printed lines.",
)
@pass_app
def client_env(app: AppContext, username: str | None, shell: str) -> None:
    """Print the variables a data scientist needs: eval "$(mlops-kit client-env --user NAME)".

    MLFLOW_TRACKING_SERVER_CERT_PATH names this host's copy of the CA: on another
    machine, copy that file (mlops-kit tls export-ca) and adjust the path.
    """
    config = app.config()
    if username:
        variables = client_variables(config, username)
    else:
        variables = {"MLFLOW_TRACKING_URI": config.tracking_uri}
        ca = client_ca_path(config)
        if ca is not None:
            variables["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(ca)
    if shell == "json":
        print_json(variables)
        return
    for name, value in variables.items():
        if shell == "fish":
            click.echo(f"set -gx {name} {shlex.quote(value)};")
        elif shell == "dotenv":
            click.echo(f"{name}={value}")
        else:
            click.echo(f"export {name}={shlex.quote(value)}")


@click.command()
@click.option(
    "--fix-indexes",
    is_flag=True,
    envvar="MLOPS_KIT_FIX_INDEXES",
    help="Build the database indexes MLflow's schema declares but the database lacks "
    "(CREATE INDEX CONCURRENTLY: the server keeps running). [env var: MLOPS_KIT_FIX_INDEXES]",
)
@json_option
@pass_app
def doctor(app: AppContext, fix_indexes: bool, as_json: bool) -> None:
    """Check the host and, when the stack runs, its database; each failure comes with its fix (exit 3 if any fails)."""
    if not app.env_file.exists():
        ui.warning(f"no {app.env_file} yet: checking with defaults (run mlops-kit init)")
    report = diagnose(app.project_dir, app.env_file, dry_run=app.dry_run, fix_indexes=fix_indexes)
    if report.built_indexes and not as_json:
        ui.success(f"built {len(report.built_indexes)} index(es): {', '.join(report.built_indexes)}")
    if as_json:
        print_json({"ok": report.ok, "checks": [r.to_dict() for r in report.results]})
    else:
        table = Table(title="mlops-kit doctor", title_justify="left")
        for column in ("check", "result", "detail", "fix"):
            table.add_column(column)
        for r in report.results:
            table.add_row(r.name, f"[{r.status}]{r.status}[/]", r.detail, r.fix or "")
        ui.out.print(table)
    if report.failed:
        first = report.failed[0]
        raise PreflightError(
            f"{len(report.failed)} check(s) failed, first: {first.name}: {first.detail}", hint=first.fix or None
        )
