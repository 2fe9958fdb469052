"""import: bring another MLflow's data (a file store, a SQLite database, a server's PostgreSQL) into the stack."""

from __future__ import annotations

import os

import click
from rich.markup import escape
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json, steps
from mlops_kit.cli.options import json_option, yes_option
from mlops_kit.workflows.importing import ImportReport, import_data, recognise_source


@click.command("import")
@click.argument("source", envvar="MLOPS_KIT_IMPORT_SOURCE")
@click.option(
    "--artifacts",
    metavar="DIR|S3_URI",
    envvar="MLOPS_KIT_IMPORT_ARTIFACTS",
    help="Where the source's artifact URIs point: for a database, its artifact root (mlruns/ of "
    "a client without a server, or its server's --default-artifact-root s3://BUCKET/PREFIX); for data logged "
    "through `mlflow server`, its --artifacts-destination (./mlartifacts by default). A bucket is read with "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment. [env var: MLOPS_KIT_IMPORT_ARTIFACTS]",
)
@click.option(
    "--artifacts-endpoint-url",
    metavar="URL",
    envvar=["MLOPS_KIT_IMPORT_S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"],
    help="The S3 endpoint of an --artifacts bucket (empty: AWS). "
    "[env var: MLOPS_KIT_IMPORT_S3_ENDPOINT_URL, then MLFLOW_S3_ENDPOINT_URL]",
)
@click.option(
    "--artifacts-ca-file",
    metavar="PEM",
    envvar="MLOPS_KIT_IMPORT_S3_CA_FILE",
    help="The CA that signed that endpoint's certificate, trusted besides the system's. "
    "[env var: MLOPS_KIT_IMPORT_S3_CA_FILE]",
)
@click.option("--dry-run", "plan_only", is_flag=True, help="Show what would be imported (counts, bytes, id changes).")
@click.option(
    "--merge",
    is_flag=True,
    envvar="MLOPS_KIT_IMPORT_MERGE",
    help="Add to a stack that already holds data (refused on any id or name both have). "
    "[env var: MLOPS_KIT_IMPORT_MERGE]",
)
@yes_option
@json_option
@pass_app
def import_(
    app: AppContext,
    source: str,
    artifacts: str | None,
    artifacts_endpoint_url: str | None,
    artifacts_ca_file: str | None,
    plan_only: bool,
    merge: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Import SOURCE into the stack, keeping its ids: an mlruns/ folder, an MLflow SQLite file, or
    another MLflow server's database as postgresql://USER@HOST[:PORT]/DATABASE (the password in
    PGPASSWORD, read from this host's network).

    The source is only read. Artifacts are copied into the stack's store (sha256-checked) and
    their URIs become mlflow-artifacts:/; the rows go in one transaction. Run it again after
    an interruption: it goes on where it stopped. See docs/import.md.
    """
    config = app.config()
    what = recognise_source(
        source,
        artifacts,
        password=os.environ.get("PGPASSWORD"),
        s3_endpoint_url=artifacts_endpoint_url,
        s3_ca_file=artifacts_ca_file,
    )
    dry_run = plan_only or app.dry_run
    if not dry_run:
        confirm(
            f"Import the {what.describe()} into stack {config.project_name}"
            + (" (adding to its data)" if merge else "")
            + "? (See first: mlops-kit import --dry-run)",
            yes=yes,
        )
    with steps("Importing" if not dry_run else "Planning the import") as on_step:
        report = import_data(app.project(config), what, dry_run=dry_run, merge=merge, on_step=on_step)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)


def _print_report(report: ImportReport) -> None:
    table = Table(
        title=f"{'would import' if report.dry_run else 'imported'}: {escape(report.source)}", title_justify="left"
    )
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, planned in sorted(report.planned_rows.items()):
        if planned:
            table.add_row(name, str(report.rows.get(name, planned) if not report.dry_run else planned))
    ui.out.print(table)
    if report.bucket:
        listed = f"{report.bucket.get('objects', 0)} object(s), {ui.human_bytes(int(report.bucket.get('bytes', 0)))}"
        ui.info(
            escape(f"bucket {report.bucket.get('uri')}: {listed}")
            + (
                ", copied to the scratch folder when importing"
                if report.dry_run
                else f"; fetched {report.bucket.get('fetched', 0)}, {report.bucket.get('already_there', 0)} "
                "already fetched by an earlier attempt"
            )
        )
    ui.info(
        f"artifacts: {report.artifact_files} file(s), {ui.human_bytes(report.artifact_bytes)}"
        + (
            ""
            if report.dry_run
            else f"; copied {report.copied_files} ({ui.human_bytes(report.copied_bytes)}), "
            f"{report.already_there} already there"
        )
    )
    for old, new in report.new_experiment_ids.items():
        ui.warning(
            f"experiment {old} is too large an id for PostgreSQL: it is now {new} "
            "(tag mlops-kit.import.original-experiment-id)"
        )
    for scheme, count in report.kept_uris.items():
        ui.warning(escape(f"{count} artifact location(s) in {scheme} kept as they were (outside the source)"))
    if report.unresolved_uris:
        ui.warning(
            f"{report.unresolved_uris} artifact location(s) are a server's mlflow-artifacts:/ URIs: give its "
            "--artifacts-destination folder as --artifacts, or the import refuses"
        )
    for name, what in sorted(report.skipped.items()):
        ui.warning(escape(f"{name}: {what.get('rows')} row(s) not imported: {what.get('reason')}"))
    if report.dry_run:
        ui.info(f"planned in {report.seconds:.0f} s; nothing was changed")
    else:
        ui.success(f"imported in {report.seconds:.0f} s")
