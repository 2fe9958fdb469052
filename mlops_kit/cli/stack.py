"""init, up, build, down, status, logs: the stack's lifecycle."""

from __future__ import annotations

import contextlib
import time

import click
from rich.markup import escape
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import (
    DEFAULT_WAIT_TIMEOUT,
    AppContext,
    confirm,
    echo_dry_run,
    pass_app,
    print_json,
    progress,
    read_s3_keys_stdin,
    require_interactive,
)
from mlops_kit.cli.gc import last_gc_line
from mlops_kit.cli.monitoring import alert_lines
from mlops_kit.cli.options import S3_SETTINGS, json_option, s3_credentials_stdin_option, setting_options, yes_option
from mlops_kit.config.loader import KitConfig
from mlops_kit.engine.compose import ComposeProject, ServiceState
from mlops_kit.errors import ConfigError, KitError, StackError
from mlops_kit.services import stack_services
from mlops_kit.workflows.backup import last_success
from mlops_kit.workflows.gc import last_gc
from mlops_kit.workflows.lifecycle import (
    InitReport,
    build_images,
    collect_status,
    init_stack,
    prepare_env_file,
    start_stack,
    take_down,
)
from mlops_kit.workflows.monitoring import Alert, firing_alerts


@click.command()
@setting_options(
    "MLOPS_KIT_ARTIFACT_STORE",
    "MLOPS_KIT_BIND_ADDRESS",
    "MLOPS_KIT_PORT",
    "COMPOSE_PROJECT_NAME",
    "MLOPS_KIT_PUBLIC_HOST",
    "MLOPS_KIT_NFS_SERVER",
    "MLOPS_KIT_NFS_EXPORT",
    "MLOPS_KIT_NFS_OPTIONS",
    *S3_SETTINGS,
    "MLOPS_KIT_S3_PREFIX",
    "MLOPS_KIT_S3_CA_FILE",
    "MLOPS_KIT_S3_PRESIGNED",
)
@s3_credentials_stdin_option
@click.option(
    "--monitoring/--no-monitoring",
    default=None,
    help="Run the bundled Prometheus and Alertmanager with the kit's alert rules (MLOPS_KIT_MONITORING).",
)
@click.option(
    "--force",
    is_flag=True,
    envvar="MLOPS_KIT_FORCE",
    help="Replace an existing .env (kept as .env.bak-TIME; secrets are kept). [env var: MLOPS_KIT_FORCE]",
)
@pass_app
def init(
    app: AppContext, /, force: bool, s3_credentials_stdin: bool, monitoring: bool | None, **options: str | None
) -> None:
    """Write .env for this host and generate the secrets (mode 0600)."""
    s3_keys = read_s3_keys_stdin() if s3_credentials_stdin else None
    if monitoring is not None:
        options["monitoring"] = "true" if monitoring else "false"
    _print_init(init_stack(app.project_dir, app.env_file, options, force=force, s3_keys=s3_keys))


def _print_init(report: InitReport) -> None:
    written, config = report.written, report.config
    if written.backup:
        ui.info(f"previous configuration kept as {written.backup}")
    ui.success(f"wrote {written.env_file} (mode 0600)")
    for path in written.generated_secrets:
        ui.success(f"generated secret {path} (mode 0600)")
    for path in written.kept_secrets:
        ui.info(f"kept existing secret {path}")
    for done in report.certificates:
        ui.success(done)
    ui.info(
        f"project {config.project_name}: MLflow at {config.tracking_uri} (HTTPS), "
        f"admin user {config.admin_user}, artifacts in {config.artifact_store} store"
    )


@click.command()
@click.option(
    "--build",
    "force_build",
    is_flag=True,
    envvar="MLOPS_KIT_BUILD",
    help="Rebuild the images even if they exist. [env var: MLOPS_KIT_BUILD]",
)
@click.option(
    "--wait-timeout",
    type=click.IntRange(10, 7200),
    default=DEFAULT_WAIT_TIMEOUT,
    show_default=True,
    envvar="MLOPS_KIT_WAIT_TIMEOUT",
    help="Seconds to wait for every service to be healthy. [env var: MLOPS_KIT_WAIT_TIMEOUT]",
)
@pass_app
def up(app: AppContext, force_build: bool, wait_timeout: int) -> None:
    """Preflight, build missing images, start the stack and wait until it is healthy."""
    env_file = app.env_file
    if not env_file.exists():
        ui.info(f"no {env_file}: running init first")
    init_report, upgrades = prepare_env_file(app.project_dir, env_file)
    if init_report:
        _print_init(init_report)
    for key, value in upgrades.items():
        ui.info(f"{env_file.name}: {key}={value} (written by an older kit)")
    started = time.monotonic()
    with progress() as bar:
        task = bar.add_task("Preflight checks", total=None)

        def on_states(states: list[ServiceState]) -> None:
            if states:
                summary = ", ".join(f"{s.service}: {s.health or s.state}" for s in states)
                bar.update(task, description=f"Waiting until healthy ({summary})")

        result = start_stack(
            app.project_dir,
            env_file,
            dry_run=app.dry_run,
            wait_timeout=wait_timeout,
            force_build=force_build,
            on_step=lambda message: bar.update(task, description=message),
            on_states=on_states,
        )
    if app.dry_run:
        echo_dry_run(result.project)
        return
    assert result.project is not None
    config = result.project.config
    for done in result.prepared:
        ui.info(done)
    for check in result.preflight:
        if check.status == "warn":
            ui.warning(f"{check.name}: {check.detail}" + (f" ({check.fix})" if check.fix else ""))
    built = f"built {', '.join(result.built)} in {result.build_seconds:.0f} s, " if result.built else ""
    ui.success(
        f"stack {config.project_name} is healthy ({built}healthy {result.start_seconds:.0f} s after start, "
        f"{time.monotonic() - started:.0f} s in all)"
    )
    _print_next_steps(config)


def _print_next_steps(config: KitConfig) -> None:
    ui.out.print(f"\n  MLflow UI and tracking URI: [bold]{config.tracking_uri}[/] (login required)")
    ui.out.print(f"  Admin login: {config.admin_user}, password in {config.secrets_path / 'mlflow_admin_password'}")
    ui.out.print("  Add a data scientist: [bold]mlops-kit users add NAME[/], then hand them the output of")
    ui.out.print("    [bold]mlops-kit client-env --user NAME[/] and the CA: [bold]mlops-kit tls export-ca[/]")
    ui.out.print("  Verify end to end: [bold]mlops-kit check[/]    Status: [bold]mlops-kit status[/]\n")
    if config.bind_address.startswith("127."):
        ui.out.print(
            "  [muted]Published on this host only. To let other machines connect: "
            "mlops-kit init --force --bind-address 0.0.0.0 && mlops-kit up[/]"
        )


@click.command()
@pass_app
def build(app: AppContext) -> None:
    """Build (or refresh) the kit's images from docker/ without starting anything."""
    config = app.config()
    project = app.project(config)
    started = time.monotonic()
    with progress() as bar:
        bar.add_task("Building images (first time: a few minutes)", total=None)
        built = build_images(project)
    echo_dry_run(project)
    ui.success(f"images built in {time.monotonic() - started:.0f} s: {', '.join(built)}")


@click.command()
@click.option("--volumes", is_flag=True, help="Also delete the data volumes (database and artifacts).")
@yes_option
@pass_app
def down(app: AppContext, volumes: bool, yes: bool) -> None:
    """Stop the stack. Data is kept unless --volumes is given."""
    config = app.config()
    project = app.project(config)
    if volumes and not yes:
        require_interactive()
        names = project.volume_names()
        listed = ", ".join(names) if names else "none found"
        confirm(f"Delete ALL data of stack {config.project_name} (volumes: {listed})? This cannot be undone.", yes=yes)
    take_down(project, volumes=volumes)
    echo_dry_run(project)
    if volumes:
        ui.success(f"stack {config.project_name} removed with its data volumes")
        # An external bucket is not the stack's: deleting someone's S3 data is never implied.
        if kept := config.store.kept_on_delete(config):
            ui.info(kept)
    else:
        ui.success(f"stack {config.project_name} stopped; data kept (start again: mlops-kit up)")


@click.command()
@json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show each service's state, health, image, ports and MLflow version (exit 5 if unhealthy)."""
    project = app.project()
    result = collect_status(project)
    backup_info = last_success(project.config)
    gc_info = last_gc(project.config)
    alerts, alerts_problem = _alerts(project)
    if as_json:
        extra = {"alerts": [a.to_dict() for a in alerts] if alerts_problem is None else None}
        print_json({**result.to_dict(), "last_backup": backup_info, "last_gc": gc_info, **extra})
    else:
        table = Table(title=f"mlops-kit stack {result.project}", title_justify="left")
        for column in ("service", "state", "health", "image", "published", "version"):
            table.add_column(column)
        for s in result.services:
            style = "ok" if s.state == "running" and s.health == "healthy" else "fail"
            table.add_row(
                s.service,
                f"[{style}]{s.state}[/]",
                f"[{style}]{s.health or '-'}[/]",
                s.image or "-",
                ", ".join(s.ports) or "-",
                s.version or "-",
            )
        ui.out.print(table)
        for s in result.services:
            if s.restarts:
                why = s.restart_reason or "its process exited (see: mlops-kit logs " + s.service + ")"
                # The reason is text the service's own log holds: never read as markup.
                ui.out.print(f"[warn]{s.service} was restarted {s.restarts}x[/]; the last time: {escape(why)}")
        ui.out.print(f"tracking URI: {result.tracking_uri}")
        if backup_info:
            age = ui.human_age(time.time() - float(backup_info["finished_at"]))
            ui.out.print(f"last good backup: {age} ago (set {backup_info['set_id']})")
        else:
            ui.out.print("last good backup: none yet (mlops-kit backup)")
        ui.out.print(last_gc_line(gc_info, time.time()))
        if project.config.monitoring_on:
            if alerts_problem is None:
                for line in alert_lines(alerts, time.time()):
                    ui.out.print(line)
            else:
                ui.out.print(f"[warn]alerts: unknown ({escape(alerts_problem)})[/]")
    if not result.healthy:
        raise StackError(
            f"stack {result.project} is not healthy", hint="see: mlops-kit logs (or start it: mlops-kit up)"
        )


def _alerts(project: ComposeProject) -> tuple[list[Alert], str | None]:
    """The firing alerts (bundled monitoring), or why they are unknown; nothing when monitoring is off."""
    if not project.config.monitoring_on:
        return [], None
    try:
        return firing_alerts(project), None
    except KitError as exc:
        return [], str(exc)


@click.command()
@click.argument("services", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--tail", default="200", show_default=True, help="Lines to show from the end of each log ('all' for all)."
)
@pass_app
def logs(app: AppContext, services: tuple[str, ...], follow: bool, tail: str) -> None:
    """Show the logs of the stack's services (all, or the ones named)."""
    project = app.project()
    known = {s.name for s in stack_services(project.config)}
    for service in services:
        if service not in known:
            raise ConfigError(f"unknown service {service!r}", hint=f"use one of: {', '.join(sorted(known))}")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends `logs -f`: not an error
        project.logs(list(services), follow=follow, tail=tail)
