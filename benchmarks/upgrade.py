#!/usr/bin/env python
"""Benchmark: `mlops-kit upgrade` of a database with 1M metric points (a benchmark, not a test).

What it does, on the real Docker engine with the kit's own images:

1. builds the test image of the kit's MLflow with an older release (tests/integration/old_mlflow,
   MLflow 3.10.1), starts a stack on it (project mlkt-bench-upg, a free port);
2. writes one experiment and RUNS runs through the MLflow client, then METRIC_POINTS metric
   points straight into the tracking database with one INSERT ... SELECT (10 keys per run,
   steps and timestamps increasing; the client would take most of an hour for a million);
3. points `.env` at the kit's MLflow image (3.17.2) and runs `mlops-kit upgrade --yes --json`:
   wall time, the downtime it reports (MLflow stopped until the new version passed `check`),
   the backup and drill it ran first, the size of the database volume, and the disk the upgrade
   used (the copy of the volume, the backup repository's growth);
4. counts the metric points again through PostgreSQL, then removes everything.

    .venv/bin/python benchmarks/upgrade.py                        # 1,000,000 points
    .venv/bin/python benchmarks/upgrade.py --metric-points 20000  # a quick check of the script

Results go to benchmarks/results/upgrade-<date>.json; a Markdown table is printed at the end
(docs/upgrading.md holds the latest full-size one).
"""

from __future__ import annotations

import argparse
import json
import shutil
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
from tests.harness import Stack, compose_down, new_stack, psql  # noqa: E402

OLD_MLFLOW = "3.10.1"
OLD_IMAGE = f"mlops-kit/mlflow:{OLD_MLFLOW}-kit-test"
NEW_IMAGE = "mlops-kit/mlflow:3.17.2-kit0.11.0"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
KEYS = 10


def build_old_image() -> None:
    subprocess.run(
        [
            "docker",
            "build",
            "--quiet",
            "--force-rm",
            "--build-arg",
            f"OLD_MLFLOW={OLD_MLFLOW}",
            "-t",
            OLD_IMAGE,
            str(REPO_ROOT / "tests/integration/old_mlflow"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def volume_bytes(volume: str) -> int:
    """Bytes of a volume's files (du in a throwaway container of the backup image)."""
    out = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{volume}:/v:ro",
            "--entrypoint",
            "du",
            "mlops-kit/backup:kit0.11.0",
            "-sb",
            "/v",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return int(out.split()[0])


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_data(stack: Stack, runs: int, points: int) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    with stack.as_user("admin"):
        client = MlflowClient(stack.tracking_uri)
        experiment_id = client.create_experiment("upgrade-bench")
        run_ids = []
        for r in range(runs):
            run = client.create_run(experiment_id, run_name=f"run-{r}")
            client.log_param(run.info.run_id, "index", str(r))
            run_ids.append(run.info.run_id)
    per_run = points // runs
    values = ",".join(f"('{run_id}')" for run_id in run_ids)
    # One statement: points spread over the runs, KEYS keys each, steps and timestamps increasing.
    psql(
        stack,
        f"""INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
        SELECT 'metric_' || (i % {KEYS}), random(), 1700000000000 + i, r.run_uuid, i / {KEYS}, false
        FROM (VALUES {values}) AS r(run_uuid), generate_series(0, {per_run - 1}) AS i;
        INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
        SELECT DISTINCT ON (run_uuid, key) key, value, timestamp, step, is_nan, run_uuid
        FROM metrics ORDER BY run_uuid, key, step DESC, timestamp DESC
        ON CONFLICT DO NOTHING;""",
    )
    count = int(psql(stack, "SELECT count(*) FROM metrics").strip())
    return {"runs": runs, "metric_points": count, "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metric-points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS_DIR / f"upgrade-{datetime.now(timezone.utc):%Y%m%d-%H%M}.json"
    build_old_image()
    base = Path(tempfile.mkdtemp(prefix="mlkt-bench-upg-"))
    stack = new_stack(base, "mlkt-bench-upg")
    result: dict[str, Any] = {"date": datetime.now(timezone.utc).isoformat(), "machine": machine_facts()}
    try:
        stack.init(env={"MLOPS_KIT_MLFLOW_IMAGE": OLD_IMAGE})
        stack.kit("up")
        result["data"] = write_data(stack, args.runs, args.metric_points)
        env = stack.directory / ".env"
        env.write_text(
            env.read_text().replace(f"MLOPS_KIT_MLFLOW_IMAGE={OLD_IMAGE}", f"MLOPS_KIT_MLFLOW_IMAGE={NEW_IMAGE}")
        )
        free_before = shutil.disk_usage("/var/lib/docker").free
        started = time.monotonic()
        answer = json.loads(stack.kit("upgrade", "--yes", "--json").stdout)
        result["upgrade_wall_seconds"] = round(time.monotonic() - started, 1)
        result["upgrade"] = answer
        result["database_volume_bytes"] = volume_bytes(answer["previous_volume"])
        result["upgraded_volume_bytes"] = volume_bytes(answer["upgraded_volume"])
        result["backup_repository_bytes"] = dir_bytes(stack.directory / "backups" / "repository")
        result["docker_disk_used_bytes"] = free_before - shutil.disk_usage("/var/lib/docker").free
        result["metric_points_after"] = int(psql(stack, "SELECT count(*) FROM metrics").strip())
    finally:
        stack.destroy()
        compose_down(stack.project, stack.directory)
        shutil.rmtree(base, ignore_errors=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    upgrade = result["upgrade"]
    rows = [
        ("metric points (before / after)", f"{result['data']['metric_points']:,} / {result['metric_points_after']:,}"),
        ("database volume", f"{result['database_volume_bytes'] / 2**20:,.0f} MiB"),
        ("upgrade, wall time (backup, drill, migration, check)", f"{result['upgrade_wall_seconds']:.0f} s"),
        ("MLflow down (writers stopped until check passed)", f"{upgrade['downtime_seconds']:.0f} s"),
        ("plan's downtime estimate", f"{upgrade['plan']['downtime_seconds_estimate']} s"),
        ("pre-upgrade drill RTO", f"{upgrade['drill_rto_seconds']:.0f} s"),
        ("disk: the copy (upgraded volume)", f"{result['upgraded_volume_bytes'] / 2**20:,.0f} MiB"),
        ("disk: backup repository", f"{result['backup_repository_bytes'] / 2**20:,.0f} MiB"),
        ("disk: Docker's data folder, used by the upgrade", f"{result['docker_disk_used_bytes'] / 2**20:,.0f} MiB"),
    ]
    print(f"\n| upgrade {OLD_MLFLOW} -> 3.17.2 | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
