"""Options declared once and reused, as MLflow's `cli_args.py` does; setting options come from the table.

A command that takes a setting as an option (``--s3-bucket``) gets its name, help,
env var and choices from :data:`~mlops_kit.config.settings.SETTINGS`, so a setting is
described in one place. The option's value arrives under the setting's ``attr``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from mlops_kit.config.settings import SETTINGS_BY_ENV
from mlops_kit.workflows.schedule import DEFAULT_CRON_DIR

F = TypeVar("F", bound=Callable[..., Any])

#: The S3 settings `init` and `artifacts migrate` both take.
S3_SETTINGS = (
    "MLOPS_KIT_S3_ENDPOINT_URL",
    "MLOPS_KIT_S3_BUCKET",
    "MLOPS_KIT_S3_REGION",
    "MLOPS_KIT_S3_ADDRESSING",
    "MLOPS_KIT_S3_NETWORK",
)


def setting_option(env: str, *, choices: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """A ``--flag`` for the setting ``env`` (no default: an absent flag leaves the setting as it is)."""
    setting = SETTINGS_BY_ENV[env]
    allowed = choices if choices is not None else setting.choices
    return click.option(
        setting.option,
        setting.attr,
        type=click.Choice(allowed) if allowed else None,
        help=f"{setting.help} [env var: {env}]",
    )


def setting_options(*envs: str) -> Callable[[F], F]:
    """Several setting options, in the order given."""

    def apply(func: F) -> F:
        for env in reversed(envs):
            func = setting_option(env)(func)
        return func

    return apply


s3_credentials_stdin_option = click.option(
    "--s3-credentials-stdin",
    is_flag=True,
    help="Read the S3 access key id and secret key from stdin, one per line, into secrets/s3_access_key_id "
    "and secrets/s3_secret_access_key (mode 0600; never taken as arguments).",
)


def json_option(func: F) -> F:
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        envvar="MLOPS_KIT_JSON",
        help="Print machine-readable JSON. [env var: MLOPS_KIT_JSON]",
    )(func)


def yes_option(func: F) -> F:
    return click.option(
        "--yes",
        "-y",
        is_flag=True,
        envvar="MLOPS_KIT_YES",
        help="Do not ask for confirmation. [env var: MLOPS_KIT_YES]",
    )(func)


def cron_dir_option(func: F) -> F:
    """--cron-dir: where the `schedule` commands write their cron.d file."""
    return click.option(
        "--cron-dir",
        type=click.Path(file_okay=False),
        default=str(DEFAULT_CRON_DIR),
        show_default=True,
        envvar="MLOPS_KIT_CRON_DIR",
        help="cron's drop-in folder. [env var: MLOPS_KIT_CRON_DIR]",
    )(func)
