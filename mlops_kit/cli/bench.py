"""bench: measure the running stack through the MLflow client."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import click
from rich.table import Table

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, pass_app, print_json, progress
from mlops_kit.cli.options import json_option
from mlops_kit.workflows.bench import BenchSizes, bench_kit_stack, summary_rows
from mlops_kit.workflows.lifecycle import require_running


def _counts(what: str, example: str) -> Callable[[click.Context, click.Parameter, str | None], tuple[int, ...] | None]:
    """A callback reading a comma-separated list of ``what`` (0 or more each; the zeros dropped)."""

    def parse(_: click.Context, __: click.Parameter, value: str | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        try:
            counts = tuple(int(part) for part in value.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {what}, such as {example}") from None
        if any(count < 0 for count in counts):
            raise click.BadParameter(f"{what} are 0 or more")
        return tuple(count for count in counts if count > 0)

    return parse


@click.command()
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
    callback=_counts("megabytes", "100,5120"),
    envvar="MLOPS_KIT_BENCH_ARTIFACT_MB",
    help="Artifact sizes in MB, comma-separated; 0 for none (default 100,5120). [env var: MLOPS_KIT_BENCH_ARTIFACT_MB]",
)
@click.option(
    "--concurrency",
    callback=_counts("thread counts", "1,8,32"),
    envvar="MLOPS_KIT_BENCH_CONCURRENCY",
    help="Client thread counts at which log_metric and log_batch are measured again, comma-separated; 0 for "
    "none (default 1,8,32). [env var: MLOPS_KIT_BENCH_CONCURRENCY]",
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
@json_option
@pass_app
def bench(
    app: AppContext,
    quick: bool,
    log_metric_calls: int | None,
    batch_calls: int | None,
    threads: int | None,
    search_runs: int | None,
    artifact_mb: tuple[int, ...] | None,
    concurrency: tuple[int, ...] | None,
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
        concurrency=sizes.concurrency if concurrency is None else concurrency,
        warmup_seconds=sizes.warmup_seconds if warmup_seconds is None else warmup_seconds,
    )
    with contextlib.ExitStack() as stack:
        folder = (
            Path(workdir)
            if workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlops-kit-bench-")))
        )
        with progress() as bar:
            task = bar.add_task("starting", total=None)
            result = bench_kit_stack(project, sizes, folder, progress=lambda what: bar.update(task, description=what))
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    if as_json:
        print_json(result)
        return
    table = Table(title=f"mlops-kit bench: {config.local_url}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for measure, value in summary_rows(result):
        table.add_row(measure, value)
    ui.out.print(table)
