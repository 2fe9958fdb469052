#!/usr/bin/env python
"""Benchmark: `mlops-kit import` of a SQLite source with 10,000 runs and 1M metric points (not a test).

What it does, on the real Docker engine with the kit's own images:

1. writes the source with MLflow's own SQLAlchemy store (this checkout's MLflow, the
   release the kit serves) into a SQLite file: RUNS runs over 10 experiments, each with 5
   params, 3 tags and METRIC_POINTS/RUNS points of one metric (one log_batch per run), and
   one ARTIFACT_KIB artifact for every ARTIFACT_EVERY-th run in its artifact folder;
2. starts a stack (project mlkt-bench-imp-*, a free port) with the real CLI;
3. times `mlops-kit import --dry-run --json`, then `mlops-kit import --yes --json`, and
   takes the job's peak resident memory from its answer;
4. counts runs and metric rows in the kit's PostgreSQL, and removes the stack.

    .venv/bin/python benchmarks/import.py                                   # 10,000 runs, 1M points
    .venv/bin/python benchmarks/import.py --runs 200 --metric-points 20000  # a quick check of the script

Results go to benchmarks/results/import-<date>.json; a Markdown table is printed at the end.
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
from tests.harness import compose_down, new_stack, psql  # noqa: E402

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
EXPERIMENTS = 10


def write_source(folder: Path, runs: int, points: int, artifact_every: int, artifact_kib: int) -> dict[str, Any]:
    """The SQLite source and its artifact root, written through MLflow's SqlAlchemyStore."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    started = time.monotonic()
    database = folder / "mlflow.db"
    root = folder / "mlruns"
    store = SqlAlchemyStore(f"sqlite:///{database}", root.as_uri())
    experiments = [store.create_experiment(f"import-bench-{e}") for e in range(EXPERIMENTS)]
    per_run = max(1, points // runs)
    artifact_bytes = 0
    first = 1_700_000_000_000
    for r in range(runs):
        run = store.create_run(experiments[r % EXPERIMENTS], "bench", first + r, [], f"run-{r}")
        store.log_batch(
            run.info.run_id,
            metrics=[Metric("loss", 1.0 / (step + 1), first + r + step, step) for step in range(per_run)],
            params=[Param(f"param_{i}", str(i * r)) for i in range(5)],
            tags=[RunTag("kind", "bench"), RunTag("index", str(r)), RunTag("team", f"team-{r % 7}")],
        )
        if r % artifact_every == 0:
            target = Path(run.info.artifact_uri.removeprefix("file://"), "weights.bin")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(os.urandom(artifact_kib * 1024))
            artifact_bytes += artifact_kib * 1024
        store.update_run_info(run.info.run_id, RunStatus.FINISHED, first + r + per_run, f"run-{r}")
        if r and r % 1000 == 0:
            print(f"source: {r}/{runs} runs", file=sys.stderr, flush=True)
    store.engine.dispose()
    return {
        "runs": runs,
        "metric_points": runs * per_run,
        "database_bytes": database.stat().st_size,
        "artifact_files": len(range(0, runs, artifact_every)),
        "artifact_bytes": artifact_bytes,
        "seconds": round(time.monotonic() - started, 1),
        "database": str(database),
        "artifacts": str(root),
    }


def timed_import(kit: Any, *args: str) -> dict[str, Any]:
    started = time.monotonic()
    answer: dict[str, Any] = json.loads(kit("import", *args, "--json").stdout)
    return {"wall_seconds": round(time.monotonic() - started, 1), **answer}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--metric-points", type=int, default=1_000_000)
    parser.add_argument("--artifact-every", type=int, default=10, help="one artifact per this many runs")
    parser.add_argument("--artifact-kib", type=int, default=256)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS_DIR / f"import-{datetime.now(timezone.utc):%Y%m%d-%H%M}.json"
    base = Path(tempfile.mkdtemp(prefix="mlkt-bench-imp-"))
    stack = new_stack(base, "mlkt-bench-imp")
    result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(), "machine": machine_facts()}
    try:
        source_folder = base / "source"
        source_folder.mkdir()
        source = write_source(source_folder, args.runs, args.metric_points, args.artifact_every, args.artifact_kib)
        result["source"] = source
        stack.init()
        stack.kit("up")
        where = [source["database"], "--artifacts", source["artifacts"]]
        result["dry_run"] = timed_import(stack.kit, *where, "--dry-run")
        result["import"] = timed_import(stack.kit, *where, "--yes")
        rows = psql(stack, "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM metrics)").strip().split("|")
        result["after"] = {"runs": int(rows[0]), "metric_points": int(rows[1])}
    finally:
        compose_down(stack.project, stack.directory)
        shutil.rmtree(base, ignore_errors=True)
        output.write_text(json.dumps(result, indent=2))
    source, dry, done = result["source"], result["dry_run"], result["import"]
    points_per_second = round(result["after"]["metric_points"] / max(done["seconds"], 0.1))
    print(f"results: {output}\n")
    print("| what | figure |\n|---|---|")
    print(
        f"| source (SQLite, MLflow's own store) | {source['runs']:,} runs, "
        f"{source['metric_points']:,} metric points, {source['database_bytes'] / 2**20:.0f} MiB database, "
        f"{source['artifact_files']:,} artifacts ({source['artifact_bytes'] / 2**20:.0f} MiB) |"
    )
    print(f"| `import --dry-run` | {dry['wall_seconds']} s |")
    print(
        f"| `import` | {done['wall_seconds']} s wall, job {done['seconds']} s "
        f"({points_per_second:,} metric points/s); peak memory of the job {done['peak_memory_mib']} MiB |"
    )
    after = result["after"]
    print(f"| rows in the kit after | runs {after['runs']:,}, metric points {after['metric_points']:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
