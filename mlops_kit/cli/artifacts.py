"""artifacts migrate: move a stack's artifacts to another store."""

from __future__ import annotations

import click

from mlops_kit import console as ui
from mlops_kit.cli.app import (
    DEFAULT_WAIT_TIMEOUT,
    AppContext,
    confirm,
    pass_app,
    print_json,
    read_s3_keys_stdin,
    steps,
)
from mlops_kit.cli.options import S3_SETTINGS, json_option, s3_credentials_stdin_option, setting_options, yes_option
from mlops_kit.config.secrets import write_s3_keys
from mlops_kit.config.settings import SETTINGS_BY_ATTR
from mlops_kit.workflows.migrate import describe, move_artifacts, plan_target

#: `artifacts migrate --to`: nfs is a volume mode set up with init (its export is the operator's).
ARTIFACT_STORE_TARGETS = ("volume", "minio", "s3")


@click.group()
def artifacts() -> None:
    """The artifact store: move a stack's artifacts to another store."""


@artifacts.command("migrate")
@click.option("--to", "store", type=click.Choice(ARTIFACT_STORE_TARGETS), required=True, help="The store to move to.")
@setting_options(*S3_SETTINGS)
@s3_credentials_stdin_option
@click.option("--dry-run", "plan_only", is_flag=True, help="Only say what would be copied (files, bytes, where).")
@yes_option
@json_option
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
    settings = {SETTINGS_BY_ATTR[attr].env: value for attr, value in options.items() if value is not None}
    target = plan_target(config, store, settings)
    if s3_credentials_stdin:
        write_s3_keys(config.secrets_path, *read_s3_keys_stdin())
    if not plan_only:
        confirm(
            f"Move the artifacts of stack {config.project_name} to {describe(target)}? MLflow stops for the "
            "final copy; the current store is kept.",
            yes=yes,
        )
    with steps("Migrating artifacts") as on_step:
        result, _started = move_artifacts(
            app.project(config),
            target,
            dry_run=plan_only,
            wait_timeout=DEFAULT_WAIT_TIMEOUT,
            on_step=on_step,
        )
    if as_json:
        print_json(result.to_dict())
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
