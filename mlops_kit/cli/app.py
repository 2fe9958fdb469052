"""The `mlops-kit` group, what its options resolve to, and the helpers every command shares.

Exit codes (only the CLI chooses them, from the error's class):
0 ok · 1 failure · 2 bad configuration or usage · 3 host not ready (preflight)
4 an external command failed · 5 stack not running or unhealthy · 6 smoke check failed
7 backup/restore failed or refused · 8 another backup or restore is running
9 a user or permission change failed (MLflow refused it, or the admin login failed)
10 a benchmark could not run · 11 an upgrade was refused or failed (the previous version serves)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mlops_kit import MLFLOW_VERSION, __version__
from mlops_kit import console as ui
from mlops_kit.config.loader import ENV_FILE_NAME, KitConfig, find_project_dir, load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import AbortedError, ConfigError
from mlops_kit.runner import CommandRunner

DEFAULT_WAIT_TIMEOUT = 600


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
        return self.project_dir / ENV_FILE_NAME

    def config(self) -> KitConfig:
        return load_config(self.project_dir, self.env_file)

    def project(self, config: KitConfig | None = None) -> ComposeProject:
        config = config or self.config()
        return ComposeProject(config, CommandRunner(dry_run=self.dry_run, cwd=config.project_dir))


pass_app = click.make_pass_decorator(AppContext)


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


# ---- helpers the commands share -------------------------------------------------------------


def print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def progress() -> Progress:
    """A transient spinner with the current step on stderr (stdout stays clean for --json)."""
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=ui.err, transient=True
    )


@contextmanager
def steps(first: str) -> Iterator[Callable[[str], None]]:
    """A :func:`progress` spinner showing ``first``; yields the ``on_step`` a workflow reports its steps to."""
    with progress() as bar:
        task = bar.add_task(first, total=None)
        yield lambda message: bar.update(task, description=message)


def confirm(question: str, *, yes: bool) -> None:
    """Ask before destroying anything; ``--yes`` answers for scripts, and no terminal means no."""
    if yes:
        return
    require_interactive()
    if not click.confirm(question, default=False, err=True):
        raise AbortedError("cancelled; nothing was deleted")


def require_interactive() -> None:
    """Refuse a destructive command without a terminal to ask on (scripts pass --yes)."""
    if not sys.stdin.isatty():
        raise AbortedError(
            "refusing to delete data without confirmation", hint="pass --yes to confirm non-interactively"
        )


def echo_dry_run(project: ComposeProject | None) -> None:
    """Print what a --dry-run would have changed."""
    for line in project.runner.dry_run_log if project else ():
        click.echo(line)


def read_s3_keys_stdin() -> tuple[str, str]:
    """The S3 key id and secret, one per line on stdin (never taken as arguments)."""
    lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
    if len(lines) != 2:
        raise ConfigError(
            f"--s3-credentials-stdin expects 2 lines on stdin (access key id, then secret key), got {len(lines)}",
            hint='printf \'%s\\n%s\\n\' "$KEY_ID" "$SECRET" | mlops-kit init ... --s3-credentials-stdin',
        )
    return lines[0], lines[1]
