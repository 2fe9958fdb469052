#!/usr/bin/env python
"""Benchmark: the kit's stack next to a stock `mlflow server`, one run, one machine (not a test).

What it does, one stack at a time (so they never compete for the two cores):

1. **stock**: benchmarks/stock/compose.yaml (project ``mlkt-sbs-stock``): ``mlflow server``
   of the same MLflow release, with MLflow's own uvicorn settings and defaults, plain HTTP on
   a free loopback port, no login, on the same PostgreSQL image with its default settings.
   The measurements of ``mlops_kit.workflows.bench`` run against it in this process; then it is removed.
2. **kit**: a fresh copy of the kit, ``mlops-kit init --project-name mlkt-sbs --port <free>``,
   ``mlops-kit up``, then ``mlops-kit bench --json`` exactly as an operator runs it (HTTPS
   through the proxy, logged in as a temporary non-admin user); then ``mlops-kit down --volumes``.

Both get the same sizes and the same measurement code (mlops_kit/workflows/bench.py). Each stack
idles 60 s after it is healthy before its memory is read, then is warmed up for 30 s
(every worker imports, fills its pools and compiles its SQL in its first minute). The result goes to
benchmarks/results/side_by_side-<date>.json, and a Markdown table (kit, stock, ratio) is
printed; docs/performance.md keeps the latest full-size one.

    .venv/bin/python benchmarks/side_by_side.py                # full size (about 25 min)
    .venv/bin/python benchmarks/side_by_side.py --quick        # a few minutes: checks the setup

It refuses to start if containers or volumes named mlkt-sbs* exist, and removes everything
it created when it ends (also after a failure).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from backup_restore import command_output, leftovers, log  # noqa: E402

from mlops_kit import MLFLOW_VERSION, __version__  # noqa: E402
from mlops_kit.runner import CommandRunner  # noqa: E402
from mlops_kit.services.mlflow import ServerAccess  # noqa: E402
from mlops_kit.workflows.bench import BenchSizes, BenchTarget, machine_facts, run_benchmark, summary_rows  # noqa: E402
from tests.harness import clean_env, free_port, new_stack  # noqa: E402

PREFIX = "mlkt-sbs"
STOCK_PROJECT = f"{PREFIX}-stock"
KIT_PROJECT = PREFIX
STOCK_COMPOSE = REPO_ROOT / "benchmarks" / "stock" / "compose.yaml"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SETTLE_SECONDS = 60


def ours() -> list[str]:
    """Containers and volumes named mlkt-sbs* (both stacks')."""
    found = leftovers(PREFIX)
    return found["containers"] + found["volumes"]


def compose_stock(secrets_dir: Path, port: int, workers: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(
        {"STOCK_SECRETS_DIR": str(secrets_dir), "STOCK_PORT": str(port), "STOCK_MLFLOW_WORKERS": str(workers)}
    )
    return subprocess.run(
        ["docker", "compose", "--project-name", STOCK_PROJECT, "--file", str(STOCK_COMPOSE), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


def bench_stock(sizes: BenchSizes, workdir: Path, workers: int) -> dict[str, Any]:
    """Start the stock server, measure it, remove it."""
    secrets_dir = Path(tempfile.mkdtemp(prefix=f"{STOCK_PROJECT}-"))
    (secrets_dir / "postgres_password").write_text(secrets.token_urlsafe(24))
    port = free_port()
    try:
        log(f"stock: starting mlflow server ({workers} workers) on 127.0.0.1:{port}")
        up = compose_stock(secrets_dir, port, workers, "up", "--detach", "--wait", "--wait-timeout", "600")
        if up.returncode != 0:
            raise RuntimeError(f"stock stack did not start:\n{up.stderr}")
        time.sleep(SETTLE_SECONDS)
        containers = compose_stock(secrets_dir, port, workers, "ps", "--format", "{{.Name}}").stdout.split()
        server = next(c for c in containers if "mlflow" in c)
        server_log = subprocess.run(["docker", "logs", server], capture_output=True, text=True, check=False)
        if "MLOPS_KIT_FAST_PATHS is off" not in server_log.stdout + server_log.stderr:
            raise RuntimeError("the stock server does not say it runs MLflow's own tracking store")

        def run_in_server(script: str, arguments: Sequence[str]) -> str:
            result = subprocess.run(
                ["docker", "exec", "-i", "--user", "mlflow", server, "python", "-", *arguments],
                input=script,
                capture_output=True,
                text=True,
                check=True,
                timeout=3600,
            )
            return result.stdout

        target = BenchTarget(
            name=f"stock mlflow server {MLFLOW_VERSION}",
            access=ServerAccess(base_url=f"http://127.0.0.1:{port}"),
            run_in_server=run_in_server,
            containers=containers,
            server_containers=[server],
        )
        result = run_benchmark(target, sizes, workdir, CommandRunner(), progress=lambda what: log(f"stock: {what}"))
        result["mlflow_workers"] = workers
        return result
    finally:
        log("stock: removing")
        compose_stock(secrets_dir, port, workers, "down", "--volumes", "--remove-orphans")
        shutil.rmtree(secrets_dir, ignore_errors=True)


def bench_kit(sizes: BenchSizes, workdir: Path) -> dict[str, Any]:
    """Install the kit in a fresh folder, bring it up, run `mlops-kit bench --json`, take it down."""
    stack = new_stack(Path(tempfile.mkdtemp(prefix=f"{KIT_PROJECT}-")), project=KIT_PROJECT)
    stack.cli_timeout = 4 * 3600  # the full-size bench runs for hours
    kit, directory = stack.kit, stack.directory
    try:
        stack.init()
        log("kit: mlops-kit up")
        started = time.monotonic()
        kit("up")
        up_seconds = time.monotonic() - started
        time.sleep(SETTLE_SECONDS)
        output = workdir / "kit-bench.json"
        log("kit: mlops-kit bench --json (progress is not shown while it runs)")
        kit(
            "bench",
            "--json",
            "--output",
            str(output),
            "--workdir",
            str(workdir),
            "--log-metric-calls",
            str(sizes.log_metric_calls),
            "--batch-calls",
            str(sizes.batch_calls),
            "--threads",
            str(sizes.threads),
            "--search-runs",
            str(sizes.search_runs),
            "--artifact-mb",
            ",".join(str(s) for s in sizes.artifact_mb) or "0",
            "--concurrency",
            ",".join(str(n) for n in sizes.concurrency) or "0",
            "--warmup-seconds",
            str(sizes.warmup_seconds),
        )
        result: dict[str, Any] = json.loads(output.read_text())
        result["up_seconds"] = round(up_seconds, 1)
        env_lines = (directory / ".env").read_text().splitlines()
        result["settings"] = dict(
            line.split("=", 1)
            for line in env_lines
            if "=" in line
            and not line.startswith("#")
            and line.startswith(("MLOPS_KIT_MLFLOW", "POSTGRES_", "MLOPS_KIT_DB"))
        )
        return result
    finally:
        log("kit: mlops-kit down --volumes")
        stack.destroy()
        shutil.rmtree(directory.parent, ignore_errors=True)


def _ratio(kit: float | None, stock: float | None, lower_is_better: bool) -> str:
    if not kit or not stock:
        return ""
    ratio = stock / kit if lower_is_better else kit / stock
    return f"{ratio:.1f}×"


def markdown_table(results: dict[str, Any]) -> str:
    """Kit, stock and how many times better the kit is, per measure."""
    kit, stock = results["kit"], results["stock"]
    kit_rows, stock_rows = dict(summary_rows(kit)), dict(summary_rows(stock))
    numbers: dict[str, tuple[Any, Any, bool]] = {
        "log_metric p50 / p99": (kit["log_metric"]["sync"]["p50_ms"], stock["log_metric"]["sync"]["p50_ms"], True),
        "kept-alive GET /health p50 / max": (
            kit["keepalive_health"]["p50_ms"],
            stock["keepalive_health"]["p50_ms"],
            True,
        ),
    }
    stock_levels = {level["threads"]: level for level in stock.get("concurrency") or []}
    for level in kit.get("concurrency") or []:
        threads, other = level["threads"], stock_levels.get(level["threads"])
        if other is None:
            continue
        numbers[f"log_metric p50 / p99, {threads} threads"] = (
            level["log_metric"]["p50_ms"],
            other["log_metric"]["p50_ms"],
            True,
        )
        for row, field in (
            ("log_metric calls/s", "log_metric_calls_per_second"),
            ("log_batch metrics/s", "log_batch_metrics_per_second"),
        ):
            numbers[f"{row}, {threads} threads"] = (level[field], other[field], False)
    for key in kit_rows:
        if key.startswith("log_batch metrics/s ("):  # the main log_batch row, not a concurrency level's
            numbers[key] = (kit["log_batch"]["metrics_per_second"], stock["log_batch"]["metrics_per_second"], False)
        if key.startswith("search_runs "):
            name = key.removeprefix("search_runs ").removesuffix(" p50")
            numbers[key] = (kit["search_runs"][name]["p50_ms"], stock["search_runs"][name]["p50_ms"], True)
        if key.startswith("idle memory"):
            numbers[key] = (sum(kit["idle_memory_bytes"].values()), sum(stock["idle_memory_bytes"].values()), True)
    lines = [
        "| measure | mlops-kit | stock `mlflow server` | kit vs stock |",
        "|---|---:|---:|---:|",
    ]
    for key, value in kit_rows.items():
        kit_number, stock_number, lower = numbers.get(key, (None, None, True))
        lines.append(f"| {key} | {value} | {stock_rows.get(key, '')} | {_ratio(kit_number, stock_number, lower)} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--log-metric-calls", type=int)
    parser.add_argument("--batch-calls", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--search-runs", type=int)
    parser.add_argument("--artifact-mb", help="comma-separated MB, 0 for none (default 100,5120)")
    parser.add_argument("--concurrency", help="comma-separated client thread counts, 0 for none (default 1,8,32)")
    parser.add_argument("--stock-workers", type=int, default=2, help="uvicorn workers of the stock server (default 2)")
    parser.add_argument("--only", choices=("kit", "stock"), help="measure one side only")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/var/tmp"), help="where artifact files go (default /var/tmp)"
    )
    parser.add_argument("--output", type=Path, help="JSON result (default benchmarks/results/side_by_side-<date>.json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = BenchSizes.quick() if args.quick else BenchSizes()
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "log_metric_calls": args.log_metric_calls,
            "batch_calls": args.batch_calls,
            "threads": args.threads,
            "search_runs": args.search_runs,
        }.items()
        if v is not None
    }
    if args.artifact_mb is not None:
        overrides["artifact_mb"] = tuple(int(s) for s in args.artifact_mb.split(",") if int(s) > 0)
    if args.concurrency is not None:
        overrides["concurrency"] = tuple(int(n) for n in args.concurrency.split(",") if int(n) > 0)
    sizes = dataclasses.replace(sizes, **overrides)
    if found := ours():
        raise SystemExit(f"containers or volumes named {PREFIX}* exist already: {found}; remove them first")
    workdir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-", dir=args.workdir))
    started = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "side_by_side",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "kit_version": __version__,
        "mlflow_version": MLFLOW_VERSION,
        "commit": command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]),
        "machine": machine_facts(),
        "sizes": dataclasses.asdict(sizes),
    }
    output = args.output or RESULTS_DIR / f"side_by_side-{results['date']}{'-quick' if args.quick else ''}.json"
    try:
        if args.only != "kit":
            results["stock"] = bench_stock(sizes, workdir, args.stock_workers)
        if args.only != "stock":
            results["kit"] = bench_kit(sizes, workdir)
    finally:
        results["wall_seconds"] = round(time.monotonic() - started, 1)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=2) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
        if left := ours():
            log(f"WARNING: left behind: {left}")
        log(f"results: {output}")
    if "kit" in results and "stock" in results:
        print(markdown_table(results))
    else:
        side = results.get("kit") or results.get("stock") or {}
        print("\n".join(f"| {k} | {v} |" for k, v in summary_rows(side)))


if __name__ == "__main__":
    main()
