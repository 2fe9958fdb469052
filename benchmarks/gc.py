#!/usr/bin/env python
"""Benchmark: `mlops-kit gc` of many deleted runs with long metric histories (a benchmark, not a test).

What it does, on the real Docker engine with the kit's own images:

1. starts a stack (project mlkt-bench-gc-*, a free port) with the real CLI;
2. writes two experiments of RUNS/2 runs each through the MLflow client, every run with one
   ARTIFACT_KIB artifact, then METRIC_POINTS metric points over all runs straight into the
   tracking database (one INSERT ... SELECT; the client would take most of an hour);
3. deletes one experiment (MLflow marks its runs deleted) and every run of the other one
   run by run, through the client;
4. times `mlops-kit gc --dry-run --older-than 1s --json`, then `mlops-kit gc --older-than 1s
   --yes --json`, and counts runs and metric rows through PostgreSQL before and after;
5. removes the stack.

    .venv/bin/python benchmarks/gc.py                                  # 2,000 runs, 1M points
    .venv/bin/python benchmarks/gc.py --runs 100 --metric-points 10000 # a quick check of the script

Results go to benchmarks/results/gc-<date>.json; a Markdown table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from mlops_kit.workflows.bench import machine_facts  # noqa: E402
from tests.harness import Stack, compose_down, new_stack, psql  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
KEYS = 10


def write_data(stack: Stack, runs: int, points: int, artifact_kib: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    run_ids: list[str] = []
    with stack.as_user("admin"), tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(stack.tracking_uri)
        experiments = [client.create_experiment("gc-bench-doomed"), client.create_experiment("gc-bench-runs")]
        artifact = Path(tmp, "weights.bin")
        for r in range(runs):
            run = client.create_run(experiments[r % 2], run_name=f"run-{r}")
            artifact.write_bytes(os.urandom(artifact_kib * 1024))
            client.log_artifact(run.info.run_id, str(artifact))
            client.set_terminated(run.info.run_id)
            run_ids.append(run.info.run_id)
    per_run = max(1, points // runs)
    values = ",".join(f"('{run_id}')" for run_id in run_ids)
    psql(
        stack,
        f"""INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
        SELECT 'metric_' || (i % {KEYS}), random(), 1700000000000 + i, r.run_uuid, i / {KEYS}, false
        FROM (VALUES {values}) AS r(run_uuid), generate_series(0, {per_run - 1}) AS i;""",
    )
    return {
        "runs": runs,
        "metric_points": int(psql(stack, "SELECT count(*) FROM metrics").strip()),
        "artifact_bytes": runs * artifact_kib * 1024,
        "experiments": experiments,
        "run_ids": run_ids,
        "seconds": round(time.monotonic() - started, 1),
    }


def delete_data(stack: Stack, experiments: list[str], run_ids: list[str]) -> float:
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    with stack.as_user("admin"):
        client = MlflowClient(stack.tracking_uri)
        client.delete_experiment(experiments[0])
        for run_id in run_ids[1::2]:
            client.delete_run(run_id)
    return round(time.monotonic() - started, 1)


def timed_gc(stack: Stack, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    result = stack.kit("gc", "--older-than", "1s", "--json", *args)
    answer: dict[str, Any] = json.loads(result.stdout)
    return {
        "wall_seconds": round(time.monotonic() - started, 1),
        "job_seconds": answer.get("seconds"),
        "removed": answer["removed"],
        "bytes_freed": answer["bytes_freed"],
        "skipped": len(answer.get("skipped") or []),
    }


def counts(stack: Stack) -> dict[str, int]:
    rows = psql(stack, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM metrics)").strip().split("|")
    return {"runs": int(rows[0]), "metric_points": int(rows[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--metric-points", type=int, default=1_000_000)
    parser.add_argument("--artifact-kib", type=int, default=64)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS_DIR / f"gc-{datetime.now(timezone.utc):%Y%m%d-%H%M}.json"
    base = Path(tempfile.mkdtemp(prefix="mlkt-bench-gc-"))
    stack = new_stack(base, "mlkt-bench-gc")
    result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(), "machine": machine_facts()}
    try:
        stack.init()
        stack.kit("up")
        data = write_data(stack, args.runs, args.metric_points, args.artifact_kib)
        result["data"] = {k: v for k, v in data.items() if k not in ("run_ids", "experiments")}
        result["delete_seconds"] = delete_data(stack, data["experiments"], data["run_ids"])
        time.sleep(2)
        result["before"] = counts(stack)
        result["dry_run"] = timed_gc(stack, "--dry-run")
        result["gc"] = timed_gc(stack, "--yes")
        result["after"] = counts(stack)
    finally:
        compose_down(stack.project, stack.directory)
        shutil.rmtree(base, ignore_errors=True)
        output.write_text(json.dumps(result, indent=2))
    gc, dry = result["gc"], result["dry_run"]
    print(f"results: {output}\n")
    print("| what | figure |\n|---|---|")
    size = f"{args.artifact_kib} KiB artifact each"
    print(f"| data | {data['runs']} runs, {data['metric_points']:,} metric points, {size} |")
    print(f"| `gc --dry-run` (lists and sizes everything) | {dry['wall_seconds']} s (job {dry['job_seconds']} s) |")
    print(
        f"| `gc` | {gc['wall_seconds']} s (job {gc['job_seconds']} s): {gc['removed']['runs']} runs, "
        f"{gc['removed']['experiments']} experiment, {gc['bytes_freed']:,} bytes freed, {gc['skipped']} skipped |"
    )
    print(f"| rows left | runs {result['after']['runs']}, metric points {result['after']['metric_points']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
