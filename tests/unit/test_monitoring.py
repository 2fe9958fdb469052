"""Monitoring without Docker: the scrape job, receivers' secrets, alerts, metrics code, records.

The parts that need the images (promtool on the rules, the live endpoint, the bundled
Prometheus and Alertmanager) are in tests/integration/test_monitoring.py.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from mlops_kit.cli.monitoring import alert_lines
from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.errors import ConfigError
from mlops_kit.workflows import records
from mlops_kit.workflows.monitoring import DASHBOARD_FILE, parse_alerts, scrape_config, set_smtp_password, set_webhook
from tests.conftest import REPO_ROOT, load_image_module

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost", addresses=())


@pytest.fixture
def config(kit_dir: Path) -> Any:
    init_env_file(kit_dir, {"COMPOSE_PROJECT_NAME": "mon-unit", "MLOPS_KIT_PORT": "5997"}, host=HOST)
    return load_config(kit_dir, environ={})


def test_scrape_config_is_one_https_job_with_the_metrics_login(config: Any) -> None:
    text = scrape_config(config)
    (job,) = yaml.safe_load(text)
    assert job["job_name"] == "mlops-kit" and job["scheme"] == "https" and job["metrics_path"] == "/metrics"
    assert job["basic_auth"] == {"username": "metrics", "password_file": str(config.secrets_path / "metrics_password")}
    assert job["static_configs"] == [
        {"targets": ["localhost:5997"], "labels": {"stack": "mon-unit", "instance": "mon-unit"}}
    ]
    assert job["tls_config"]["ca_file"].endswith("mlops-kit-ca.crt")
    # The password itself is never printed, only where to read it.
    assert (config.secrets_path / "metrics_password").read_text().strip() not in text
    odd = "/etc/prom files/p: #1"  # a path YAML would read as a comment or a mapping unless quoted
    custom = yaml.safe_load(
        scrape_config(config, target="mlflow.example.org:443", password_file=odd, ca_file="/etc/ca.pem")
    )[0]
    assert custom["static_configs"][0]["targets"] == ["mlflow.example.org:443"]
    assert custom["basic_auth"]["password_file"] == odd and custom["tls_config"]["ca_file"] == "/etc/ca.pem"


def test_the_webhook_url_is_a_secret_file_and_never_in_an_error(config: Any) -> None:
    token = "T000/B000/XXXXXXXXXXXXsecretXXXX"
    with pytest.raises(ConfigError) as refused:
        set_webhook(config, "slack", f"ftp://hooks.example.org/{token}")
    assert token not in str(refused.value) and "http(s) URL" in str(refused.value)
    path = set_webhook(config, "slack", f"https://hooks.slack.com/services/{token}")
    assert path.read_text() == f"https://hooks.slack.com/services/{token}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "MLOPS_KIT_ALERT_WEBHOOK=slack" in (config.project_dir / ".env").read_text()
    assert load_config(config.project_dir, environ={}).alert_webhook == "slack"


def test_the_smtp_password_is_one_line_in_a_private_file(config: Any) -> None:
    with pytest.raises(ConfigError):
        set_smtp_password(config, "two\nlines")
    path = set_smtp_password(config, "s3cret-smtp-pass")
    assert path.read_text() == "s3cret-smtp-pass\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_monitoring_adds_its_overlay_and_services(kit_dir: Path) -> None:
    from mlops_kit.services import kit_services

    init_env_file(kit_dir, {"MLOPS_KIT_MONITORING": "true"}, host=HOST)
    config = load_config(kit_dir, environ={})
    assert config.compose_file_setting == "compose.yaml:docker/compose/monitoring.yaml"
    assert "COMPOSE_FILE=compose.yaml:docker/compose/monitoring.yaml" in (kit_dir / ".env").read_text()
    names = [s.name for s in kit_services(config)]
    assert names[-2:] == ["prometheus", "alertmanager"] and "metrics" in names
    off = load_config(kit_dir, environ={"MLOPS_KIT_MONITORING": "false"})
    assert "prometheus" not in [s.name for s in kit_services(off)]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MLOPS_KIT_PROMETHEUS_SCRAPE_INTERVAL", "often", "30s"),
        ("MLOPS_KIT_ALERT_EMAIL_TO", "ops@example.org, 'x'@y", "email addresses"),
        ("MLOPS_KIT_ALERT_EMAIL_FROM", "kit", "email address"),
        ("MLOPS_KIT_ALERT_SMTP_HOST", "smtp.example.org", "host:port"),
        ("MLOPS_KIT_ALERT_SMTP_USER", "o'brien", "quotes"),
    ],
)
def test_a_bad_monitoring_setting_is_named(kit_dir: Path, variable: str, value: str, expected: str) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    with pytest.raises(ConfigError) as bad:
        load_config(kit_dir, environ={variable: value})
    assert variable in str(bad.value) and expected in str(bad.value)
    assert "\n" not in str(bad.value)


def test_alertmanager_timestamps_with_nanoseconds_are_read() -> None:
    (alert,) = parse_alerts(json.dumps([{**AMTOOL_ANSWER[1], "startsAt": "2026-11-30T09:00:00.123456789Z"}]))
    assert alert.since == pytest.approx(1796029200.123456, abs=1e-3)


AMTOOL_ANSWER = [
    {
        "labels": {
            "alertname": "MlopsKitServiceDown",
            "severity": "critical",
            "service": "mlflow",
            "job": "mlops-kit",
            "instance": "127.0.0.1:9100",
        },
        "annotations": {"summary": "mlflow has not answered for 5 minutes"},
        "startsAt": "2026-11-30T10:00:00.000Z",
        "status": {"state": "active"},
    },
    {
        "labels": {"alertname": "MlopsKitBackupFailed", "severity": "critical", "job": "mlops-kit"},
        "annotations": {"summary": "The last backup of x failed"},
        "startsAt": "2026-11-30T09:00:00Z",
        "status": {"state": "active"},
    },
]


def test_alerts_are_read_from_amtool_and_shown_one_line_each() -> None:
    alerts = parse_alerts(json.dumps(AMTOOL_ANSWER))
    assert [a.name for a in alerts] == ["MlopsKitBackupFailed", "MlopsKitServiceDown"]  # oldest first
    assert alerts[1].labels == {"service": "mlflow", "job": "mlops-kit", "instance": "127.0.0.1:9100"}
    now = alerts[1].since + 600
    lines = alert_lines(alerts, now)
    assert lines[0] == "[fail]alerts: 2 firing[/]"
    assert "MlopsKitServiceDown" in lines[2] and "service=mlflow" in lines[2] and "instance" not in lines[2]
    assert alert_lines([], now) == ["[ok]alerts: none firing[/]"]
    assert parse_alerts("") == []


# ---- code that runs in the images ------------------------------------------------------------


@pytest.fixture
def kit_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("MLOPS_KIT_STATUS_DIR", str(tmp_path / "status"))
    monkeypatch.setenv("MLOPS_KIT_VOLUMES_DIR", str(tmp_path / "volumes"))
    yield load_image_module("kit_metrics", "docker/metrics/kit_metrics.py")


def test_foreign_runtime_metrics_are_dropped(kit_metrics: ModuleType) -> None:
    text = "\n".join(
        [
            "# HELP go_goroutines Number of goroutines.",
            "# TYPE go_goroutines gauge",
            "go_goroutines 12",
            "# HELP pg_up Whether the last scrape could connect.",
            "# TYPE pg_up gauge",
            'pg_up{server="x"} 1',
            "process_cpu_seconds_total 3",
            "# HELP pg_settings_max_connections Sets the maximum number of concurrent connections.",
            "pg_settings_max_connections 100",
        ]
    )
    kept = kit_metrics.keep_families(text, ("pg_",))
    assert kept.splitlines() == [
        "# HELP pg_up Whether the last scrape could connect.",
        "# TYPE pg_up gauge",
        'pg_up{server="x"} 1',
        "# HELP pg_settings_max_connections Sets the maximum number of concurrent connections.",
        "pg_settings_max_connections 100",
    ]
    assert kit_metrics.keep_families("go_x 1\n", ("pg_",)) == ""


def test_records_become_gauges_and_a_failure_keeps_the_last_success(
    config: Any, kit_metrics: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kit_metrics, "STATUS_DIR", records.status_dir(config))
    records.write_record(config, records.BACKUP, ok=True, last_success_at=1000.0, size_bytes=42, seconds=3.0)
    records.write_record(config, records.BACKUP, ok=False, keep=("last_success_at", "size_bytes"), error="X")
    path = records.status_dir(config) / "backup.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    saved = json.loads(path.read_text())
    assert saved["ok"] is False and saved["last_success_at"] == 1000.0 and saved["size_bytes"] == 42
    assert "seconds" not in saved and saved["error"] == "X"
    samples = {family.name: family.samples[0].value for family in kit_metrics.record_metrics() if family is not None}
    assert samples["mlops_kit_backup_last_run_success"] == 0.0
    assert samples["mlops_kit_backup_last_success_timestamp_seconds"] == 1000.0
    assert samples["mlops_kit_backup_last_size_bytes"] == 42.0
    assert "mlops_kit_drill_last_rto_seconds" not in samples  # no drill yet: left out, not 0
    every = set(kit_metrics.HELP)
    assert {name for name in samples} <= every


def test_failure_recorded_records_the_error_type_only(config: Any) -> None:
    with pytest.raises(RuntimeError), records.failure_recorded(config, records.GC):
        raise RuntimeError("a message that could hold a name or path")
    saved = records.read_record(config, records.GC)
    assert saved is not None and saved["ok"] is False and saved["error"] == "RuntimeError"
    assert "message" not in json.dumps(saved)


#: Runs in a fresh interpreter, as a uvicorn worker does: prometheus_client picks its
#: multiprocess mode from PROMETHEUS_MULTIPROC_DIR when it is first imported.
ROUTES_SCRIPT = """
import asyncio, json, os, sys
sys.path.insert(0, sys.argv[1])
from mlflow.server.fastapi_app import create_fastapi_app
import kit_request_metrics
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

app = kit_request_metrics.wrap(create_fastapi_app())

async def call(method, path):
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
             "query_string": b"", "headers": [(b"host", b"localhost")], "http_version": "1.1",
             "scheme": "http", "server": ("localhost", 80), "client": ("127.0.0.1", 1)}
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        pass
    await app(scope, receive, send)

for method, path in json.loads(sys.argv[2]):
    asyncio.run(call(method, path))
registry = CollectorRegistry()
MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
text = generate_latest(registry).decode()
counted = sorted(
    [s.labels["method"], s.labels["endpoint"], s.labels["status"]]
    for family in registry.collect() for s in family.samples if s.name == "mlflow_http_requests_total"
)
print(json.dumps({"counted": counted, "histogram": "mlflow_http_request_duration_seconds_bucket" in text}))
"""


def test_request_metrics_name_every_route_by_its_template(tmp_path: Path) -> None:
    """MLflow's real app: Flask routes and native FastAPI routes alike; unknown paths are `other`."""
    (tmp_path / "multiproc").mkdir()
    calls = [
        ["POST", "/v1/traces"],  # FastAPI (OpenTelemetry)
        ["PUT", "/api/2.0/mlflow-artifacts/artifacts/1/run/artifacts/x.bin"],  # FastAPI (artifact upload)
        ["GET", "/api/2.0/mlflow/runs/get"],  # Flask
        ["GET", "/static-files/lib/x.js"],  # Flask
        ["GET", "/no/such/path/12345"],
    ]
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    result = subprocess.run(
        [sys.executable, "-c", ROUTES_SCRIPT, str(REPO_ROOT / "docker/mlflow"), json.dumps(calls)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert {(method, endpoint) for method, endpoint, _status in answer["counted"]} == {
        ("POST", "/v1/traces"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/{artifact_path}"),
        ("GET", "/api/2.0/mlflow/runs/get"),
        ("GET", "/static-files/<path:path>"),
        ("GET", "other"),
    }
    assert ["GET", "other", "404"] in answer["counted"]
    assert answer["histogram"] is True


def test_the_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads((REPO_ROOT / DASHBOARD_FILE).read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS" and dashboard["uid"] == "mlops-kit"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 20
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        # Plain PromQL (the integration test runs each against Prometheus): no Grafana variables.
        assert all("$" not in t["expr"] for t in panel["targets"]), panel["title"]
