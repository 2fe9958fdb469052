"""Metrics and alerts end to end: the scrape endpoint, every metric moving, the bundled
Prometheus and Alertmanager, the dashboard's queries, and a failed backup reaching a webhook.

One stack for the module, with monitoring on, short intervals (scrape and rule evaluation
every 5 s, alerts grouped for 1 s, the artifact store walked every 10 s) and a generic
webhook pointing at a receiver container the test starts on the stack's alerting network.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO_ROOT, Stack, free_port, fresh_stack, prometheus_query, psql, tcp_listeners

RECEIVER_PORT = 8080
#: The receiver: prints every POST body it gets as one line (read back with `docker logs`).
RECEIVER_SCRIPT = """
import http.server, sys
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(body.decode(), flush=True)
        self.send_response(200); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("0.0.0.0", PORT), Hook).serve_forever()
""".replace("PORT", str(RECEIVER_PORT))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("monitoring"), "mlkt-mon") as stack:
        stack.init("--monitoring")
        for key, value in (
            ("MLOPS_KIT_PROMETHEUS_SCRAPE_INTERVAL", "5s"),
            ("MLOPS_KIT_ALERT_GROUP_WAIT", "1s"),
            ("MLOPS_KIT_METRICS_SCAN_SECONDS", "10"),
        ):
            stack.set_env(key, value)
        stack.kit("monitoring", "webhook", "generic", input=f"http://receiver:{RECEIVER_PORT}/hook\n")
        stack.kit("up")
        yield stack


@contextmanager
def helper_container(name: str, *docker_run_args: str) -> Iterator[str]:
    """A container the test starts (`docker run -d`), removed when the block ends, however it ends."""
    subprocess.run(["docker", "run", "-d", "--name", name, *docker_run_args], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def receiver(stack: Stack) -> Iterator[str]:
    """A webhook receiver on the stack's alerting network (the only network Alertmanager can send on)."""
    with helper_container(
        f"{stack.project}-receiver",
        *("--network", f"{stack.project}_alerting", "--network-alias", "receiver", "--entrypoint", "python3"),
        stack.env_values()["MLOPS_KIT_METRICS_IMAGE"],
        *("-c", RECEIVER_SCRIPT),
    ) as name:
        yield name


def metrics_password(stack: Stack) -> str:
    return (stack.directory / "secrets" / "metrics_password").read_text().strip()


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(stack: Stack) -> Samples:
    """The stack's /metrics as its samples, named as Prometheus stores them."""
    session = stack.session(None)
    session.auth = ("metrics", metrics_password(stack))
    response = session.get(f"{stack.tracking_uri}/metrics", timeout=30)
    assert response.status_code == 200, response.text[:500]
    samples: Samples = {}
    for line in response.text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = frozenset(_LABEL.findall(match.group("labels") or ""))
            samples[(match.group("name"), labels)] = float(match.group("value"))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of ``name``'s samples that carry ``labels`` (None: no such sample)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    return sum(found) if found else None


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120.0, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# ---- the scrape endpoint --------------------------------------------------------------------------


def test_only_the_metrics_login_reads_metrics(stack: Stack) -> None:
    url = f"{stack.tracking_uri}/metrics"
    stack.kit("users", "add", "alice", "--password-stdin", input="alice-password-1234\n")
    anonymous = stack.session(None)
    assert anonymous.get(url, timeout=30).status_code == 401
    for user, password in (
        ("admin", stack.password("admin")),
        ("alice", "alice-password-1234"),
        ("metrics", "not-the-password"),
        ("metrics", stack.password("admin")),
    ):
        session = stack.session(None)
        session.auth = (user, password)
        assert session.get(url, timeout=30).status_code == 401, user
    # The scrape login opens /metrics and nothing else: MLflow does not know it.
    session = stack.session(None)
    session.auth = ("metrics", metrics_password(stack))
    assert session.get(url, timeout=30).status_code == 200
    api = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search"
    assert session.get(api, params={"max_results": 1}, timeout=30).status_code == 401
    # The password is never in a log line the proxy or the metrics service wrote.
    for service in ("proxy", "metrics"):
        assert metrics_password(stack) not in stack.logs(service)


def test_the_metrics_service_has_no_network_and_its_role_cannot_read_mlflow_data(stack: Stack) -> None:
    metrics = stack.container("metrics")
    assert metrics["HostConfig"]["NetworkMode"] == "none"
    # Only its own exporter, on loopback inside its own namespace.
    for line in tcp_listeners(metrics["Id"]):
        assert line.split()[1].startswith("0100007F:"), line
    # Its PostgreSQL role (peer authentication as the container's user) reads statistics only.
    probe = (
        "import psycopg2\n"
        "conn = psycopg2.connect(host='/run/postgresql', user='mlops_kit_monitor', dbname='mlflow')\n"
        "cur = conn.cursor()\n"
        "try:\n"
        "    cur.execute('SELECT count(*) FROM runs')\n"
        "    print('READ')\n"
        "except psycopg2.errors.InsufficientPrivilege:\n"
        "    print('DENIED')\n"
        "conn.rollback()\n"
        "cur.execute(\"SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlflow'\"\n"
        "            \" AND query <> '<insufficient privilege>'\")\n"
        "print(cur.fetchone()[0])\n"
    )
    result = subprocess.run(
        ["docker", "exec", "-u", "metrics", metrics["Id"], "python3", "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    denied, visible_queries = result.stdout.split()
    assert denied == "DENIED"
    # MLflow's sessions are there (its pools), but not what they ran.
    assert psql(stack, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'mlflow'").strip() != "0"
    assert visible_queries == "0"


#: As the monitoring role: a temporary view named like the catalog view the kit's
#: SECURITY DEFINER function reads, calling a function that makes the caller superuser.
#: With `pg_temp` first on the search path the function would run it as its owner.
ESCALATION = """
import psycopg2
conn = psycopg2.connect(host="/run/postgresql", user="mlops_kit_monitor", dbname="postgres")
conn.autocommit = True
cur = conn.cursor()
cur.execute(\"\"\"CREATE FUNCTION pg_temp.evil() RETURNS text LANGUAGE plpgsql AS $$
    BEGIN EXECUTE 'ALTER ROLE mlops_kit_monitor SUPERUSER'; RETURN 'x'; END $$\"\"\")
cur.execute(\"\"\"CREATE TEMP VIEW pg_stat_activity AS
    SELECT pg_temp.evil() AS state, now() AS xact_start, 'client backend'::text AS backend_type\"\"\")
try:
    cur.execute("SELECT * FROM mlops_kit.activity()")
    cur.fetchall()
except psycopg2.Error as exc:
    print("error:", exc.pgcode)
cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'mlops_kit_monitor'")
print("superuser:", cur.fetchone()[0])
"""


def test_prometheus_and_alertmanager_are_closed_to_the_host(stack: Stack) -> None:
    """Docker lets the host reach every container network: nothing there answers without a login."""
    import requests

    def addresses(service: str) -> list[str]:
        networks = stack.container(service)["NetworkSettings"]["Networks"].values()
        return [n["IPAddress"] for n in networks if n.get("IPAddress")]

    for address in addresses("alertmanager"):
        url = f"http://{address}:9093/api/v2/alerts"
        assert requests.get(url, timeout=5).status_code == 401, url
        assert requests.post(url, json=[], timeout=5).status_code == 401, url
        assert requests.post(f"http://{address}:9093/api/v2/silences", json={}, timeout=5).status_code == 401
    for address in addresses("prometheus"):
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://{address}:9090/api/v1/query", params={"query": "up"}, timeout=5)


def test_the_monitoring_role_cannot_escalate_through_the_kit_function(stack: Stack) -> None:
    result = subprocess.run(
        ["docker", "exec", "-u", "metrics", stack.container("metrics")["Id"], "python3", "-c", ESCALATION],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "superuser: False" in result.stdout, result.stdout + result.stderr
    assert psql(stack, "SELECT rolsuper FROM pg_roles WHERE rolname = 'mlops_kit_monitor'", "postgres").strip() == "f"


#: Gauges and counters PostgreSQL updates lazily (backends flush statistics when idle).
LAZY: list[tuple[str, dict[str, str]]] = [
    ("pg_stat_database_xact_commit", {"datname": "mlflow"}),
    ("pg_stat_database_deadlocks", {"datname": "postgres"}),
    ("mlops_kit_objects", {"kind": "runs"}),
    ("mlops_kit_objects", {"kind": "experiments"}),
]


def make_a_deadlock(stack: Stack) -> None:
    """Two sessions lock two rows of a scratch table (not MLflow's) in opposite orders."""
    psql(stack, "CREATE TABLE IF NOT EXISTS deadlock_probe (id int PRIMARY KEY, v int)", "postgres")
    psql(stack, "INSERT INTO deadlock_probe VALUES (1, 0), (2, 0) ON CONFLICT DO NOTHING", "postgres")
    postgres = stack.container("postgres")["Id"]
    sessions = [
        subprocess.Popen(
            [
                "docker",
                "exec",
                "-u",
                "postgres",
                postgres,
                "psql",
                "-d",
                "postgres",
                "-c",
                f"BEGIN; UPDATE deadlock_probe SET v = 1 WHERE id = {first}; SELECT pg_sleep(2); "
                f"UPDATE deadlock_probe SET v = 1 WHERE id = {second}; COMMIT;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for first, second in ((1, 2), (2, 1))
    ]
    codes = [session.wait(timeout=60) for session in sessions]
    # PostgreSQL ends one of them (after deadlock_timeout, 1 s): the other commits.
    assert sorted(codes) != [0, 0], codes
    psql(stack, "DROP TABLE deadlock_probe", "postgres")


def test_every_metric_moves(stack: Stack) -> None:
    import mlflow

    # Once in a CI rehearsal the proxy stopped answering here for about two minutes (no
    # listener on the port), cause unknown: name any restart and its reason first.
    restarted = {s["service"]: s.get("restart_reason") for s in stack.status()["services"] if s.get("restarts")}
    assert not restarted, f"services restarted during the module: {restarted}"

    before = scrape(stack)
    upload = uuid.uuid4().bytes * 65536  # 1 MiB
    with stack.as_user("admin"):
        mlflow.set_experiment(f"metrics-{uuid.uuid4().hex[:6]}")
        with mlflow.start_run() as run:
            for step in range(5):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            path = stack.directory / "upload.bin"
            path.write_bytes(upload)
            mlflow.log_artifact(str(path))
        mlflow.MlflowClient().get_run(run.info.run_id)
    stack.kit("backup")
    stack.kit("gc", "--yes")
    make_a_deadlock(stack)
    # A transaction held open for a while: the longest-transaction gauge must see it.
    holder = subprocess.Popen(
        [
            "docker",
            "exec",
            "-u",
            "postgres",
            stack.container("postgres")["Id"],
            "psql",
            "-d",
            "mlflow",
            "-c",
            "BEGIN; SELECT txid_current(); SELECT pg_sleep(30); COMMIT;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def moved() -> Samples | None:
            # PostgreSQL's statistics (object counts, commits, deadlocks) reach its views when
            # each backend flushes them (at most some seconds after it goes idle), and the
            # store is walked every 10 s: wait until all of them show the work.
            now = scrape(stack)
            longest = value(now, "mlops_kit_postgres_longest_transaction_seconds") or 0
            stored = value(now, "mlops_kit_artifact_store_bytes") or 0
            lagging = [
                (name, labels)
                for name, labels in LAZY
                if (value(now, name, **labels) or 0.0) <= (value(before, name, **labels) or 0.0)
            ]
            return now if longest >= 5 and stored >= len(upload) and not lagging else None

        after = wait_for("the database and store gauges", moved, timeout=180)
    finally:
        holder.wait(timeout=60)

    def grew(name: str, **labels: str) -> None:
        old, new = value(before, name, **labels) or 0.0, value(after, name, **labels)
        assert new is not None and new > old, f"{name}{labels}: {old} -> {new}"

    for name, labels in LAZY:
        grew(name, **labels)

    # MLflow's own requests: Flask routes and the native FastAPI artifact route.
    grew("mlflow_http_requests_total", endpoint="/api/2.0/mlflow/runs/create", method="POST", status="200")
    grew("mlflow_http_requests_total", endpoint="/api/2.0/mlflow/runs/log-metric", status="200")
    grew("mlflow_http_requests_total", endpoint="/api/2.0/mlflow-artifacts/artifacts/{artifact_path}", method="PUT")
    grew("mlflow_http_request_duration_seconds_count", endpoint="/api/2.0/mlflow/runs/create")
    grew("caddy_http_request_duration_seconds_count", code="200")
    grew("mlops_kit_artifact_store_bytes")
    grew("mlops_kit_backup_last_success_timestamp_seconds")
    grew("mlops_kit_gc_last_run_timestamp_seconds")
    assert value(after, "mlops_kit_backup_last_run_success") == 1.0
    assert (value(after, "mlops_kit_backup_last_size_bytes") or 0) >= len(upload)
    assert value(after, "mlops_kit_gc_last_run_success") == 1.0
    assert (value(after, "pg_database_size_bytes", datname="mlflow") or 0) > 0
    assert value(after, "pg_settings_max_connections") == value(after, "mlops_kit_postgres_max_connections") == 100
    assert (value(after, "mlops_kit_postgres_connections") or 0) >= 2
    for service in ("postgres", "mlflow", "proxy"):
        assert value(after, "mlops_kit_service_up", service=service) == 1.0, service
    for volume in ("postgres", "artifacts", "backups"):
        size, free = (
            value(after, "mlops_kit_volume_size_bytes", volume=volume),
            value(after, "mlops_kit_volume_free_bytes", volume=volume),
        )
        assert size and free is not None and 0 < free <= size, volume
    tls = json.loads(stack.kit("tls", "show", "--json").stdout)
    from datetime import datetime

    expiry = datetime.fromisoformat(tls["not_after"]).timestamp()
    assert value(after, "mlops_kit_tls_certificate_expiry_timestamp_seconds") == pytest.approx(expiry, abs=1)
    # Nothing of the exporters' own runtimes, and HELP for every family of the kit's own.
    assert not any(name.startswith(("go_", "process_")) for name, _labels in after)


# ---- an operator's own Prometheus -------------------------------------------------------------------


def test_an_operators_prometheus_scrapes_with_the_printed_config(stack: Stack, tmp_path: Path) -> None:
    """Prometheus on the host (host network), configured with `monitoring scrape-config` as printed."""
    job = stack.kit("monitoring", "scrape-config", "--job-name", "mlflow-kit").stdout.replace(
        "scrape_interval: 30s", "scrape_interval: 2s"
    )
    config = tmp_path / "prometheus.yml"
    config.write_text("scrape_configs:\n" + "\n".join("  " + line for line in job.splitlines()) + "\n")
    port = free_port()
    secrets = stack.directory / "secrets" / "metrics_password"
    with helper_container(
        f"{stack.project}-operator-prometheus",
        *("--network", "host", "--user", "0", "--entrypoint", "prometheus"),
        *("-v", f"{config}:/etc/operator/prometheus.yml:ro"),
        *("-v", f"{secrets}:{secrets}:ro", "-v", f"{stack.ca_file}:{stack.ca_file}:ro"),
        stack.env_values()["MLOPS_KIT_PROMETHEUS_IMAGE"],
        "--config.file=/etc/operator/prometheus.yml",
        "--storage.tsdb.path=/tmp/data",
        f"--web.listen-address=127.0.0.1:{port}",
    ):
        import requests

        def scraped() -> Any:
            try:
                answer = requests.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'mlops_kit_info{job="mlflow-kit"}'},
                    timeout=5,
                ).json()
            except requests.RequestException:
                return None
            return answer["data"]["result"] or None

        (series,) = wait_for("the operator's Prometheus to scrape the stack", scraped, timeout=90)
        assert series["metric"]["stack"] == stack.project and series["metric"]["version"]
        targets = requests.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"], targets


# ---- rules, dashboard, alerts -------------------------------------------------------------------------


def test_every_alert_rule_passes_its_promtool_tests(stack: Stack) -> None:
    """`promtool test rules` of the checkout's rules, with the promtool the bundled image ships."""
    rules = REPO_ROOT / "docker" / "prometheus" / "rules"
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-v",
            f"{rules}:/rules:ro",
            "-w",
            "/rules",
            "--entrypoint",
            "promtool",
            stack.env_values()["MLOPS_KIT_PROMETHEUS_IMAGE"],
            "test",
            "rules",
            "mlops-kit.rules.test.yml",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    # Every rule in the file has at least one test.
    tests = (rules / "mlops-kit.rules.test.yml").read_text()
    for line in (rules / "mlops-kit.rules.yml").read_text().splitlines():
        if line.strip().startswith("- alert:"):
            assert f"alertname: {line.split(':', 1)[1].strip()}" in tests, line


def test_dashboard_queries_return_data_and_a_failed_backup_reaches_the_webhook(stack: Stack, receiver: str) -> None:
    stack.kit("backup")
    stack.kit("backup", "verify")
    stack.kit("gc", "--yes")
    wait_for(
        "Prometheus to see the backup, drill and gc",
        lambda: all(
            prometheus_query(stack, expr)
            for expr in (
                "mlops_kit_drill_last_rto_seconds",
                "mlops_kit_gc_last_freed_bytes",
                "mlops_kit_backup_last_size_bytes",
            )
        ),
        timeout=60,
    )
    dashboard = json.loads((REPO_ROOT / "docker/prometheus/grafana-dashboard.json").read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if not prometheus_query(stack, target["expr"]):
                empty.append(f"{panel['title']}: {target['expr']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    # Break the backup repository (as a full or failing disk would), and back up.
    repository_config = stack.directory / "backups" / "repository" / "config"
    saved = repository_config.read_bytes()
    repository_config.write_bytes(b"not a restic repository")
    try:
        failed = stack.kit("backup", check=False)
        assert failed.returncode != 0
    finally:
        repository_config.write_bytes(saved)
    assert json.loads((stack.directory / "backups" / "status" / "backup.json").read_text())["ok"] is False

    def delivered() -> list[dict[str, Any]]:
        log = subprocess.run(["docker", "logs", receiver], capture_output=True, text=True, check=True).stdout
        payloads = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        return [
            alert
            for payload in payloads
            for alert in payload["alerts"]
            if alert["labels"]["alertname"] == "MlopsKitBackupFailed" and alert["status"] == "firing"
        ]

    (alert, *_more) = wait_for("the backup alert at the webhook", delivered, timeout=180, every=3)
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook"] == "docs/monitoring.md#mlopskitbackupfailed"

    status = stack.status()
    assert "MlopsKitBackupFailed" in [a["name"] for a in status["alerts"]]
    human = stack.kit("status", check=False).stdout
    assert "MlopsKitBackupFailed" in human and "firing" in human
    listed = json.loads(stack.kit("monitoring", "alerts", "--json").stdout)["alerts"]
    assert "MlopsKitBackupFailed" in [a["name"] for a in listed]

    # What the monitoring services cost when idle (docs/monitoring.md).
    names = [stack.container(s)["Name"].lstrip("/") for s in ("metrics", "prometheus", "alertmanager")]
    stats = subprocess.run(
        ["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", *names],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    print(f"monitoring services' memory:\n{stats}")
