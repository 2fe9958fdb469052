#!/usr/bin/env python
"""Benchmark: mlops-kit backup and restore at scale (a benchmark, not a test: nothing here asserts a timing).

What it does, in one run, on the real Docker engine with the kit's own images:

1. copies the kit (compose.yaml, .env.example, docker/) into a fresh folder, runs
   ``mlops-kit init --project-name mlkt-bench --port <free port>`` and ``mlops-kit up``;
2. writes a data set through the MLflow client (``MlflowClient``, 8 threads):
   RUNS runs over EXPERIMENTS experiments, each with 5 params, 3 tags and
   METRIC_POINTS / RUNS metric points sent with ``log_batch`` (at most 1000 entities a call),
   then ARTIFACT_MB of random-byte artifact files (FILE_MB each) logged with ``log_artifact``
   to a spread-out subset of the runs;
3. full backup (``mlops-kit backup --json``): wall time around the CLI call and its summary;
4. a CHANGE_FRACTION change (default 1 %: 100 new runs with metrics and ~20 MB of new
   artifacts), then a second backup: wall time and the data it added;
5. ``mlops-kit restore --yes --json`` (restore the latest set into fresh volumes and switch
   the stack to them): wall time; then the runs are counted through the API as a sanity figure;
6. ``mlops-kit backup verify --json`` (the restore drill into a throwaway stack): wall time and RTO;
7. ``mlops-kit down --volumes --yes`` and ``docker compose --project-name mlkt-bench down
   --volumes --remove-orphans`` (from the kit folder) as a safety net; any mlkt-bench* volume still
   there (such as the pre-restore data a restore keeps) is removed too.

Also recorded: how long data generation took, machine facts (nproc, memory, Docker and Compose
versions), the date, the parameters, free disk space and the backup repository's size on disk.

Run it from the repository root (full size: about 16 minutes on 2 cores, 12 of them writing the data
set; it needs about 11 GB of free disk at the peak: the data, the repository, and the restored copy
next to the data the restore keeps):

    .venv/bin/python benchmarks/backup_restore.py                       # 10,000 runs, 3M points, 2 GB
    .venv/bin/python benchmarks/backup_restore.py --runs 200 --metric-points 20000 --artifact-mb 50  # smoke

Results go to benchmarks/results/backup_restore-<date>.json (``--output`` to change it); a Markdown
table of the figures is printed at the end (benchmarks/README.md holds the full-size one).
Everything it creates (project, containers, volumes, kit folder) is named mlkt-bench*; it refuses to
start if containers or volumes with that name already exist, and removes all of them when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
# One harness serves tests and benchmarks: the kit folder, the CLI, the stack (tests/harness.py).
sys.path.insert(0, str(REPO_ROOT))
from mlops_kit.workflows.bench import machine_facts  # noqa: E402
from tests.harness import Stack, compose_down, new_stack  # noqa: E402

PROJECT = "mlkt-bench"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
CLI_TIMEOUT = 3 * 3600
MIB = 2**20
#: MLflow's limit for one log_batch call (metrics + params + tags).
BATCH_LIMIT = 1000
METRIC_KEYS = ("loss", "accuracy", "learning_rate")
T = TypeVar("T")


# ---- parameters and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    runs: int
    experiments: int
    metric_points: int
    artifact_mb: float
    file_mb: float
    change_fraction: float
    threads: int
    params_per_run: int
    tags_per_run: int

    @property
    def points_per_run(self) -> int:
        return max(1, self.metric_points // self.runs)


@dataclass
class Generated:
    """What one data-generation phase wrote and how long it took."""

    runs: int = 0
    metric_points: int = 0
    log_batch_calls: int = 0
    runs_seconds: float = 0.0
    artifact_files: int = 0
    artifact_bytes: int = 0
    artifacts_seconds: float = 0.0

    @property
    def seconds(self) -> float:
        return self.runs_seconds + self.artifacts_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds": round(self.seconds, 1),
            "runs_per_second": round(self.runs / self.runs_seconds, 1) if self.runs_seconds else None,
            "metric_points_per_second": round(self.metric_points / self.runs_seconds) if self.runs_seconds else None,
            "artifact_mib_per_second": (
                round(self.artifact_bytes / MIB / self.artifacts_seconds, 1) if self.artifacts_seconds else None
            ),
        }


@dataclass
class Step:
    """One measured CLI call: wall time around it, and its JSON answer."""

    name: str
    wall_seconds: float
    result: dict[str, Any]
    disk_free_after_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "wall_seconds": round(self.wall_seconds, 1)}


# ---- small helpers ------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(func: Callable[[], T]) -> tuple[T, float]:
    started = time.monotonic()
    value = func()
    return value, time.monotonic() - started


def command_output(args: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unavailable ({error})"
    return result.stdout.strip() if result.returncode == 0 else f"unavailable ({result.stderr.strip()})"


def human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def tree_bytes(path: Path) -> int:
    """Bytes in the files under ``path`` (0 if it does not exist)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def volume_bytes() -> dict[str, int | None]:
    """Bytes in each mlkt-bench volume (read from its mountpoint; None if that is not readable here)."""
    sizes: dict[str, int | None] = {}
    for name in leftovers()["volumes"]:
        mountpoint = Path(command_output(["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", name]))
        try:
            sizes[name] = tree_bytes(mountpoint) if os.access(mountpoint, os.R_OK | os.X_OK) else None
        except OSError:
            sizes[name] = None
    return sizes


# ---- the stack, driven through the real CLI (tests/harness.py) ----------------------------------


def kit_json(stack: Stack, *args: str) -> tuple[dict[str, Any], float]:
    """Run a --json command; return its answer and the wall time around the call."""
    result, seconds = timed(lambda: stack.kit(*args, "--json"))
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer, seconds


def disk_free(stack: Stack) -> int:
    return shutil.disk_usage(stack.directory).free


def leftovers(prefix: str = PROJECT) -> dict[str, list[str]]:
    """Containers and volumes whose name starts with ``prefix`` (a benchmark's, by the naming rule)."""
    containers = command_output(["docker", "ps", "-a", "--format", "{{.Names}}"]).split()
    volumes = command_output(["docker", "volume", "ls", "-q"]).split()
    return {
        "containers": [c for c in containers if c.startswith(prefix)],
        "volumes": [v for v in volumes if v.startswith(prefix)],
    }


def tear_down(stack: Stack) -> dict[str, list[str]]:
    """Remove everything this benchmark created in Docker; return what is left (should be nothing)."""
    stack.destroy()  # `down --volumes`, then Compose by project name as a safety net
    compose_down(f"{PROJECT}-drill", stack.directory)  # the restore drill's throwaway project
    # The restore keeps the pre-restore volumes (by design); they are named mlkt-bench_*.
    left = leftovers()
    if left["volumes"]:
        log(f"removing kept volumes: {', '.join(left['volumes'])}")
        subprocess.run(["docker", "volume", "rm", *left["volumes"]], capture_output=True, check=False)
    return leftovers()


# ---- data generation through the MLflow client ---------------------------------------------------


class Writer:
    """Writes runs and artifacts with one MlflowClient per thread."""

    def __init__(self, tracking_uri: str, params: Params) -> None:
        self.tracking_uri = tracking_uri
        self.params = params
        self._local = threading.local()
        # set_terminated would print two "View run" lines per run (and fetch the run to do so).
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

    def client(self) -> Any:
        from mlflow.tracking import MlflowClient

        if not hasattr(self._local, "client"):
            self._local.client = MlflowClient(self.tracking_uri)
        return self._local.client

    def experiments(self) -> list[str]:
        client = self.client()
        ids = []
        for index in range(self.params.experiments):
            name = f"{PROJECT}-experiment-{index:02d}"
            existing = client.get_experiment_by_name(name)
            ids.append(existing.experiment_id if existing else client.create_experiment(name))
        return ids

    def write_run(self, experiment_id: str, index: int) -> tuple[str, int, int]:
        """One run: create, log_batch (params, tags, metric history), terminate. Returns (id, points, calls)."""
        from mlflow.entities import Metric, Param, RunTag

        client = self.client()
        now = int(time.time() * 1000)
        run = client.create_run(experiment_id, run_name=f"run-{index:06d}", start_time=now)
        run_id = run.info.run_id
        params = [Param(f"param_{p}", str((index * 7 + p) % 97)) for p in range(self.params.params_per_run)]
        tags = [RunTag(f"tag_{t}", f"value-{index % (t + 3)}") for t in range(self.params.tags_per_run)]
        metrics = []
        for point in range(self.params.points_per_run):
            key = METRIC_KEYS[point % len(METRIC_KEYS)]
            step = point // len(METRIC_KEYS)
            metrics.append(Metric(key, 1.0 / (step + 1 + index % 10), now + step, step))
        calls = 0
        first = BATCH_LIMIT - len(params) - len(tags)
        client.log_batch(run_id, metrics=metrics[:first], params=params, tags=tags)
        calls += 1
        for start in range(first, len(metrics), BATCH_LIMIT):
            client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])
            calls += 1
        client.set_terminated(run_id)
        return run_id, len(metrics), calls

    def write_runs(self, experiment_ids: list[str], first_index: int, count: int, report: Generated) -> list[str]:
        started = time.monotonic()
        run_ids: list[str] = []
        with ThreadPoolExecutor(max_workers=self.params.threads) as pool:
            futures = [
                pool.submit(self.write_run, experiment_ids[i % len(experiment_ids)], i)
                for i in range(first_index, first_index + count)
            ]
            for done, future in enumerate(futures, start=1):
                run_id, points, calls = future.result()
                run_ids.append(run_id)
                report.runs += 1
                report.metric_points += points
                report.log_batch_calls += calls
                if done % max(1, count // 10) == 0:
                    rate = done / (time.monotonic() - started)
                    log(f"  {done}/{count} runs ({rate:.0f} runs/s)")
        report.runs_seconds += time.monotonic() - started
        return run_ids

    def write_artifacts(self, run_ids: list[str], total_mb: float, label: str, report: Generated) -> None:
        """Random-byte files of FILE_MB (the last one smaller), each generated once, uploaded, deleted."""
        total = int(total_mb * MIB)
        size = int(self.params.file_mb * MIB)
        sizes = [size] * (total // size) + ([total % size] if total % size else [])
        if not sizes or not run_ids:
            return
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"{PROJECT}-artifacts-") as tmp:

            def upload(index: int) -> int:
                path = Path(tmp) / f"{label}-shard-{index:04d}.bin"
                path.write_bytes(os.urandom(sizes[index]))
                run_id = run_ids[index * len(run_ids) // len(sizes)]
                try:
                    self.client().log_artifact(run_id, str(path), artifact_path="weights")
                finally:
                    path.unlink()
                return sizes[index]

            with ThreadPoolExecutor(max_workers=self.params.threads) as pool:
                for done, written in enumerate(pool.map(upload, range(len(sizes))), start=1):
                    report.artifact_files += 1
                    report.artifact_bytes += written
                    if done % max(1, len(sizes) // 10) == 0:
                        rate = report.artifact_bytes / MIB / (time.monotonic() - started)
                        log(f"  {done}/{len(sizes)} artifact files ({rate:.0f} MiB/s)")
        report.artifacts_seconds += time.monotonic() - started

    def count_runs(self, experiment_ids: list[str]) -> int:
        client = self.client()
        count, token = 0, None
        while True:
            page = client.search_runs(experiment_ids, max_results=1000, page_token=token)
            count += len(page)
            token = page.token
            if not token:
                return count


# ---- the benchmark -------------------------------------------------------------------------------


@contextmanager
def bench_stack(workdir: Path, keep: bool) -> Iterator[Stack]:
    found = leftovers()
    if found["containers"] or found["volumes"]:
        raise SystemExit(
            f"containers or volumes named {PROJECT}* exist already ({found}); remove them first "
            f"(docker compose --project-name {PROJECT} down --volumes) or they would be mixed with this run"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    stack = new_stack(Path(tempfile.mkdtemp(prefix=f"{PROJECT}-", dir=workdir)), project=PROJECT)
    stack.cli_timeout = CLI_TIMEOUT
    directory = stack.directory
    try:
        yield stack
    finally:
        log("tearing down")
        left = tear_down(stack)
        if left["containers"] or left["volumes"]:
            log(f"WARNING: left behind: {left}")
        if keep:
            log(f"kit folder kept: {directory}")
        else:
            shutil.rmtree(directory.parent, ignore_errors=True)


def run_benchmark(params: Params, workdir: Path, keep: bool, results: dict[str, Any]) -> None:
    """Run every phase, filling ``results`` as it goes (so a failed run still leaves its figures)."""
    import mlops_kit

    results |= {
        "benchmark": "backup_restore",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python", "benchmarks/backup_restore.py", *sys.argv[1:]]),
        "params": {**asdict(params), "points_per_run": params.points_per_run},
        "machine": machine_facts(),
        "kit_version": mlops_kit.__version__,
        "mlflow_version": mlops_kit.MLFLOW_VERSION,
        "git_commit": command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
    }
    results["steps"] = {}
    total_started = time.monotonic()
    with bench_stack(workdir, keep) as stack:
        results["kit_dir"] = str(stack.directory)
        results["disk_free_at_start_bytes"] = disk_free(stack)
        log(f"kit in {stack.directory}, port {stack.port}: init + up")
        stack.init()
        _, results["up_seconds"] = timed(lambda: stack.kit("up"))
        log(f"stack up in {results['up_seconds']:.0f} s")
        # This process's MLflow client logs in as the admin (what `client-env --user admin` prints).
        os.environ.update(stack.client_variables("admin"))

        writer = Writer(stack.tracking_uri, params)
        experiment_ids = writer.experiments()

        log(f"generating {params.runs} runs x {params.points_per_run} metric points ({params.threads} threads)")
        base = Generated()
        run_ids = writer.write_runs(experiment_ids, 0, params.runs, base)
        log(f"generating {params.artifact_mb:g} MiB of artifacts in {params.file_mb:g} MiB files")
        writer.write_artifacts(run_ids, params.artifact_mb, "base", base)
        results["generation"] = base.to_dict()
        log(f"data generation took {base.seconds:.0f} s")

        def measure(name: str, *args: str, extra: Callable[[], dict[str, Any]] = dict) -> Step:
            log(f"{name}: mlops-kit {' '.join(args)} --json")
            answer, seconds = kit_json(stack, *args)
            step = Step(name, seconds, answer, disk_free(stack), extra())
            results["steps"][name] = step.to_dict()
            log(f"{name}: {seconds:.1f} s wall")
            return step

        def repository_on_disk() -> dict[str, Any]:
            return {"repository_on_disk_bytes": tree_bytes(stack.directory / "backups" / "repository")}

        measure("full_backup", "backup", extra=repository_on_disk)

        change_runs = max(1, round(params.runs * params.change_fraction))
        change_mb = params.artifact_mb * params.change_fraction
        log(f"change: {change_runs} new runs, {change_mb:g} MiB of new artifacts")
        change = Generated()
        new_ids = writer.write_runs(experiment_ids, params.runs, change_runs, change)
        writer.write_artifacts(new_ids, change_mb, "change", change)
        results["change_generation"] = change.to_dict()

        measure("incremental_backup", "backup", extra=repository_on_disk)

        def count_after_restore() -> dict[str, Any]:
            runs_after, count_seconds = timed(lambda: writer.count_runs(experiment_ids))
            log(f"after restore: {runs_after} runs found through the API (written: {base.runs + change.runs})")
            return {
                "runs_counted_after_restore": runs_after,
                "runs_written": base.runs + change.runs,
                "count_seconds": round(count_seconds, 1),
                "volumes_on_disk_bytes": volume_bytes(),
            }

        measure("restore", "restore", "--yes", extra=count_after_restore)
        measure("verify", "backup", "verify")
        results["backup_dir_on_disk_bytes"] = tree_bytes(stack.directory / "backups")
    results["leftovers_after_teardown"] = leftovers()
    # The kit is installed editable: a commit during the run would change what was measured.
    results["git_commit_at_end"] = command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"])
    results["total_seconds"] = round(time.monotonic() - total_started, 1)


def markdown_table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table (what benchmarks/README.md shows)."""
    steps = results["steps"]
    gen, change = results["generation"], results["change_generation"]
    full, inc = steps["full_backup"], steps["incremental_backup"]
    restore, verify = steps["restore"], steps["verify"]
    rows = [
        (
            "data generation",
            f"{gen['seconds']:.0f} s",
            f"{gen['runs']:,} runs, {gen['metric_points']:,} metric points in {gen['runs_seconds']:.0f} s "
            f"({gen['runs_per_second']} runs/s); {gen['artifact_files']} artifact files, "
            f"{human(gen['artifact_bytes'])} in {gen['artifacts_seconds']:.0f} s "
            f"({gen['artifact_mib_per_second']} MiB/s)",
        ),
        (
            "full backup",
            f"{full['wall_seconds']:.0f} s",
            f"kit reports {full['result']['seconds']} s; {full['result']['database_rows']:,} database rows "
            f"(dump {human(full['result']['dump_bytes'])}), {full['result']['artifact_files']} artifact files "
            f"({human(full['result']['artifact_bytes'])}); added {human(full['result']['data_added_bytes'])}, "
            f"repository {human(full['result']['repository_bytes'])}",
        ),
        (
            f"change ({results['params']['change_fraction']:.0%})",
            f"{change['seconds']:.0f} s",
            f"{change['runs']} runs, {change['metric_points']:,} metric points, {change['artifact_files']} files "
            f"({human(change['artifact_bytes'])})",
        ),
        (
            "incremental backup",
            f"{inc['wall_seconds']:.0f} s",
            f"kit reports {inc['result']['seconds']} s; {inc['result']['files_new']} new and "
            f"{inc['result']['files_changed']} changed files, added "
            f"{human(inc['result']['data_added_bytes'])} (dump {human(inc['result']['dump_bytes'])}), "
            f"repository {human(inc['result']['repository_bytes'])}",
        ),
        (
            "restore (`restore --yes`)",
            f"{restore['wall_seconds']:.0f} s",
            f"kit reports {restore['result']['seconds']:.0f} s; {restore['result']['database_rows']:,} rows, "
            f"{restore['result']['artifact_files']} artifact files; "
            f"{restore['extra']['runs_counted_after_restore']:,} runs found through the API afterwards",
        ),
        (
            "restore drill (`backup verify`)",
            f"{verify['wall_seconds']:.0f} s",
            f"RTO reported {verify['result']['rto_seconds']:.0f} s; "
            f"{verify['result']['artifacts_sampled']} of {verify['result']['artifacts_total']} artifacts "
            "fetched through the API and compared",
        ),
        ("whole benchmark", f"{results['total_seconds'] / 60:.0f} min", f"stack `up`: {results['up_seconds']:.0f} s"),
    ]
    lines = ["| step | wall time | figures |", "|---|---:|---|"]
    lines += [f"| {name} | {wall} | {detail} |" for name, wall, detail in rows]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Params, Path, Path | None, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10_000, help="runs in the base data set (default: 10000)")
    parser.add_argument("--experiments", type=int, default=10, help="experiments the runs are spread over")
    parser.add_argument("--metric-points", type=int, default=3_000_000, help="metric points in all (default: 3M)")
    parser.add_argument("--artifact-mb", type=float, default=2048, help="MiB of artifacts in all (default: 2048)")
    parser.add_argument("--file-mb", type=float, default=10, help="MiB per artifact file (default: 10)")
    parser.add_argument("--change-fraction", type=float, default=0.01, help="size of the change (default: 0.01)")
    parser.add_argument("--threads", type=int, default=8, help="client threads (default: 8)")
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="where the kit folder is made")
    parser.add_argument("--output", type=Path, help="results JSON (default: results/backup_restore-<date>.json)")
    parser.add_argument("--keep-kit", action="store_true", help="keep the kit folder (backups) at the end")
    args = parser.parse_args(argv)
    params = Params(
        runs=args.runs,
        experiments=args.experiments,
        metric_points=args.metric_points,
        artifact_mb=args.artifact_mb,
        file_mb=args.file_mb,
        change_fraction=args.change_fraction,
        threads=args.threads,
        params_per_run=5,
        tags_per_run=3,
    )
    return params, args.workdir, args.output, args.keep_kit


def main(argv: Sequence[str] | None = None) -> None:
    params, workdir, output, keep = parse_args(argv)
    output = output or RESULTS_DIR / f"backup_restore-{time.strftime('%Y-%m-%d')}.json"
    results: dict[str, Any] = {}
    try:
        run_benchmark(params, workdir, keep, results)
    except BaseException as error:
        results["error"] = f"{error.__class__.__name__}: {error}"
        raise
    finally:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        log(f"results written to {output}")
    print(markdown_table(results))


if __name__ == "__main__":
    main()
