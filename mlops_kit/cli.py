"""The `mlops-kit` command line. Commands are thin: parse, build a config, call the core.

Only this module prints errors and chooses exit codes:
0 ok · 1 failure · 2 bad configuration or usage · 3 host not ready (preflight)
4 an external command failed · 5 stack not running or unhealthy · 6 smoke check failed
7 backup/restore failed or refused · 8 another backup or restore is running
9 a user or permission change failed (MLflow refused it, or the admin login failed)
10 a benchmark could not run
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlops_kit import MLFLOW_VERSION, __version__
from mlops_kit import console as ui
from mlops_kit.backup import last_success, list_backups, run_backup
from mlops_kit.bench import BenchSizes, bench_kit_stack, summary_rows
from mlops_kit.compose import ComposeProject, ServiceState
from mlops_kit.config import (
    ARTIFACT_STORES,
    S3_ADDRESSING_STYLES,
    SETTINGS,
    SETTINGS_BY_ENV,
    KitConfig,
    find_project_dir,
    load_config,
)
from mlops_kit.envfile import init_env_file, upgrade_env_file, write_s3_keys
from mlops_kit.errors import AbortedError, ConfigError, KitError, PreflightError, StackError
from mlops_kit.indexes import index_check, run_index_probe
from mlops_kit.migrate import describe, migrate_artifacts, plan_target
from mlops_kit.preflight import FAIL, Preflight
from mlops_kit.restore import drill, restore_backup
from mlops_kit.runner import CommandRunner
from mlops_kit.schedule import DEFAULT_CRON_DIR, install_schedule, remove_schedule, render_schedule
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.services.s3 import store_check_result
from mlops_kit.smoke import run_smoke_check
from mlops_kit.stack import bring_up, build_images, collect_status, require_running, restart_proxy, take_down
from mlops_kit.tls import client_ca_path, ensure_certificates, read_certificate, rotate_ca, uses_kit_ca
from mlops_kit.users import GRANTABLE, RESOURCE_TYPES, UserAdmin, admin_access, client_variables

logger = logging.getLogger("mlops_kit.cli")

DEFAULT_WAIT_TIMEOUT = 600
#: `artifacts migrate --to`: nfs is a volume mode set up with init (its export is the operator's).
ARTIFACT_STORE_TARGETS = ("volume", "minio", "s3")


@dataclass
class AppContext:
    """What the group's options resolve to, shared by every command."""

    project_dir_option: str | None
    env_file_option: str | None
    dry_run: bool

    @property
    def project_dir(self) -> Path:
        return find_project_dir(self.project_dir_option)

    @property
    def env_file(self) -> Path:
        if self.env_file_option:
            return Path(self.env_file_option).expanduser().resolve()
        return self.project_dir / ".env"

    def config(self) -> KitConfig:
        return load_config(self.project_dir, self.env_file)

    def project(self, config: KitConfig | None = None) -> ComposeProject:
        config = config or self.config()
        return ComposeProject(config, CommandRunner(dry_run=self.dry_run, cwd=config.project_dir))


pass_app = click.make_pass_decorator(AppContext)


def _setting_help(env: str, text: str | None = None) -> str:
    setting = SETTINGS_BY_ENV[env]
    return f"{text or setting.help} [env var: {env}]"


def _json_option(func: Any) -> Any:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="MLOPS_KIT_JSON",
        help="Print machine-readable JSON. [env var: MLOPS_KIT_JSON]",
    )(func)


def _yes_option(func: Any) -> Any:
    return click.option(
        "--yes",
        "-y",
        is_flag=True,
        envvar="MLOPS_KIT_YES",
        help="Do not ask for confirmation. [env var: MLOPS_KIT_YES]",
    )(func)


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--project-dir",
    envvar="MLOPS_KIT_PROJECT_DIR",
    type=click.Path(file_okay=False),
    help="Folder with compose.yaml (default: current folder, else the kit's checkout). "
    "[env var: MLOPS_KIT_PROJECT_DIR]",
)
@click.option(
    "--env-file",
    envvar="MLOPS_KIT_ENV_FILE",
    type=click.Path(dir_okay=False),
    help="Configuration file (default: PROJECT_DIR/.env). [env var: MLOPS_KIT_ENV_FILE]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="MLOPS_KIT_DRY_RUN",
    help="Print the commands that would change something instead of running them. [env var: MLOPS_KIT_DRY_RUN]",
)
@click.option("-v", "--verbose", count=True, help="-v: progress details; -vv: every command run (secrets masked).")
@click.version_option(__version__, prog_name="mlops-kit", message=f"%(prog)s %(version)s (MLflow {MLFLOW_VERSION})")
@click.pass_context
def cli(ctx: click.Context, project_dir: str | None, env_file: str | None, dry_run: bool, verbose: int) -> None:
    """Run a production-grade MLflow (tracking, model registry, artifacts) on this host."""
    ui.setup_logging(verbose)
    ctx.obj = AppContext(project_dir_option=project_dir, env_file_option=env_file, dry_run=dry_run)


# ---- init ---------------------------------------------------------------------------


@cli.command()
@click.option("--artifact-store", type=click.Choice(ARTIFACT_STORES), help=_setting_help("MLOPS_KIT_ARTIFACT_STORE"))
@click.option("--bind-address", help=_setting_help("MLOPS_KIT_BIND_ADDRESS"))
@click.option("--port", help=_setting_help("MLOPS_KIT_PORT"))
@click.option("--project-name", help=_setting_help("COMPOSE_PROJECT_NAME"))
@click.option("--public-host", help=_setting_help("MLOPS_KIT_PUBLIC_HOST"))
@click.option("--nfs-server", help=_setting_help("MLOPS_KIT_NFS_SERVER"))
@click.option("--nfs-export", help=_setting_help("MLOPS_KIT_NFS_EXPORT"))
@click.option("--nfs-options", help=_setting_help("MLOPS_KIT_NFS_OPTIONS"))
@click.option("--s3-endpoint-url", help=_setting_help("MLOPS_KIT_S3_ENDPOINT_URL"))
@click.option("--s3-bucket", help=_setting_help("MLOPS_KIT_S3_BUCKET"))
@click.option("--s3-prefix", help=_setting_help("MLOPS_KIT_S3_PREFIX"))
@click.option("--s3-region", help=_setting_help("MLOPS_KIT_S3_REGION"))
@click.option("--s3-addressing", type=click.Choice(S3_ADDRESSING_STYLES), help=_setting_help("MLOPS_KIT_S3_ADDRESSING"))
@click.option("--s3-ca-file", help=_setting_help("MLOPS_KIT_S3_CA_FILE"))
@click.option("--s3-network", help=_setting_help("MLOPS_KIT_S3_NETWORK"))
@click.option("--s3-presigned", type=click.Choice(["true", "false"]), help=_setting_help("MLOPS_KIT_S3_PRESIGNED"))
@click.option(
    "--s3-credentials-stdin",
    is_flag=True,
    help="Read the S3 access key id and secret key from stdin, one per line, into secrets/s3_access_key_id "
    "and secrets/s3_secret_access_key (mode 0600; never taken as arguments).",
)
@click.option(
    "--force",
    is_flag=True,
    envvar="MLOPS_KIT_FORCE",
    help="Replace an existing .env (kept as .env.bak-TIME; secrets are kept). [env var: MLOPS_KIT_FORCE]",
)
@pass_app
def init(app: AppContext, /, force: bool, s3_credentials_stdin: bool, **options: str | None) -> None:
    """Write .env for this host and generate the secrets (mode 0600)."""
    _init(app, options, force=force, s3_keys=_read_s3_keys_stdin() if s3_credentials_stdin else None)


def _read_s3_keys_stdin() -> tuple[str, str]:
    lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if len(lines) != 2:
        raise ConfigError(
            f"--s3-credentials-stdin expects 2 lines on stdin (access key id, then secret key), got {len(lines)}",
            hint='printf \'%s\\n%s\\n\' "$KEY_ID" "$SECRET" | mlops-kit init ... --s3-credentials-stdin',
        )
    return lines[0], lines[1]


def _init(
    app: AppContext, options: dict[str, str | None], *, force: bool, s3_keys: tuple[str, str] | None = None
) -> KitConfig:
    choices = _choices_from_options(options)
    project_dir = app.project_dir
    result = init_env_file(project_dir, choices, env_file=app.env_file, force=force, s3_keys=s3_keys)
    if result.backup:
        ui.info(f"previous configuration kept as {result.backup}")
    # Validate what was written (and the environment on top of it) right away.
    config = load_config(project_dir, result.env_file)
    ui.success(f"wrote {result.env_file} (mode 0600)")
    for path in result.generated_secrets:
        ui.success(f"generated secret {path} (mode 0600)")
    for path in result.kept_secrets:
        ui.info(f"kept existing secret {path}")
    for done in ensure_certificates(config):
        ui.success(done)
    ui.info(
        f"project {config.project_name}: MLflow at {config.tracking_uri} (HTTPS), "
        f"admin user {config.admin_user}, artifacts in {config.artifact_store} store"
    )
    return config


_OPTION_SETTINGS = {
    "artifact_store": "MLOPS_KIT_ARTIFACT_STORE",
    "bind_address": "MLOPS_KIT_BIND_ADDRESS",
    "port": "MLOPS_KIT_PORT",
    "project_name": "COMPOSE_PROJECT_NAME",
    "public_host": "MLOPS_KIT_PUBLIC_HOST",
    "nfs_server": "MLOPS_KIT_NFS_SERVER",
    "nfs_export": "MLOPS_KIT_NFS_EXPORT",
    "nfs_options": "MLOPS_KIT_NFS_OPTIONS",
    "s3_endpoint_url": "MLOPS_KIT_S3_ENDPOINT_URL",
    "s3_bucket": "MLOPS_KIT_S3_BUCKET",
    "s3_prefix": "MLOPS_KIT_S3_PREFIX",
    "s3_region": "MLOPS_KIT_S3_REGION",
    "s3_addressing": "MLOPS_KIT_S3_ADDRESSING",
    "s3_ca_file": "MLOPS_KIT_S3_CA_FILE",
    "s3_network": "MLOPS_KIT_S3_NETWORK",
    "s3_presigned": "MLOPS_KIT_S3_PRESIGNED",
}


def _choices_from_options(options: dict[str, str | None]) -> dict[str, str | None]:
    """What init writes: its options, else the settings given in the environment.

    Validated before anything is written, so a bad value leaves no file behind.
    """
    choices: dict[str, str | None] = {}
    for env, from_environment in os.environ.items():
        if env in SETTINGS_BY_ENV:
            _validate_choice(env, from_environment, f"{env} (from the environment)", f"fix or unset {env}")
            choices[env] = from_environment
    for option, value in options.items():
        if value is None:
            continue
        env = _OPTION_SETTINGS[option]
        flag = "--" + option.replace("_", "-")
        _validate_choice(env, value, flag, f"fix {flag} ({env})")
        choices[env] = value
    return choices


def _validate_choice(env: str, value: str, shown_as: str, hint: str) -> None:
    try:
        SETTINGS_BY_ENV[env].parse(value)
    except ValueError as exc:
        raise ConfigError(f"{shown_as} {value!r} {exc}", hint=hint) from None


# ---- up / down ------------------------------------------------------------------------


@cli.command()
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
    if not app.env_file.exists():
        ui.info(f"no {app.env_file}: running init first")
        config = _init(app, {}, force=False)
    else:
        for key, value in upgrade_env_file(app.env_file).items():
            ui.info(f"{app.env_file.name}: {key}={value} (written by an older kit)")
        config = app.config()
    project = app.project(config)
    started = time.monotonic()
    with _progress() as progress:
        task = progress.add_task("Preflight checks", total=None)

        def on_step(message: str) -> None:
            progress.update(task, description=message)

        def on_states(states: list[ServiceState]) -> None:
            if states:
                summary = ", ".join(f"{s.service}: {s.health or s.state}" for s in states)
                progress.update(task, description=f"Waiting until healthy ({summary})")

        result = bring_up(
            project, wait_timeout=wait_timeout, force_build=force_build, on_step=on_step, on_states=on_states
        )
    if app.dry_run:
        for line in project.runner.dry_run_log:
            click.echo(line)
        return
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


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=ui.err, transient=True
    )


@cli.command()
@pass_app
def build(app: AppContext) -> None:
    """Build (or refresh) the kit's images from docker/ without starting anything."""
    config = app.config()
    project = app.project(config)
    started = time.monotonic()
    with _progress() as progress:
        progress.add_task("Building images (first time: a few minutes)", total=None)
        built = build_images(project)
    _echo_dry_run(project)
    ui.success(f"images built in {time.monotonic() - started:.0f} s: {', '.join(built)}")


@cli.command()
@click.option("--volumes", is_flag=True, help="Also delete the data volumes (database and artifacts).")
@_yes_option
@pass_app
def down(app: AppContext, volumes: bool, yes: bool) -> None:
    """Stop the stack. Data is kept unless --volumes is given."""
    config = app.config()
    project = app.project(config)
    if volumes and not yes:
        _require_interactive()
        names = project.volume_names()
        listed = ", ".join(names) if names else "none found"
        _confirm(f"Delete ALL data of stack {config.project_name} (volumes: {listed})? This cannot be undone.")
    take_down(project, volumes=volumes)
    _echo_dry_run(project)
    if volumes:
        ui.success(f"stack {config.project_name} removed with its data volumes")
        if config.artifact_store == "s3":
            # The bucket is not the stack's: deleting someone's S3 data is never implied.
            ui.info(f"the artifacts in s3://{config.s3_bucket}/{config.s3_prefix} are kept (an external bucket)")
    else:
        ui.success(f"stack {config.project_name} stopped; data kept (start again: mlops-kit up)")


def _require_interactive() -> None:
    if not sys.stdin.isatty():
        raise AbortedError(
            "refusing to delete data without confirmation", hint="pass --yes to confirm non-interactively"
        )


def _confirm(question: str) -> None:
    if not click.confirm(question, default=False, err=True):
        raise AbortedError("cancelled; nothing was deleted")


def _echo_dry_run(project: ComposeProject) -> None:
    for line in project.runner.dry_run_log:
        click.echo(line)


# ---- status / logs -------------------------------------------------------------------------


@cli.command()
@_json_option
@pass_app
def status(app: AppContext, as_json: bool) -> None:
    """Show each service's state, health, image, ports and MLflow version (exit 5 if unhealthy)."""
    project = app.project()
    result = collect_status(project)
    backup_info = last_success(project.config)
    if as_json:
        _print_json({**result.to_dict(), "last_backup": backup_info})
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
        ui.out.print(f"tracking URI: {result.tracking_uri}")
        if backup_info:
            age = ui.human_age(time.time() - float(backup_info["finished_at"]))
            ui.out.print(f"last good backup: {age} ago (set {backup_info['set_id']})")
        else:
            ui.out.print("last good backup: none yet (mlops-kit backup)")
    if not result.healthy:
        raise StackError(
            f"stack {result.project} is not healthy", hint="see: mlops-kit logs (or start it: mlops-kit up)"
        )


@cli.command()
@click.argument("services", nargs=-1)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option(
    "--tail", default="200", show_default=True, help="Lines to show from the end of each log ('all' for all)."
)
@pass_app
def logs(app: AppContext, services: tuple[str, ...], follow: bool, tail: str) -> None:
    """Show the logs of the stack's services (all, or the ones named)."""
    from mlops_kit.services import stack_services

    project = app.project()
    known = {s.name for s in stack_services(project.config)}
    for service in services:
        if service not in known:
            raise ConfigError(f"unknown service {service!r}", hint=f"use one of: {', '.join(sorted(known))}")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends `logs -f`: not an error
        project.logs(list(services), follow=follow, tail=tail)


# ---- check / client-env / doctor -----------------------------------------------------------


@cli.command()
@_json_option
@pass_app
def check(app: AppContext, as_json: bool) -> None:
    """End-to-end smoke test through the MLflow API (exit 6 names the failing step)."""
    config = app.config()
    require_running(app.project(config))
    with _progress() as progress:
        task = progress.add_task("connect", total=None)
        steps = run_smoke_check(admin_access(config), on_step=lambda name: progress.update(task, description=name))
    if as_json:
        _print_json({"ok": True, "tracking_uri": config.local_url, "steps": [s.to_dict() for s in steps]})
        return
    for s in steps:
        detail = f"  [muted]{s.detail}[/]" if s.detail else ""
        ui.out.print(f"[ok]✓[/] {s.name:<18} {s.seconds * 1000:7.0f} ms{detail}")
    ui.success(f"MLflow at {config.local_url} works end to end")


@cli.command("client-env")
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
        _print_json(variables)
        return
    for name, value in variables.items():
        if shell == "fish":
            click.echo(f"set -gx {name} {shlex.quote(value)};")
        elif shell == "dotenv":
            click.echo(f"{name}={value}")
        else:
            click.echo(f"export {name}={shlex.quote(value)}")


@cli.command()
@click.option(
    "--fix-indexes",
    is_flag=True,
    envvar="MLOPS_KIT_FIX_INDEXES",
    help="Build the database indexes MLflow's schema declares but the database lacks "
    "(CREATE INDEX CONCURRENTLY: the server keeps running). [env var: MLOPS_KIT_FIX_INDEXES]",
)
@_json_option
@pass_app
def doctor(app: AppContext, fix_indexes: bool, as_json: bool) -> None:
    """Check the host and, when the stack runs, its database; each failure comes with its fix (exit 3 if any fails)."""
    project_dir = app.project_dir
    config = load_config(project_dir, app.env_file, require_env_file=False) if app.env_file.exists() else None
    if config is None:
        ui.warning(f"no {app.env_file} yet: checking with defaults (run mlops-kit init)")
        config = _default_config(project_dir, app.env_file)
    project = app.project(config)
    results = Preflight(project).run()
    try:
        stack_running = project.is_running(MLFLOW.name)
    except KitError:  # the engine is down: the preflight lines above say so
        stack_running = False
    engine_up = any(r.name == "Docker engine" and r.status != FAIL for r in results)
    if config.uses_bucket and engine_up:
        results.append(store_check_result(project))
    if stack_running:
        if fix_indexes:
            built = run_index_probe(project, create=True).created
            if built and not as_json:
                ui.success(f"built {len(built)} index(es): {', '.join(built)}")
        results.append(index_check(run_index_probe(project)))
    elif fix_indexes:
        raise StackError("--fix-indexes needs the running stack", hint="start it: mlops-kit up")
    if as_json:
        _print_json({"ok": all(r.status != FAIL for r in results), "checks": [r.to_dict() for r in results]})
    else:
        table = Table(title="mlops-kit doctor", title_justify="left")
        for column in ("check", "result", "detail", "fix"):
            table.add_column(column)
        for r in results:
            table.add_row(r.name, f"[{r.status}]{r.status}[/]", r.detail, r.fix or "")
        ui.out.print(table)
    failed = [r for r in results if r.status == FAIL]
    if failed:
        first = failed[0]
        raise PreflightError(
            f"{len(failed)} check(s) failed, first: {first.name}: {first.detail}", hint=first.fix or None
        )


def _default_config(project_dir: Path, env_file: Path) -> KitConfig:
    """A config from defaults only, for doctor before init (checking the host needs no secrets)."""
    values = {s.env: s.parse(s.default) for s in SETTINGS}
    return KitConfig(
        project_dir=project_dir,
        env_file=env_file,
        postgres_password="",
        **{SETTINGS_BY_ENV[env].attr: value for env, value in values.items()},
    )


# ---- bench ------------------------------------------------------------------------------------


def _artifact_sizes(_: click.Context, __: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        sizes = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of megabytes, such as 100,5120") from None
    if any(size < 0 for size in sizes):
        raise click.BadParameter("sizes are megabytes, 0 or more")
    return tuple(size for size in sizes if size > 0)


@cli.command()
@click.option(
    "--quick",
    is_flag=True,
    envvar="MLOPS_KIT_BENCH_QUICK",
    help="A run of a minute or two with small sizes. [env var: MLOPS_KIT_BENCH_QUICK]",
)
@click.option(
    "--log-metric-calls",
    type=click.IntRange(10),
    envvar="MLOPS_KIT_BENCH_LOG_METRIC_CALLS",
    help="Timed log_metric calls (default 500). [env var: MLOPS_KIT_BENCH_LOG_METRIC_CALLS]",
)
@click.option(
    "--batch-calls",
    type=click.IntRange(1),
    envvar="MLOPS_KIT_BENCH_BATCH_CALLS",
    help="log_batch calls of 100 metrics (default 400). [env var: MLOPS_KIT_BENCH_BATCH_CALLS]",
)
@click.option(
    "--threads",
    type=click.IntRange(1, 64),
    envvar="MLOPS_KIT_BENCH_THREADS",
    help="Client threads for log_batch and the search_runs data (default 8). [env var: MLOPS_KIT_BENCH_THREADS]",
)
@click.option(
    "--search-runs",
    type=click.IntRange(1),
    envvar="MLOPS_KIT_BENCH_SEARCH_RUNS",
    help="Runs (20 metrics, 20 params each) to search over (default 10000). [env var: MLOPS_KIT_BENCH_SEARCH_RUNS]",
)
@click.option(
    "--artifact-mb",
    callback=_artifact_sizes,
    envvar="MLOPS_KIT_BENCH_ARTIFACT_MB",
    help="Artifact sizes in MB, comma-separated; 0 for none (default 100,5120). [env var: MLOPS_KIT_BENCH_ARTIFACT_MB]",
)
@click.option(
    "--warmup-seconds",
    type=click.FloatRange(0, 600),
    envvar="MLOPS_KIT_BENCH_WARMUP_SECONDS",
    help="Exercise the server this long before measuring (default 30). [env var: MLOPS_KIT_BENCH_WARMUP_SECONDS]",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    envvar="MLOPS_KIT_BENCH_WORKDIR",
    help="Where the artifact files are written and read back (default: a new folder in the system's "
    "temp dir). [env var: MLOPS_KIT_BENCH_WORKDIR]",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    envvar="MLOPS_KIT_BENCH_OUTPUT",
    help="Also write the JSON result to this file. [env var: MLOPS_KIT_BENCH_OUTPUT]",
)
@_json_option
@pass_app
def bench(
    app: AppContext,
    quick: bool,
    log_metric_calls: int | None,
    batch_calls: int | None,
    threads: int | None,
    search_runs: int | None,
    artifact_mb: tuple[int, ...] | None,
    warmup_seconds: float | None,
    workdir: str | None,
    output: str | None,
    as_json: bool,
) -> None:
    """Measure the running stack through the MLflow client, as a data scientist reaches it.

    Latency of log_metric, log_batch throughput against PostgreSQL's raw insert rate,
    search_runs over many runs, artifact transfer against a plain disk copy, idle memory.
    It logs in as a temporary user (removed afterwards), writes into experiments named
    mlops-kit-bench-* and deletes them and their artifacts at the end. Not a test: it
    asserts nothing. docs/performance.md explains the figures.
    """
    config = app.config()
    project = app.project(config)
    require_running(project)
    sizes = BenchSizes.quick() if quick else BenchSizes()
    sizes = dataclasses.replace(
        sizes,
        log_metric_calls=log_metric_calls or sizes.log_metric_calls,
        batch_calls=batch_calls or sizes.batch_calls,
        threads=threads or sizes.threads,
        search_runs=search_runs or sizes.search_runs,
        artifact_mb=sizes.artifact_mb if artifact_mb is None else artifact_mb,
        warmup_seconds=sizes.warmup_seconds if warmup_seconds is None else warmup_seconds,
    )
    with contextlib.ExitStack() as stack:
        folder = (
            Path(workdir)
            if workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-kit-bench-")))
        )
        with _progress() as progress:
            task = progress.add_task("starting", total=None)
            result = bench_kit_stack(
                project, sizes, folder, progress=lambda what: progress.update(task, description=what)
            )
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        _print_json(result)
        return
    table = Table(title=f"mlops-kit bench: {config.local_url}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure, value in summary_rows(result):
        table.add_row(measure, value)
    ui.out.print(table)


# ---- users / tls -----------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Manage MLflow users and their permissions (through MLflow's auth API, as the admin)."""


def _read_password_stdin(password_stdin: bool) -> str | None:
    """A password piped on stdin (never on the command line, where `ps` would show it)."""
    if not password_stdin:
        return None
    password = sys.stdin.readline().strip()
    if not password:
        raise ConfigError("--password-stdin was given but stdin had no password", hint="pipe the password in")
    return password


_password_stdin_option = click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from stdin instead of generating one (it is never taken as an argument).",
)


@users.command("add")
@click.argument("username")
@click.option("--admin", is_flag=True, help="Make the user an MLflow admin (every permission).")
@_password_stdin_option
@pass_app
def users_add(app: AppContext, username: str, admin: bool, password_stdin: bool) -> None:
    """Create USERNAME with a generated password (stored in secrets/users/USERNAME, mode 0600)."""
    config = app.config()
    path = UserAdmin(config).add(username, admin=admin, password=_read_password_stdin(password_stdin))
    ui.success(f"user {username} created{' (admin)' if admin else ''}; password stored in {path} (mode 0600)")
    ui.info(f"give them: mlops-kit client-env --user {username}  (and the CA: mlops-kit tls export-ca)")


@users.command("list")
@_json_option
@pass_app
def users_list(app: AppContext, as_json: bool) -> None:
    """List MLflow's users."""
    found = UserAdmin(app.config()).list_users()
    if as_json:
        _print_json([u.to_dict() for u in found])
        return
    table = Table(title="MLflow users", title_justify="left")
    for column in ("user", "admin", "password stored by the kit"):
        table.add_column(column)
    for u in found:
        table.add_row(u.username, "yes" if u.is_admin else "", "yes" if u.password_stored else "")
    ui.out.print(table)


@users.command("passwd")
@click.argument("username")
@_password_stdin_option
@pass_app
def users_passwd(app: AppContext, username: str, password_stdin: bool) -> None:
    """Give USERNAME a new password (generated unless piped in) and store it."""
    config = app.config()
    path = UserAdmin(config).set_password(username, _read_password_stdin(password_stdin))
    ui.success(f"password of {username} changed; stored in {path} (mode 0600)")


@users.command("remove")
@click.argument("username")
@_yes_option
@pass_app
def users_remove(app: AppContext, username: str, yes: bool) -> None:
    """Delete USERNAME from MLflow (their experiments and runs stay)."""
    config = app.config()
    if not yes:
        _require_interactive()
        _confirm(f"Delete MLflow user {username}? Their experiments and runs stay.")
    UserAdmin(config).remove(username)
    ui.success(f"user {username} removed")


_kind_argument = click.argument("kind", type=click.Choice(sorted(RESOURCE_TYPES)))


@users.command("grant")
@click.argument("username")
@click.argument("permission", type=click.Choice(GRANTABLE, case_sensitive=False))
@_kind_argument
@click.argument("target")
@pass_app
def users_grant(app: AppContext, username: str, permission: str, kind: str, target: str) -> None:
    """Give USERNAME PERMISSION on an experiment (id or name) or a registered model (name).

    \b
    READ: see it · USE: see and use it · EDIT: also change it · MANAGE: also grant others.
    Example: mlops-kit users grant alice EDIT experiment churn-model
    """
    resource_id = UserAdmin(app.config()).grant(username, kind, target, permission.upper())
    ui.success(
        f"{username} has {permission.upper()} on {kind} {target}"
        + (f" (id {resource_id})" if resource_id != target else "")
    )


@users.command("revoke")
@click.argument("username")
@_kind_argument
@click.argument("target")
@pass_app
def users_revoke(app: AppContext, username: str, kind: str, target: str) -> None:
    """Remove USERNAME's grant on an experiment (id or name) or a registered model (name)."""
    UserAdmin(app.config()).revoke(username, kind, target)
    ui.success(f"{username}'s grant on {kind} {target} removed")


@users.command("permissions")
@click.argument("username")
@_json_option
@pass_app
def users_permissions(app: AppContext, username: str, as_json: bool) -> None:
    """Show USERNAME's grants."""
    rows = UserAdmin(app.config()).permissions(username)
    if as_json:
        _print_json(rows)
        return
    table = Table(title=f"grants of {username}", title_justify="left")
    for column in ("resource", "id", "permission"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row.get("resource_type", "")), str(row.get("resource_pattern", "")), str(row.get("permission", ""))
        )
    ui.out.print(table)


@cli.group()
def tls() -> None:
    """The proxy's certificate and the CA clients trust."""


@tls.command("export-ca")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the CA certificate here (default: stdout).")
@pass_app
def tls_export_ca(app: AppContext, out: str | None) -> None:
    """Print (or write) the CA certificate clients need: MLFLOW_TRACKING_SERVER_CERT_PATH points at it."""
    config = app.config()
    ensure_certificates(config)
    source = client_ca_path(config)
    if source is None:
        raise ConfigError(
            "the proxy uses the operator's certificate and MLOPS_KIT_TLS_CA_FILE is empty",
            hint="clients trust it through their system CAs; or set MLOPS_KIT_TLS_CA_FILE",
        )
    pem = source.read_text(encoding="ascii")
    if out:
        Path(out).write_text(pem, encoding="ascii")
        ui.success(f"CA certificate written to {out}")
    else:
        click.echo(pem, nl=False)


@tls.command("show")
@_json_option
@pass_app
def tls_show(app: AppContext, as_json: bool) -> None:
    """Show the proxy's certificate: names, issuer and expiry."""
    config = app.config()
    path = config.proxy_cert_path
    facts = read_certificate(path)
    data = {
        "file": str(path),
        "subject": facts.subject,
        "issuer": facts.issuer,
        "names": list(facts.names),
        "not_after": facts.not_after.isoformat(),
        "kit_ca": uses_kit_ca(config),
    }
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        ui.out.print(f"{key:>10}: {', '.join(value) if isinstance(value, list) else value}")


@tls.command("renew")
@pass_app
def tls_renew(app: AppContext) -> None:
    """Issue the proxy a new certificate from the kit's CA now (clients keep working); restart with `up`."""
    config = app.config()
    if not uses_kit_ca(config):
        raise ConfigError(
            "MLOPS_KIT_TLS_CERT_FILE is set: the operator's certificate is renewed by its issuer",
            hint="replace the files, then run mlops-kit up",
        )
    for done in ensure_certificates(config, force_renew=True):
        ui.success(done)
    if restart_proxy(app.project(config)):
        ui.success("the proxy serves the new certificate")


@tls.command("rotate-ca")
@_yes_option
@pass_app
def tls_rotate_ca(app: AppContext, yes: bool) -> None:
    """Replace the kit's CA (e.g. after its key leaked). Every client must import the new CA."""
    config = app.config()
    if not yes:
        _require_interactive()
        _confirm("Replace the CA? Clients trusting the old one fail until they import the new one.")
    path = rotate_ca(config)
    ui.success(f"new CA in {path}; the old files are kept as *.old in the secrets folder")
    if restart_proxy(app.project(config)):
        ui.success("the proxy serves a certificate from the new CA")
    ui.info("hand out the new CA: mlops-kit tls export-ca")


# ---- backup / restore ------------------------------------------------------------------------


@cli.group(invoke_without_command=True)
@_json_option
@pass_app
@click.pass_context
def backup(ctx: click.Context, app: AppContext, as_json: bool) -> None:
    """Make a backup set now (database, artifacts, manifest) in the encrypted repository.

    Subcommands: list, verify, schedule.
    """
    if ctx.invoked_subcommand is not None:
        return
    project = app.project()
    with _progress() as progress:
        task = progress.add_task("Backing up", total=None)
        summary = run_backup(project, on_step=lambda message: progress.update(task, description=message))
    if as_json:
        _print_json(summary.to_dict())
        return
    ui.success(
        f"backup {summary.set_id} (snapshot {summary.snapshot_id[:8]}): {summary.database_rows} rows, "
        f"{summary.artifact_files} artifact files ({ui.human_bytes(summary.artifact_bytes)}); "
        f"new data {ui.human_bytes(summary.data_added_bytes)}, repository {ui.human_bytes(summary.repository_bytes)}, "
        f"{summary.seconds:.1f} s" + (f"; copied to {summary.offsite}" if summary.offsite else "")
    )


@backup.command("list")
@_json_option
@pass_app
def backup_list(app: AppContext, as_json: bool) -> None:
    """Show the backup sets in the repository: id, time, age, size."""
    sets = list_backups(app.project())
    if as_json:
        _print_json([s.to_dict() for s in sets])
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
@_json_option
@pass_app
def backup_verify(app: AppContext, sample: int, as_json: bool) -> None:
    """Restore drill: restore the latest set into a throwaway stack, check it, remove it."""
    with _progress() as progress:
        task = progress.add_task("Restore drill", total=None)
        report = drill(app.project(), sample=sample, on_step=lambda m: progress.update(task, description=m))
    if as_json:
        _print_json(report.to_dict())
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
@click.option(
    "--cron-dir",
    type=click.Path(file_okay=False),
    default=str(DEFAULT_CRON_DIR),
    show_default=True,
    envvar="MLOPS_KIT_CRON_DIR",
    help="cron's drop-in folder. [env var: MLOPS_KIT_CRON_DIR]",
)
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


@cli.command()
@click.argument("backup_set", required=False, default="latest")
@_yes_option
@_json_option
@pass_app
def restore(app: AppContext, backup_set: str, yes: bool, as_json: bool) -> None:
    """Restore a backup set (default: the latest) into fresh volumes and switch the stack to it."""
    config = app.config()
    if not yes:
        _require_interactive()
        _confirm(
            f"Restore backup set {backup_set} into stack {config.project_name}? The stack stops while it is "
            "switched; its current data is kept in its volumes."
        )
    with _progress() as progress:
        task = progress.add_task("Restoring", total=None)
        summary = restore_backup(
            app.project(config), backup_set, on_step=lambda m: progress.update(task, description=m)
        )
    if as_json:
        _print_json(summary.to_dict())
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


# ---- artifacts ----------------------------------------------------------------------------


@cli.group()
def artifacts() -> None:
    """The artifact store: move a stack's artifacts to another store."""


@artifacts.command("migrate")
@click.option("--to", "store", type=click.Choice(ARTIFACT_STORE_TARGETS), required=True, help="The store to move to.")
@click.option("--s3-endpoint-url", help=_setting_help("MLOPS_KIT_S3_ENDPOINT_URL"))
@click.option("--s3-bucket", help=_setting_help("MLOPS_KIT_S3_BUCKET"))
@click.option("--s3-region", help=_setting_help("MLOPS_KIT_S3_REGION"))
@click.option("--s3-addressing", type=click.Choice(S3_ADDRESSING_STYLES), help=_setting_help("MLOPS_KIT_S3_ADDRESSING"))
@click.option("--s3-network", help=_setting_help("MLOPS_KIT_S3_NETWORK"))
@click.option(
    "--s3-credentials-stdin",
    is_flag=True,
    help="Read the S3 access key id and secret key from stdin, one per line (secret files, mode 0600).",
)
@click.option("--dry-run", "plan_only", is_flag=True, help="Only say what would be copied (files, bytes, where).")
@_yes_option
@_json_option
@pass_app
def artifacts_migrate(
    app: AppContext,
    /,
    store: str,
    s3_credentials_stdin: bool,
    plan_only: bool,
    yes: bool,
    as_json: bool,
    **options: str | None,
) -> None:
    """Copy every artifact to another store (verified, resumable), then switch the stack to it.

    \b
    The old store is kept untouched. MLflow stops for the final copy only.
    Example: mlops-kit artifacts migrate --to s3 --s3-endpoint-url https://s3.example.com \\
               --s3-bucket mlflow --s3-credentials-stdin --dry-run < keys.txt
    """
    config = app.config()
    settings: dict[str, str] = {}
    for option, value in options.items():
        if value is not None:
            env = _OPTION_SETTINGS[option]
            _validate_choice(env, value, "--" + option.replace("_", "-"), f"fix --{option.replace('_', '-')}")
            settings[env] = value
    if s3_credentials_stdin:
        write_s3_keys(config.secrets_path, *_read_s3_keys_stdin())
    target = plan_target(config, store, settings)
    if not plan_only and not yes:
        _require_interactive()
        _confirm(
            f"Move the artifacts of stack {config.project_name} to {describe(target)}? MLflow stops for the "
            "final copy; the current store is kept."
        )
    project = app.project(config)
    with _progress() as progress:
        task = progress.add_task("Migrating artifacts", total=None)
        result = migrate_artifacts(
            project, target, dry_run=plan_only, on_step=lambda m: progress.update(task, description=m)
        )
        if not plan_only:
            progress.update(task, description="Starting the stack on the new store")
            bring_up(app.project(app.config()), wait_timeout=DEFAULT_WAIT_TIMEOUT)
    if as_json:
        _print_json(result.to_dict())
        return
    if plan_only:
        ui.info(
            f"would copy {result.files} files ({ui.human_bytes(result.bytes)}) from {result.source} to "
            f"{result.target}, then switch the stack (run again without --dry-run)"
        )
        return
    ui.success(
        f"artifacts moved to {result.target}: {result.files} files ({ui.human_bytes(result.bytes)}), "
        f"{result.copied} copied and read back, in {result.seconds:.0f} s; the stack is healthy on it"
    )
    ui.info(f"the previous store is kept: {result.source}")


# ---- entry point --------------------------------------------------------------------------


def main() -> None:
    """Console-script entry: run the CLI, turning kit errors into one line and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except KitError as exc:
        ui.error_line(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        ui.error_line("cancelled")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        ui.error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # last resort: one line, never a traceback (unless -vv)
        logger.debug("unexpected error", exc_info=True)
        ui.error_line(
            f"internal error: {exc.__class__.__name__}: {exc}", "run again with -vv for details and report it"
        )
        sys.exit(1)
    sys.exit(0)
