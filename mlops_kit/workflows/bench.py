"""Benchmark a running MLflow tracking server through the normal MLflow client.

One set of measurements serves `mlops-kit bench` (the kit's stack, as a data scientist
reaches it: HTTPS through the proxy, with a login) and benchmarks/side_by_side.py (the
same measurements against a stock `mlflow server` too). It measures what a training job
and a user of the UI feel:

- kept-alive GETs of /health (the uvicorn stall of docs/performance.md shows up here first);
- ``log_metric`` latency, one call at a time (and with the client's async logging);
- ``log_batch`` throughput with several client threads, next to the raw PostgreSQL insert
  rate of the same rows, measured inside the server's container (the ceiling);
- ``search_runs`` latency over an experiment of many runs with many metrics and params;
- artifact upload and download through the server's artifact proxy, next to a plain copy
  of the same file on this machine's disk, with the server's peak memory while it streams;
- the stack's idle memory.

Nothing here asserts a timing: these are measurements (docs/testing.md). The benchmark
writes into the server it measures (experiments named ``mlops-kit-bench-*``) and cleans up
after itself: artifacts are deleted, experiments are deleted (MLflow keeps deleted
experiments until ``mlflow gc``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mlops_kit import __version__
from mlops_kit.config.loader import KitConfig
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_json
from mlops_kit.errors import BenchError
from mlops_kit.probes import TRACKING_DSN, probe_script, run_in_mlflow
from mlops_kit.runner import CommandRunner
from mlops_kit.services.mlflow import MLFLOW, ServerAccess, as_mlflow_client, patched_environ
from mlops_kit.services.proxy import PROXY
from mlops_kit.workflows.users import UserAdmin, admin_access, stored_password

logger = logging.getLogger(__name__)

MIB = 2**20
EXPERIMENT_PREFIX = "mlops-kit-bench-"


@dataclass(frozen=True)
class BenchSizes:
    """How much each measurement does (the defaults are the documented full run)."""

    log_metric_calls: int = 500
    warmup_calls: int = 50
    batch_calls: int = 400
    batch_size: int = 100
    threads: int = 8
    #: Client threads of the concurrency sweep (log_metric and log_batch at each).
    concurrency: tuple[int, ...] = (1, 8, 32)
    #: log_metric calls per level of the sweep, shared by its threads.
    concurrent_calls: int = 960
    search_runs: int = 10_000
    search_metrics: int = 20
    search_params: int = 20
    search_queries: int = 20
    artifact_mb: tuple[int, ...] = (100, 5120)
    keepalive_calls: int = 200
    warmup_seconds: float = 30.0

    @classmethod
    def quick(cls) -> BenchSizes:
        """A run of a minute or two: checks the setup, gives rough figures."""
        return cls(
            log_metric_calls=200,
            warmup_calls=20,
            batch_calls=80,
            search_runs=400,
            search_queries=10,
            artifact_mb=(20,),
            concurrency=(1, 8),
            concurrent_calls=160,
            keepalive_calls=100,
            warmup_seconds=5.0,
        )


@dataclass
class BenchTarget:
    """A server to measure and how to reach what the client cannot see."""

    name: str
    access: ServerAccess
    #: Runs a Python script (stdin) with arguments inside the server's container; returns stdout.
    run_in_server: Callable[[str, Sequence[str]], str] | None = None
    #: Container names whose memory counts as "the stack".
    containers: Sequence[str] = ()
    #: The server's own containers (peak memory while artifacts stream).
    server_containers: Sequence[str] = ()
    #: An admin login, if any: log_metric is measured again with it, which shows what
    #: MLflow's per-request permission checks cost the other users.
    admin_access: ServerAccess | None = None


@dataclass
class Latency:
    """Percentiles of a series of calls, in milliseconds."""

    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        ordered = sorted(s * 1000 for s in seconds)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

        return cls(
            calls=len(ordered),
            p50_ms=round(statistics.median(ordered), 2),
            p95_ms=pick(0.95),
            p99_ms=pick(0.99),
            max_ms=round(ordered[-1], 2),
            mean_ms=round(statistics.fmean(ordered), 2),
        )


Progress = Callable[[str], None]


def _timed_calls(call: Callable[[int], object], count: int, warmup: int) -> list[float]:
    for i in range(warmup):
        call(i)
    seconds = []
    for i in range(count):
        started = time.perf_counter()
        call(warmup + i)
        seconds.append(time.perf_counter() - started)
    return seconds


# ---- memory -------------------------------------------------------------------------------------


def container_memory(runner: CommandRunner, containers: Sequence[str]) -> dict[str, int]:
    """Memory in use per container, in bytes, as `docker stats` reports it (page cache excluded)."""
    if not containers:
        return {}
    result = runner.run(
        ["docker", "stats", "--no-stream", "--format", "{{json .}}", *containers], changes_state=False, timeout=60
    )
    usage: dict[str, int] = {}
    for line in result.stdout.splitlines():
        entry = json.loads(line)
        usage[entry["Name"]] = _parse_size(entry["MemUsage"].split("/")[0])
    return usage


def _parse_size(text: str) -> int:
    text = text.strip()
    units = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "kB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[: -len(unit)]) * factor)
    return int(float(text))


@contextmanager
def peak_memory(runner: CommandRunner, containers: Sequence[str]) -> Iterator[dict[str, int]]:
    """Sample the containers' memory in the background; the dict holds each one's peak."""
    peaks: dict[str, int] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                for name, used in container_memory(runner, containers).items():
                    peaks[name] = max(peaks.get(name, 0), used)
            except Exception as error:  # a failed sample must not end the measurement
                logger.debug("memory sample failed: %s", error)
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True, name="bench-memory")
    if containers:
        sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        if containers:
            sampler.join(timeout=90)


# ---- the measurements ---------------------------------------------------------------------------


def measure_keepalive(access: ServerAccess, calls: int) -> Latency:
    """GET /health on one kept-alive connection (what the MLflow client does on every call)."""
    with access.session() as session:
        url = f"{access.base_url}/health"

        def call(_: int) -> None:
            response = session.get(url, timeout=30)
            response.raise_for_status()

        return Latency.of(_timed_calls(call, calls, warmup=10))


def warm_up(client: Any, experiment_id: str, seconds: float) -> int:
    """Exercise the server for ``seconds`` before measuring; returns the calls made.

    Right after a start, every worker still imports modules, fills its connection pool and
    compiles its SQL: the first minute's calls are slower (measured: 17 ms for a call that
    takes 11 ms a minute later). Each worker must see the calls, so there are many.
    """
    from mlflow.entities import Metric

    run_id = client.create_run(experiment_id, run_name="warm-up").info.run_id
    deadline = time.monotonic() + seconds
    calls = 0
    while time.monotonic() < deadline:
        client.log_metric(run_id, "warm_up", float(calls), step=calls)
        client.log_batch(run_id, metrics=[Metric("warm_up_batch", float(i), 0, calls * 10 + i) for i in range(10)])
        client.get_run(run_id)
        client.search_runs([experiment_id], max_results=10)
        calls += 4
    return calls


def _log_metric_latency(client: Any, run_id: str, sizes: BenchSizes) -> Latency:
    """``log_metric`` one call at a time, after ``warmup_calls`` untimed ones."""
    return Latency.of(
        _timed_calls(
            lambda i: client.log_metric(run_id, "loss", 1.0 / (i + 1), step=i),
            sizes.log_metric_calls,
            sizes.warmup_calls,
        )
    )


def measure_log_metric(client: Any, experiment_id: str, sizes: BenchSizes) -> dict[str, Any]:
    """One ``log_metric`` at a time, as a training loop logs (and with async logging)."""
    run_id = client.create_run(experiment_id, run_name="log-metric").info.run_id
    sync = _log_metric_latency(client, run_id, sizes)
    # The client's async logging queues the call and returns: what a training loop waits
    # for with MLFLOW_ENABLE_ASYNC_LOGGING=true. Time to flush everything is reported too.
    started = time.perf_counter()
    operations = _timed_calls(
        lambda i: client.log_metric(run_id, "loss_async", float(i), step=i, synchronous=False),
        sizes.log_metric_calls,
        0,
    )
    from mlflow.tracking.fluent import flush_async_logging

    flush_async_logging()
    flushed = time.perf_counter() - started
    client.set_terminated(run_id)
    return {
        "sync": asdict(sync),
        "async": asdict(Latency.of(operations)),
        "async_all_flushed_seconds": round(flushed, 3),
    }


def measure_admin_log_metric(admin: ServerAccess, sizes: BenchSizes, stamp: str) -> dict[str, Any]:
    """log_metric as an admin, whom MLflow's permission checks skip (its own experiment, deleted after)."""
    from mlflow import MlflowClient

    with as_mlflow_client(admin):
        client = MlflowClient()
        experiment_id = client.create_experiment(f"{EXPERIMENT_PREFIX}{stamp}-admin-{uuid.uuid4().hex[:6]}")
        try:
            latency = _log_metric_latency(client, client.create_run(experiment_id).info.run_id, sizes)
        finally:
            client.delete_experiment(experiment_id)
    return {"sync": asdict(latency)}


def measure_log_batch(client_factory: Callable[[], Any], experiment_id: str, sizes: BenchSizes) -> dict[str, Any]:
    """``log_batch`` of ``batch_size`` metrics per call from ``threads`` client threads at once."""
    from mlflow.entities import Metric

    shares = [
        sizes.batch_calls // sizes.threads + (1 if t < sizes.batch_calls % sizes.threads else 0)
        for t in range(sizes.threads)
    ]
    setup = client_factory()
    run_ids = [setup.create_run(experiment_id, run_name=f"log-batch-{t}").info.run_id for t in range(sizes.threads)]
    start_barrier = threading.Barrier(sizes.threads + 1)

    def work(thread: int) -> list[float]:
        client = client_factory()
        run_id = run_ids[thread]
        now = int(time.time() * 1000)
        start_barrier.wait()
        seconds = []
        for call in range(shares[thread]):
            metrics = [
                Metric(key=f"m{i % 10}", value=float(i), timestamp=now + call, step=call * sizes.batch_size + i)
                for i in range(sizes.batch_size)
            ]
            started = time.perf_counter()
            client.log_batch(run_id, metrics=metrics, synchronous=True)
            seconds.append(time.perf_counter() - started)
        return seconds

    with ThreadPoolExecutor(max_workers=sizes.threads) as pool:
        futures = [pool.submit(work, t) for t in range(sizes.threads)]
        start_barrier.wait()
        started = time.perf_counter()
        per_call = [s for f in futures for s in f.result()]
        wall = time.perf_counter() - started
    metrics = sizes.batch_calls * sizes.batch_size
    return {
        "calls": sizes.batch_calls,
        "metrics": metrics,
        "threads": sizes.threads,
        "seconds": round(wall, 3),
        "metrics_per_second": round(metrics / wall, 1),
        "call_latency": asdict(Latency.of(per_call)),
    }


def _concurrent_log_metric(
    client_factory: Callable[[], Any], experiment_id: str, threads: int, calls: int
) -> tuple[list[float], float]:
    """``threads`` threads, each with its client and run, ``calls`` log_metric each: (latencies, wall seconds)."""
    setup = client_factory()
    runs = [setup.create_run(experiment_id, run_name=f"concurrent-{threads}-{t}") for t in range(threads)]
    run_ids = [run.info.run_id for run in runs]
    start_barrier = threading.Barrier(threads + 1)

    def work(thread: int) -> list[float]:
        client = client_factory()
        client.log_metric(run_ids[thread], "warm", 0.0)  # its connection is open before the clock starts
        start_barrier.wait()
        return _timed_calls(lambda i: client.log_metric(run_ids[thread], "loss", float(i), step=i), calls, 0)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(work, t) for t in range(threads)]
        start_barrier.wait()
        started = time.perf_counter()
        per_call = [s for f in futures for s in f.result()]
        return per_call, time.perf_counter() - started


def measure_concurrency(
    client_factory: Callable[[], Any], experiment_id: str, sizes: BenchSizes
) -> list[dict[str, Any]]:
    """At each level of ``sizes.concurrency``: that many threads call ``log_metric`` (each on its
    own run), then ``log_batch``, at once, as the workers of a hyper-parameter sweep do."""
    levels = []
    for threads in sizes.concurrency:
        calls = max(sizes.concurrent_calls // threads, 5)
        per_call, wall = _concurrent_log_metric(client_factory, experiment_id, threads, calls)
        batch = measure_log_batch(client_factory, experiment_id, replace(sizes, threads=threads))
        levels.append(
            {
                "threads": threads,
                "log_metric": asdict(Latency.of(per_call)),
                "log_metric_calls_per_second": round(len(per_call) / wall, 1),
                "log_batch_metrics_per_second": batch["metrics_per_second"],
            }
        )
    return levels


def measure_insert_ceiling(target: BenchTarget, sizes: BenchSizes) -> dict[str, Any] | None:
    """The raw PostgreSQL insert rate of log_batch's rows, measured inside the server's container."""
    if target.run_in_server is None:
        return None
    script = probe_script("pg_insert_ceiling")
    arguments = {
        "dsn": TRACKING_DSN,
        "calls": sizes.batch_calls,
        "threads": sizes.threads,
        "batch_size": sizes.batch_size,
    }
    answer = last_json(target.run_in_server(script, [json.dumps(arguments)]))
    if not isinstance(answer, dict):
        raise BenchError(f"the PostgreSQL insert-rate probe printed no answer in {target.name}")
    if "error" in answer:
        raise BenchError(f"the PostgreSQL insert-rate probe failed in {target.name}: {answer['error']}")
    return answer


def seed_runs(
    client_factory: Callable[[], Any], experiment_id: str, sizes: BenchSizes, progress: Progress
) -> dict[str, Any]:
    """``search_runs`` data: runs with ``search_metrics`` metrics and ``search_params`` params each."""
    from mlflow.entities import Metric, Param

    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = client_factory()
        return local.client

    def write(index: int) -> None:
        c = client()
        run_id = c.create_run(experiment_id, run_name=f"run-{index}").info.run_id
        now = int(time.time() * 1000)
        # Deterministic values spread over [0, 1): filters select a known share of runs.
        metrics = [
            Metric(f"metric_{m}", ((index * 7919 + m * 104729) % 10_000) / 10_000, now, 0)
            for m in range(sizes.search_metrics)
        ]
        params = [Param(f"param_{p}", f"value_{(index + p) % 10}") for p in range(sizes.search_params)]
        c.log_batch(run_id, metrics=metrics, params=params, synchronous=True)

    started = time.perf_counter()
    done = 0
    with ThreadPoolExecutor(max_workers=sizes.threads) as pool:
        for _ in pool.map(write, range(sizes.search_runs)):
            done += 1
            if done % 500 == 0:
                progress(f"search_runs data: {done:,}/{sizes.search_runs:,} runs")
    seconds = time.perf_counter() - started
    return {
        "runs": sizes.search_runs,
        "seconds": round(seconds, 1),
        "runs_per_second": round(sizes.search_runs / seconds, 1),
    }


#: What the UI and scripts ask: the newest runs; a metric filter sorted by another metric; a param filter.
SEARCH_QUERIES: dict[str, dict[str, Any]] = {
    "newest_100": {},
    "metric_filter_order_by_metric": {"filter_string": "metrics.metric_0 > 0.5", "order_by": ["metrics.metric_1 DESC"]},
    "param_filter": {"filter_string": "params.param_0 = 'value_3'"},
}


def measure_search_runs(client: Any, experiment_id: str, sizes: BenchSizes) -> dict[str, Any]:
    """``search_runs`` (100 runs a page, as the UI asks) for each of SEARCH_QUERIES."""
    results: dict[str, Any] = {}
    for name, query in SEARCH_QUERIES.items():
        found: list[int] = []

        def call(_: int, query: dict[str, Any] = query, found: list[int] = found) -> None:
            found.append(len(client.search_runs([experiment_id], max_results=100, **query)))

        latency = Latency.of(_timed_calls(call, sizes.search_queries, warmup=2))
        results[name] = {**asdict(latency), "runs_returned": found[-1], **query}
    return results


def _random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes (incompressible, like model weights); return their sha256."""
    digest = hashlib.sha256()
    chunk = 8 * MIB
    with path.open("wb") as out:
        left = size
        while left > 0:
            block = os.urandom(min(chunk, left))
            digest.update(block)
            out.write(block)
            left -= len(block)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def _drop_cache(path: Path) -> None:
    """Ask the kernel to drop ``path`` from the page cache, so a read comes from disk (best effort)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except OSError as error:
        logger.debug("could not drop %s from the page cache: %s", path, error)


def disk_copy_rate(source: Path, workdir: Path) -> dict[str, float]:
    """A plain copy of ``source`` next to it: MB/s without and with fsync (the baseline)."""
    size = source.stat().st_size
    copy = workdir / f"{source.name}.copy"
    try:
        _drop_cache(source)
        started = time.perf_counter()
        shutil.copyfile(source, copy)
        plain = time.perf_counter() - started
        with copy.open("rb+") as handle:
            os.fsync(handle.fileno())
        synced = time.perf_counter() - started
    finally:
        copy.unlink(missing_ok=True)
    return {"copy_mb_per_s": round(size / MIB / plain, 1), "copy_fsync_mb_per_s": round(size / MIB / synced, 1)}


def measure_artifacts(
    client: Any,
    experiment_id: str,
    sizes: BenchSizes,
    workdir: Path,
    runner: CommandRunner,
    target: BenchTarget,
    progress: Progress,
) -> list[dict[str, Any]]:
    """Upload and download one random file of each size through the artifact proxy, checked by sha256."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    needed = max(sizes.artifact_mb, default=0) * MIB * 3 + 512 * MIB
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise BenchError(
            f"not enough free disk in {workdir} for the {max(sizes.artifact_mb)} MB artifact "
            f"({free // MIB:,} MiB free, {needed // MIB:,} MiB needed: the file, a copy and the download)",
            hint="free some space, point --workdir (MLOPS_KIT_BENCH_WORKDIR) elsewhere, or pass smaller --artifact-mb",
        )
    results = []
    for size_mb in sizes.artifact_mb:
        size = size_mb * MIB
        source = workdir / f"artifact-{size_mb}mb.bin"
        download_dir = workdir / f"download-{uuid.uuid4().hex[:8]}"
        run = client.create_run(experiment_id, run_name=f"artifact-{size_mb}mb")
        run_id = run.info.run_id
        try:
            progress(f"artifacts: writing a {size_mb:,} MB random file")
            expected = _random_file(source, size)
            progress(f"artifacts: copying {size_mb:,} MB on this disk (baseline)")
            baseline = disk_copy_rate(source, workdir)
            _drop_cache(source)
            progress(f"artifacts: uploading {size_mb:,} MB")
            with peak_memory(runner, target.server_containers) as upload_peaks:
                started = time.perf_counter()
                client.log_artifact(run_id, str(source))
                upload = time.perf_counter() - started
            progress(f"artifacts: downloading {size_mb:,} MB")
            download_dir.mkdir()
            with peak_memory(runner, target.server_containers) as download_peaks:
                started = time.perf_counter()
                local = Path(client.download_artifacts(run_id, source.name, str(download_dir)))
                download = time.perf_counter() - started
            identical = _sha256(local) == expected
            results.append(
                {
                    "size_mb": size_mb,
                    "upload_seconds": round(upload, 2),
                    "upload_mb_per_s": round(size_mb / upload, 1),
                    "download_seconds": round(download, 2),
                    "download_mb_per_s": round(size_mb / download, 1),
                    **baseline,
                    "upload_share_of_copy": round(size_mb / upload / baseline["copy_mb_per_s"], 3),
                    "download_share_of_copy": round(size_mb / download / baseline["copy_mb_per_s"], 3),
                    "sha256_identical": identical,
                    "server_peak_memory_upload_bytes": dict(upload_peaks),
                    "server_peak_memory_download_bytes": dict(download_peaks),
                }
            )
        finally:
            source.unlink(missing_ok=True)
            shutil.rmtree(download_dir, ignore_errors=True)
            # The benchmark's bytes must not stay in the artifact store (or its backups).
            try:
                get_artifact_repository(run.info.artifact_uri).delete_artifacts()  # type: ignore[no-untyped-call]
            except Exception as error:
                logger.warning("could not delete the benchmark's artifacts of run %s: %s", run_id, error)
    return results


# ---- the whole run --------------------------------------------------------------------------------


def run_benchmark(
    target: BenchTarget,
    sizes: BenchSizes,
    workdir: Path,
    runner: CommandRunner | None = None,
    progress: Progress = lambda _: None,
) -> dict[str, Any]:
    """Every measurement against ``target``; returns the figures (JSON-ready)."""
    runner = runner or CommandRunner()
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"target": target.name, "tracking_uri": target.access.base_url, "sizes": asdict(sizes)}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    # The client must not print run URLs, nor retry for minutes when something is down.
    # 32 client threads need as many pooled connections (MLflow's default keeps 10: the rest
    # would open a new TLS connection per call).
    quiet = {
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_POOL_MAXSIZE": str(max((*sizes.concurrency, sizes.threads, 10))),
    }
    with as_mlflow_client(target.access), patched_environ(quiet):
        from mlflow import MlflowClient

        client = MlflowClient()
        experiments: list[str] = []

        def experiment(purpose: str) -> str:
            experiment_id = str(
                client.create_experiment(f"{EXPERIMENT_PREFIX}{stamp}-{purpose}-{uuid.uuid4().hex[:6]}")
            )
            experiments.append(experiment_id)
            return experiment_id

        try:
            progress("idle memory")
            result["idle_memory_bytes"] = container_memory(runner, target.containers)
            progress("kept-alive GETs")
            result["keepalive_health"] = asdict(measure_keepalive(target.access, sizes.keepalive_calls))
            progress(f"warming the server up ({sizes.warmup_seconds:.0f} s)")
            result["warm_up_calls"] = warm_up(client, experiment("warm-up"), sizes.warmup_seconds)
            progress("log_metric")
            result["log_metric"] = measure_log_metric(client, experiment("log-metric"), sizes)
            if target.admin_access is not None:
                progress("log_metric as the admin")
                result["log_metric_admin"] = measure_admin_log_metric(target.admin_access, sizes, stamp)
            progress(f"log_batch, {sizes.threads} threads")
            result["log_batch"] = measure_log_batch(MlflowClient, experiment("log-batch"), sizes)
            if sizes.concurrency:
                progress(f"log_metric and log_batch at {', '.join(map(str, sizes.concurrency))} client threads")
                result["concurrency"] = measure_concurrency(MlflowClient, experiment("concurrency"), sizes)
            progress("PostgreSQL insert ceiling")
            ceiling = measure_insert_ceiling(target, sizes)
            if ceiling:
                ceiling["log_batch_share"] = round(
                    result["log_batch"]["metrics_per_second"] / ceiling["rows_per_second"], 3
                )
            result["insert_ceiling"] = ceiling
            search_experiment = experiment("search-runs")
            result["search_runs_data"] = seed_runs(MlflowClient, search_experiment, sizes, progress)
            progress("search_runs")
            result["search_runs"] = measure_search_runs(client, search_experiment, sizes)
            if sizes.artifact_mb:
                result["artifacts"] = measure_artifacts(
                    client, experiment("artifacts"), sizes, workdir, runner, target, progress
                )
        finally:
            for experiment_id in experiments:
                try:
                    client.delete_experiment(experiment_id)
                except Exception as error:
                    logger.warning("could not delete benchmark experiment %s: %s", experiment_id, error)
    return result


# ---- reporting ------------------------------------------------------------------------------------


def summary_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(measure, value) pairs of one target's figures, for a table."""
    rows: list[tuple[str, str]] = []
    if memory := result.get("idle_memory_bytes"):
        rows.append(("idle memory", f"{sum(memory.values()) / MIB:,.0f} MiB"))
    if keepalive := result.get("keepalive_health"):
        rows.append(("kept-alive GET /health p50 / max", f"{keepalive['p50_ms']} / {keepalive['max_ms']} ms"))
    if log_metric := result.get("log_metric"):
        sync = log_metric["sync"]
        rows.append(("log_metric p50 / p99", f"{sync['p50_ms']} / {sync['p99_ms']} ms"))
        rows.append(("log_metric, async logging, p50", f"{log_metric['async']['p50_ms']} ms"))
    if admin := result.get("log_metric_admin"):
        rows.append(("log_metric as admin (no permission checks) p50", f"{admin['sync']['p50_ms']} ms"))
    if batch := result.get("log_batch"):
        rows.append((f"log_batch metrics/s ({batch['threads']} threads)", f"{batch['metrics_per_second']:,.0f}"))
    for level in result.get("concurrency") or []:
        threads = level["threads"]
        latency = level["log_metric"]
        rows.append((f"log_metric p50 / p99, {threads} threads", f"{latency['p50_ms']} / {latency['p99_ms']} ms"))
        rows.append((f"log_metric calls/s, {threads} threads", f"{level['log_metric_calls_per_second']:,.0f}"))
        rows.append((f"log_batch metrics/s, {threads} threads", f"{level['log_batch_metrics_per_second']:,.0f}"))
    if ceiling := result.get("insert_ceiling"):
        rows.append(("raw PostgreSQL inserts rows/s (ceiling)", f"{ceiling['rows_per_second']:,.0f}"))
        rows.append(("log_batch share of the ceiling", f"{ceiling['log_batch_share']:.0%}"))
    for name, query in (result.get("search_runs") or {}).items():
        rows.append((f"search_runs {name} p50", f"{query['p50_ms']} ms"))
    for artifact in result.get("artifacts") or []:
        size = artifact["size_mb"]
        rows.append(
            (
                f"artifact {size:,} MB upload / download",
                f"{artifact['upload_mb_per_s']} / {artifact['download_mb_per_s']} MB/s",
            )
        )
        rows.append((f"artifact {size:,} MB disk copy (baseline)", f"{artifact['copy_mb_per_s']} MB/s"))
        rows.append((f"artifact {size:,} MB identical after download", "yes" if artifact["sha256_identical"] else "NO"))
    return rows


def machine_facts(runner: CommandRunner | None = None) -> dict[str, Any]:
    """Where a benchmark ran: cores, memory, kernel, OS, Python, Docker and Compose."""
    runner = runner or CommandRunner()

    def output(argv: list[str]) -> str:
        result = runner.run(argv, check=False, changes_state=False, timeout=60)
        return result.stdout.strip() if result.ok else f"unavailable ({result.stderr.strip()})"

    meminfo = Path("/proc/meminfo").read_text().splitlines()
    memory = {line.split(":")[0]: line.split(":")[1].strip() for line in meminfo if ":" in line}
    return {
        "nproc": os.cpu_count(),
        "mem_total": memory.get("MemTotal"),
        "mem_available_at_start": memory.get("MemAvailable"),
        "kernel": platform.release(),
        "os": output(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "docker_server": output(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_compose": output(["docker", "compose", "version", "--short"]),
        "docker_storage_driver": output(["docker", "info", "--format", "{{.Driver}}"]),
    }


# ---- the kit's own stack ------------------------------------------------------------------------


def kit_target(project: ComposeProject, access: ServerAccess) -> BenchTarget:
    """The kit's stack as a target: its containers, and the PostgreSQL probe run in its mlflow service."""

    states = [s for s in project.ps() if s.state == "running"]
    return BenchTarget(
        name=f"mlops-kit {__version__}",
        access=access,
        run_in_server=lambda script, arguments: run_in_mlflow(project, script, arguments).stdout,
        containers=[s.container for s in states],
        server_containers=[s.container for s in states if s.service in (MLFLOW.name, PROXY.name)],
        admin_access=admin_access(project.config),
    )


@contextmanager
def temporary_user(config: KitConfig) -> Iterator[ServerAccess]:
    """A throwaway non-admin user (what data scientists are), removed afterwards with its password file.

    An admin skips MLflow's permission checks; measuring as one would flatter the figures.
    """
    admin = UserAdmin(config)
    username = f"mlops-kit-bench-{uuid.uuid4().hex[:8]}"
    admin.add(username)
    try:
        yield replace(admin_access(config), username=username, password=stored_password(config, username))
    finally:
        admin.remove(username)


def bench_kit_stack(
    project: ComposeProject, sizes: BenchSizes, workdir: Path, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """`mlops-kit bench`: measure the running stack as a (temporary, non-admin) user sees it."""
    with temporary_user(project.config) as access:
        target = kit_target(project, access)
        result = run_benchmark(target, sizes, workdir, project.runner, progress)
    result["machine"] = machine_facts(project.runner)
    result["date"] = time.strftime("%Y-%m-%d")
    result["mlflow_workers"] = project.config.mlflow_workers
    return result
