#!/usr/bin/env python
"""Benchmark: what monitoring costs (a benchmark, not a test).

On the real Docker engine with the kit's own images:

1. starts a stack with the bundled monitoring (project mlkt-bench-mon-*, a free port,
   scrape interval 15 s, the artifact store walked every 10 s);
2. writes RUNS runs through the MLflow client (10 metric points and one small artifact
   each), then FILES more files straight into the artifacts volume (a large store to walk);
3. times SCRAPES scrapes of /metrics with the `metrics` login (p50, p95, bytes, samples);
4. waits WAIT seconds with the stack idle, then reads: the metrics service's last walk of
   the artifact store (files, seconds), Prometheus's series and samples per second, the
   size of its data volume, and each monitoring service's memory (`docker stats`);
5. removes the stack.

    .venv/bin/python benchmarks/monitoring.py                         # defaults below
    .venv/bin/python benchmarks/monitoring.py --files 1000 --wait 60  # a quick check

Results go to benchmarks/results/monitoring-<date>.json; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from mlops_kit.workflows.bench import machine_facts  # noqa: E402
from tests.harness import Stack, compose_down, new_stack, prometheus_query, volume_mountpoint  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MEBI = 2**20


def write_runs(stack: Stack, runs: int) -> None:
    from mlflow.tracking import MlflowClient

    with stack.as_user("admin"), tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(stack.tracking_uri)
        experiment = client.create_experiment("monitoring-bench")
        artifact = Path(tmp, "notes.txt")
        for r in range(runs):
            run = client.create_run(experiment, run_name=f"run-{r}")
            for step in range(10):
                client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
            artifact.write_bytes(os.urandom(1024))
            client.log_artifact(run.info.run_id, str(artifact))
            client.set_terminated(run.info.run_id)


def write_files(stack: Stack, files: int) -> None:
    """FILES 4 KiB files in 1,000-file folders, written into the artifacts volume by a helper container."""
    volume = stack.env_values().get("MLOPS_KIT_ARTIFACTS_VOLUME") or f"{stack.project}_artifacts"
    script = (
        "import os\n"
        f"for i in range({files}):\n"
        "    folder = f'/a/bench/{i // 1000}'\n"
        "    os.makedirs(folder, exist_ok=True)\n"
        "    open(f'{folder}/{i}.bin', 'wb').write(b'x' * 4096)\n"
    )
    subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{volume}:/a",
            "--entrypoint",
            "python3",
            stack.env_values()["MLOPS_KIT_METRICS_IMAGE"],
            "-c",
            script,
        ],
        check=True,
        capture_output=True,
    )


def scrape_times(stack: Stack, scrapes: int) -> dict[str, Any]:
    session = stack.session(None)
    session.auth = ("metrics", (stack.directory / "secrets" / "metrics_password").read_text().strip())
    seconds, size, samples = [], 0, 0
    for _ in range(scrapes):
        started = time.perf_counter()
        response = session.get(f"{stack.tracking_uri}/metrics", timeout=60)
        seconds.append(time.perf_counter() - started)
        response.raise_for_status()
        size = len(response.content)
        samples = sum(1 for line in response.text.splitlines() if line and not line.startswith("#"))
    seconds.sort()
    return {
        "scrapes": scrapes,
        "p50_ms": round(statistics.median(seconds) * 1000, 1),
        "p95_ms": round(seconds[int(len(seconds) * 0.95) - 1] * 1000, 1),
        "bytes": size,
        "samples": samples,
    }


def query(stack: Stack, expr: str) -> float:
    result = prometheus_query(stack, expr)
    return float(result[0]["value"][1]) if result else float("nan")


def memory_mib(stack: Stack, services: tuple[str, ...]) -> dict[str, float]:
    names = {stack.container(s)["Name"].lstrip("/"): s for s in services}
    out = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    usage: dict[str, float] = {}
    for line in out.splitlines():
        name, used = line.split()[0], line.split()[1]
        number, unit = float(used.rstrip("KMGiB")), used.lstrip("0123456789.")
        usage[names[name]] = round(number * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit], 1)
    return usage


def volume_bytes(volume: str) -> int:
    return sum(p.stat().st_size for p in volume_mountpoint(volume).rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--wait", type=int, default=300, help="idle seconds before reading Prometheus and memory")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mlkt-bench-mon-"))
    stack = new_stack(base, "mlkt-bench-mon")
    figures: dict[str, Any] = {"machine": machine_facts(), "started": datetime.now(timezone.utc).isoformat()}
    try:
        stack.init("--monitoring")
        stack.set_env("MLOPS_KIT_PROMETHEUS_SCRAPE_INTERVAL", "15s")
        stack.set_env("MLOPS_KIT_METRICS_SCAN_SECONDS", "10")
        stack.kit("up")
        write_runs(stack, args.runs)
        write_files(stack, args.files)
        figures["scrape"] = scrape_times(stack, args.scrapes)
        time.sleep(args.wait)
        figures["artifact_walk"] = {
            "files": query(stack, "mlops_kit_artifact_store_files"),
            "seconds": round(query(stack, "mlops_kit_artifact_store_scan_duration_seconds"), 3),
        }
        rate = query(stack, "rate(prometheus_tsdb_head_samples_appended_total[2m])")
        figures["prometheus"] = {
            "series": query(stack, "prometheus_tsdb_head_series"),
            "samples_per_second": round(rate, 1),
            # Prometheus stores 1-2 bytes per sample once compacted: the upper figure per day.
            "disk_per_day_mib_at_2_bytes_per_sample": round(rate * 86400 * 2 / MEBI, 1),
            "data_volume_mib_after_wait": round(volume_bytes(f"{stack.project}_prometheus-data") / MEBI, 1),
        }
        figures["memory_mib"] = memory_mib(stack, ("metrics", "prometheus", "alertmanager"))
        figures["args"] = vars(args)
    finally:
        stack.destroy()
        compose_down(stack.project, stack.directory)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"monitoring-{datetime.now(timezone.utc):%Y%m%d-%H%M}.json"
    out.write_text(json.dumps(figures, indent=2))
    scrape, prom, walk, memory = (
        figures["scrape"],
        figures["prometheus"],
        figures["artifact_walk"],
        figures["memory_mib"],
    )
    print(f"results: {out}\n")
    print("| measure | value |\n|---|---|")
    print(
        f"| /metrics scrape p50 / p95 | {scrape['p50_ms']} / {scrape['p95_ms']} ms ({scrape['samples']} samples, "
        f"{scrape['bytes'] / 1024:.0f} KiB) |"
    )
    print(f"| artifact store walk | {walk['files']:.0f} files in {walk['seconds']} s |")
    print(
        f"| Prometheus | {prom['series']:.0f} series, {prom['samples_per_second']} samples/s, "
        f"at most {prom['disk_per_day_mib_at_2_bytes_per_sample']} MiB/day |"
    )
    print(
        f"| idle memory: metrics / prometheus / alertmanager | {memory['metrics']} / {memory['prometheus']} / "
        f"{memory['alertmanager']} MiB |"
    )


if __name__ == "__main__":
    main()
