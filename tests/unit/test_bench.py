"""The benchmark's own arithmetic and reporting (the measurements themselves run in integration tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_kit.workflows.bench import BenchSizes, Latency, _parse_size, disk_copy_rate, summary_rows
from tests.unit.test_cli import assert_one_line_error, kit


def test_latency_percentiles_in_milliseconds() -> None:
    latency = Latency.of([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert latency.calls == 100
    assert latency.p50_ms == 50.5
    assert latency.p99_ms == 100.0 and latency.max_ms == 100.0
    assert latency.p95_ms == 96.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1.5GiB", int(1.5 * 2**30)), ("668.2MiB ", int(668.2 * 2**20)), ("512KiB", 512 * 1024), ("0B", 0)],
)
def test_docker_stats_sizes(text: str, expected: int) -> None:
    assert _parse_size(text) == expected


def test_quick_sizes_are_smaller_than_the_full_run() -> None:
    full, quick = BenchSizes(), BenchSizes.quick()
    assert full.search_runs == 10_000 and full.artifact_mb == (100, 5120) and full.threads == 8
    assert quick.search_runs < full.search_runs and max(quick.artifact_mb) < 100
    assert full.concurrency == (1, 8, 32) and max(quick.concurrency) < 32


def test_disk_copy_baseline_leaves_only_the_source(tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"x" * 2**20)
    rates = disk_copy_rate(source, tmp_path)
    assert rates["copy_mb_per_s"] > 0 and rates["copy_fsync_mb_per_s"] > 0
    assert [p.name for p in tmp_path.iterdir()] == ["source.bin"]


def test_summary_names_every_measure() -> None:
    result = {
        "idle_memory_bytes": {"a": 2**20, "b": 2**20},
        "keepalive_health": {"p50_ms": 1.0, "max_ms": 2.0},
        "log_metric": {"sync": {"p50_ms": 3.0, "p99_ms": 9.0}, "async": {"p50_ms": 0.1}},
        "log_batch": {"threads": 8, "metrics_per_second": 4000.0},
        "insert_ceiling": {"rows_per_second": 40000.0, "log_batch_share": 0.1},
        "concurrency": [
            {
                "threads": 32,
                "log_metric": {"p50_ms": 40.0, "p99_ms": 90.0},
                "log_metric_calls_per_second": 700.0,
                "log_batch_metrics_per_second": 12000.0,
            }
        ],
        "search_runs": {"newest_100": {"p50_ms": 50.0}},
        "artifacts": [
            {
                "size_mb": 100,
                "upload_mb_per_s": 200.0,
                "download_mb_per_s": 150.0,
                "copy_mb_per_s": 400.0,
                "sha256_identical": True,
            }
        ],
    }
    rows = dict(summary_rows(result))
    assert rows["idle memory"] == "2 MiB"
    assert rows["log_metric p50 / p99"] == "3.0 / 9.0 ms"
    assert rows["log_batch share of the ceiling"] == "10%"
    assert rows["log_metric p50 / p99, 32 threads"] == "40.0 / 90.0 ms"
    assert rows["log_metric calls/s, 32 threads"] == "700"
    assert rows["log_batch metrics/s, 32 threads"] == "12,000"
    assert rows["artifact 100 MB upload / download"] == "200.0 / 150.0 MB/s"
    assert rows["artifact 100 MB identical after download"] == "yes"


def test_bench_rejects_bad_artifact_sizes_in_one_line(kit_dir: Path) -> None:
    result = kit(kit_dir, "bench", "--artifact-mb", "big")
    assert result.returncode == 2
    assert "--artifact-mb" in result.stderr and "Traceback" not in result.stderr


def test_bench_without_a_configured_stack_says_what_to_do(kit_dir: Path) -> None:
    result = kit(kit_dir, "bench", "--quick")
    assert result.returncode == 2
    assert_one_line_error(result, ".env", "mlops-kit init")
