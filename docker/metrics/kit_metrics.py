#!/usr/bin/python3
"""kit-metrics: the stack's one Prometheus endpoint, on a Unix socket the proxy shares.

Each scrape gathers, with a short timeout per source (a source that fails is left out
and shown by ``mlops_kit_service_up`` / ``mlops_kit_source_up``, never a failed scrape):

- PostgreSQL: Debian's postgres_exporter, started here on the container's loopback and
  connected over the database's socket as ``mlops_kit_monitor`` (peer authentication:
  no password; the role can read statistics, never MLflow's tables);
- MLflow: its workers' request counters and latency histograms
  (``PROMETHEUS_MULTIPROC_DIR``, written by kit_request_metrics.py in the MLflow image);
- the proxy: Caddy's own HTTP metrics, from a socket only it and this service mount;
- the kit: last backup, drill and gc (the host's records in BACKUP_DIR/status), the
  certificate's expiry, the size and free space of each volume's filesystem, the
  artifact store's size (walked in the background, at most every
  MLOPS_KIT_METRICS_SCAN_SECONDS), object counts from PostgreSQL's statistics, and
  connections and the longest transaction from the kit's monitoring function.

Exporters' own process and Go runtime metrics are dropped: they would collide, and they
describe this container, not the stack.

``kit-metrics --check``: the container's healthcheck (the endpoint answers).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import closing, suppress
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

logger = logging.getLogger("kit-metrics")

SOCKET = os.environ.get("MLOPS_KIT_METRICS_SOCKET", "/run/metrics/metrics.sock")
MLFLOW_SOCKET = os.environ.get("MLOPS_KIT_MLFLOW_SOCKET", "/run/mlflow/mlflow.sock")
MLFLOW_METRICS_DIR = os.environ.get("MLOPS_KIT_MLFLOW_METRICS_DIR", "/run/mlflow-metrics")
PROXY_METRICS_SOCKET = os.environ.get("MLOPS_KIT_PROXY_METRICS_SOCKET", "/run/proxy-metrics/caddy.sock")
POSTGRES_SOCKET_DIR = os.environ.get("MLOPS_KIT_POSTGRES_SOCKET_DIR", "/run/postgresql")
MONITOR_ROLE = "mlops_kit_monitor"
EXPORTER_ADDRESS = ("127.0.0.1", 9187)
STATUS_DIR = Path(os.environ.get("MLOPS_KIT_STATUS_DIR", "/kit/status"))
CERT_FILE = Path(os.environ.get("MLOPS_KIT_TLS_CERT", "/tmp/tls/server.crt"))
VOLUMES_DIR = Path(os.environ.get("MLOPS_KIT_VOLUMES_DIR", "/volumes"))
ARTIFACT_STORE = os.environ.get("MLOPS_KIT_ARTIFACT_STORE", "volume")
SCAN_SECONDS = float(os.environ.get("MLOPS_KIT_METRICS_SCAN_SECONDS", "900"))
SOURCE_TIMEOUT = 5.0
#: Seconds one scrape waits for its sources (Prometheus gives up at 10 s by default).
SCRAPE_BUDGET = 7.0
VERSION = os.environ.get("MLOPS_KIT_VERSION", "")

#: Tables counted (PostgreSQL's live-row estimate: cheap, at most seconds behind).
OBJECT_TABLES = {
    "experiments": "experiments",
    "runs": "runs",
    "registered_models": "registered_models",
    "model_versions": "model_versions",
    "logged_models": "logged_models",
    "traces": "trace_info",
}
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# ---- sources ------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = SOURCE_TIMEOUT) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def http_get(path: str, *, unix_socket: str | None = None, address: tuple[str, int] | None = None) -> tuple[int, str]:
    conn: http.client.HTTPConnection
    if unix_socket is not None:
        conn = UnixHTTPConnection(unix_socket)
    else:
        assert address is not None
        conn = http.client.HTTPConnection(*address, timeout=SOURCE_TIMEOUT)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        conn.close()


def keep_families(text: str, prefixes: tuple[str, ...]) -> str:
    """The exposition text with only the metric families whose names start with ``prefixes``."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(None, 3)
            name = parts[2] if len(parts) > 2 and parts[1] in ("HELP", "TYPE") else ""
        else:
            match = _NAME.match(line)
            name = match.group(0) if match else ""
        if name.startswith(prefixes):
            kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def postgres_connect(dbname: str) -> Any:
    import psycopg2

    return psycopg2.connect(
        host=POSTGRES_SOCKET_DIR,
        user=MONITOR_ROLE,
        dbname=dbname,
        connect_timeout=3,
        application_name="mlops-kit-metrics",
        options="-c statement_timeout=3000",
    )


class PostgresExporter:
    """Debian's postgres_exporter as a child process, started again whenever it exits."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            env = {
                **os.environ,
                "DATA_SOURCE_NAME": f"host={POSTGRES_SOCKET_DIR} user={MONITOR_ROLE} dbname=postgres sslmode=disable",
            }
            self._process = subprocess.Popen(
                [
                    "prometheus-postgres-exporter",
                    f"--web.listen-address={EXPORTER_ADDRESS[0]}:{EXPORTER_ADDRESS[1]}",
                    "--log.level=warn",
                    "--config.file=/etc/mlops-kit/postgres_exporter.yml",
                    # Listing the WAL folder needs a privilege the monitoring role does not have.
                    "--no-collector.wal",
                    # Per-table statistics of the `postgres` database: nothing of the stack's.
                    "--no-collector.stat_user_tables",
                    "--no-collector.statio_user_tables",
                ],
                env=env,
            )

    def metrics(self) -> str:
        self.ensure_running()
        status, body = http_get("/metrics", address=EXPORTER_ADDRESS)
        if status != 200:
            raise OSError(f"postgres_exporter answered {status}")
        return keep_families(body, ("pg_",))


# ---- the kit's own metrics ---------------------------------------------------------------

#: Every metric of the kit's own, with its HELP text (docs/monitoring.md lists them too).
HELP: dict[str, str] = {
    "mlops_kit_backup_last_run_timestamp_seconds": "When the last backup attempt ended (Unix time).",
    "mlops_kit_backup_last_run_success": "1 if the last backup attempt succeeded, 0 if it failed.",
    "mlops_kit_backup_last_success_timestamp_seconds": "When the last successful backup ended (Unix time).",
    "mlops_kit_backup_last_size_bytes": "Bytes the last successful backup covered (database dump plus artifacts).",
    "mlops_kit_backup_repository_bytes": "Size of the backup repository after the last successful backup.",
    "mlops_kit_backup_last_duration_seconds": "How long the last successful backup took.",
    "mlops_kit_drill_last_run_timestamp_seconds": "When the last restore drill ended (Unix time).",
    "mlops_kit_drill_last_run_success": "1 if the last restore drill succeeded, 0 if it failed.",
    "mlops_kit_drill_last_rto_seconds": "Recovery time of the last good restore drill (to a verified, serving copy).",
    "mlops_kit_gc_last_run_timestamp_seconds": "When the last gc ended (Unix time).",
    "mlops_kit_gc_last_run_success": "1 if the last gc removed everything it meant to, 0 if not.",
    "mlops_kit_gc_last_freed_bytes": "Bytes of artifacts the last gc freed.",
    "mlops_kit_artifact_store_bytes": "Bytes of artifacts in the store (volume and nfs modes), as of the last walk.",
    "mlops_kit_artifact_store_files": "Artifact files in the store, as of the last walk.",
    "mlops_kit_artifact_store_scan_timestamp_seconds": "When the last walk of the artifact store ended (Unix time).",
    "mlops_kit_artifact_store_scan_duration_seconds": "How long the last walk of the artifact store took.",
    "mlops_kit_postgres_max_connections": "PostgreSQL's max_connections.",
    "mlops_kit_postgres_longest_transaction_seconds": "Age of the oldest open transaction of any client (0 when none).",
    "mlops_kit_tls_certificate_expiry_timestamp_seconds": "When the proxy's certificate expires (Unix time).",
    "mlops_kit_info": "The kit's release and artifact store mode.",
    "mlops_kit_volume_size_bytes": "Size of the filesystem that holds each of the stack's volumes.",
    "mlops_kit_volume_free_bytes": "Bytes free (for unprivileged writers) on the filesystem of each volume.",
    "mlops_kit_postgres_connections": "Client connections to PostgreSQL, by state.",
    "mlops_kit_objects": "MLflow objects in the database, deleted ones included (PostgreSQL's live-row estimate).",
    "mlops_kit_service_up": "1 if the service answers its probe from the metrics service.",
    "mlops_kit_source_up": "1 if the metrics source answered this scrape.",
}


def read_record(kind: str) -> dict[str, Any] | None:
    try:
        data = json.loads((STATUS_DIR / f"{kind}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def family(name: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, HELP[name], labels=labels)


def gauge(name: str, value: float | None, **labels: str) -> GaugeMetricFamily | None:
    """One sample of ``name``, or None (left out of the scrape) when the value is unknown."""
    if value is None:
        return None
    metric = family(name, list(labels))
    metric.add_metric(list(labels.values()), float(value))
    return metric


def _number(record: dict[str, Any] | None, key: str) -> float | None:
    value = (record or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ok(record: dict[str, Any] | None) -> float | None:
    return None if record is None else float(bool(record.get("ok")))


#: (record kind, metric, the record's field) for every gauge made from the host's records;
#: the field "ok" becomes 1 or 0.
RECORD_GAUGES = (
    ("backup", "mlops_kit_backup_last_run_timestamp_seconds", "finished_at"),
    ("backup", "mlops_kit_backup_last_run_success", "ok"),
    ("backup", "mlops_kit_backup_last_success_timestamp_seconds", "last_success_at"),
    ("backup", "mlops_kit_backup_last_size_bytes", "size_bytes"),
    ("backup", "mlops_kit_backup_repository_bytes", "repository_bytes"),
    ("backup", "mlops_kit_backup_last_duration_seconds", "seconds"),
    ("drill", "mlops_kit_drill_last_run_timestamp_seconds", "finished_at"),
    ("drill", "mlops_kit_drill_last_run_success", "ok"),
    ("drill", "mlops_kit_drill_last_rto_seconds", "rto_seconds"),
    ("gc", "mlops_kit_gc_last_run_timestamp_seconds", "finished_at"),
    ("gc", "mlops_kit_gc_last_run_success", "ok"),
    ("gc", "mlops_kit_gc_last_freed_bytes", "bytes_freed"),
)


def record_metrics() -> Iterator[GaugeMetricFamily | None]:
    records = {kind: read_record(kind) for kind in {kind for kind, _name, _field in RECORD_GAUGES}}
    for kind, name, field in RECORD_GAUGES:
        record = records[kind]
        yield gauge(name, _ok(record) if field == "ok" else _number(record, field))


def certificate_expiry() -> float | None:
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(CERT_FILE.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()


def volume_metrics() -> Iterator[GaugeMetricFamily]:
    size = family(
        "mlops_kit_volume_size_bytes",
        labels=["volume"],
    )
    free = family(
        "mlops_kit_volume_free_bytes",
        labels=["volume"],
    )
    folders = sorted(VOLUMES_DIR.iterdir()) if VOLUMES_DIR.is_dir() else []
    for folder in [*folders, STATUS_DIR]:
        name = "backups" if folder == STATUS_DIR else folder.name
        if name == "artifacts" and ARTIFACT_STORE not in ("volume", "nfs"):
            continue  # the bucket modes keep no artifacts in it
        try:
            stat = os.statvfs(folder)
        except OSError:
            continue
        size.add_metric([name], stat.f_blocks * stat.f_frsize)
        free.add_metric([name], stat.f_bavail * stat.f_frsize)
    yield size
    yield free


class ArtifactScan:
    """The artifact store's bytes and files, walked in the background (volume and nfs modes)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.result: tuple[int, int, float, float] | None = None  # bytes, files, finished_at, seconds

    def start(self) -> None:
        threading.Thread(target=self._loop, name="artifact-scan", daemon=True).start()

    def _loop(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.result = (*self.walk(), time.time(), time.monotonic() - started)
            except OSError:
                logger.warning("could not walk the artifact store", exc_info=True)
            time.sleep(max(SCAN_SECONDS, 10.0))

    def walk(self) -> tuple[int, int]:
        total = files = 0
        stack = [str(self.root)]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            elif entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
                                files += 1
                        except OSError:
                            continue
            except OSError:
                continue
        return total, files

    def metrics(self) -> Iterator[GaugeMetricFamily | None]:
        if self.result is None:
            return
        total, files, finished, seconds = self.result
        yield gauge(
            "mlops_kit_artifact_store_bytes",
            total,
        )
        yield gauge("mlops_kit_artifact_store_files", files)
        yield gauge(
            "mlops_kit_artifact_store_scan_timestamp_seconds",
            finished,
        )
        yield gauge(
            "mlops_kit_artifact_store_scan_duration_seconds",
            seconds,
        )


def database_metrics() -> Iterator[GaugeMetricFamily | None]:
    """Connections, the longest transaction and object counts; raises when PostgreSQL is down."""
    with closing(postgres_connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT state, connections, longest_transaction_seconds FROM mlops_kit.activity()")
        rows = cur.fetchall()
        cur.execute("SELECT current_setting('max_connections')::int")
        (max_connections,) = cur.fetchone()
    connections = family("mlops_kit_postgres_connections", labels=["state"])
    for state, count, _longest in rows:
        connections.add_metric([state or "unknown"], count)
    yield connections
    yield gauge("mlops_kit_postgres_max_connections", max_connections)
    yield gauge(
        "mlops_kit_postgres_longest_transaction_seconds",
        max((row[2] for row in rows), default=0.0),
    )
    with closing(postgres_connect("mlflow")) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT relname, n_live_tup FROM pg_stat_user_tables WHERE schemaname = 'public' AND relname = ANY(%s)",
            (list(OBJECT_TABLES.values()),),
        )
        live = dict(cur.fetchall())
    objects = family(
        "mlops_kit_objects",
        labels=["kind"],
    )
    for kind, table in OBJECT_TABLES.items():
        if table in live:
            objects.add_metric([kind], live[table])
    yield objects


class Collector:
    """Everything one scrape returns."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="source")
        self.exporter = PostgresExporter()
        artifacts = VOLUMES_DIR / "artifacts"
        self.scan = ArtifactScan(artifacts) if ARTIFACT_STORE in ("volume", "nfs") and artifacts.is_dir() else None

    def start(self) -> None:
        self.exporter.ensure_running()
        if self.scan is not None:
            self.scan.start()

    def _gather(self) -> tuple[dict[str, Any], dict[str, bool]]:
        """Every live source at once, each within its own timeout, the whole within SCRAPE_BUDGET.

        A source that fails or is late is left out of this scrape and reported as down: a
        stuck database must show as `postgres` down, not as a scrape that timed out.
        """
        sources = {
            "postgres_exporter": self.exporter.metrics,
            "proxy": self._proxy,
            "mlflow_requests": self._mlflow_requests,
            "database": lambda: list(database_metrics()),
            "mlflow": self._mlflow_health,
        }
        futures = {name: self._pool.submit(action) for name, action in sources.items()}
        wait(futures.values(), timeout=SCRAPE_BUDGET)
        results: dict[str, Any] = {}
        up: dict[str, bool] = {}
        for name, future in futures.items():
            if not future.done():
                logger.warning("metrics source %s did not answer within %.0f s", name, SCRAPE_BUDGET)
                up[name] = False
            elif future.exception() is not None:
                logger.warning("metrics source %s failed: %s", name, future.exception())
                up[name] = False
            else:
                results[name] = future.result()
                up[name] = bool(results[name]) if name == "mlflow" else True
        return results, up

    def render(self) -> bytes:
        results, up = self._gather()
        parts: list[bytes] = [
            str(results.get("postgres_exporter", "")).encode(),
            str(results.get("proxy", "")).encode(),
            results.get("mlflow_requests", b""),
        ]
        families: list[GaugeMetricFamily | None] = list(results.get("database", []))
        families.extend(record_metrics())
        families.append(
            gauge(
                "mlops_kit_tls_certificate_expiry_timestamp_seconds",
                certificate_expiry(),
            )
        )
        families.extend(volume_metrics())
        if self.scan is not None:
            families.extend(self.scan.metrics())
        services = family("mlops_kit_service_up", labels=["service"])
        services.add_metric(["postgres"], float(up["database"]))
        services.add_metric(["mlflow"], float(up["mlflow"]))
        services.add_metric(["proxy"], float(up["proxy"]))
        families.append(services)
        sources = family("mlops_kit_source_up", labels=["source"])
        for source in ("postgres_exporter", "proxy", "mlflow_requests", "database"):
            sources.add_metric([source], float(up[source]))
        families.append(sources)
        families.append(
            gauge(
                "mlops_kit_info",
                1,
                version=VERSION,
                artifact_store=ARTIFACT_STORE,
            )
        )
        parts.append(generate_latest(_Registry(f for f in families if f is not None)))
        return b"".join(parts)

    @staticmethod
    def _proxy() -> str:
        status, body = http_get("/metrics", unix_socket=PROXY_METRICS_SOCKET)
        if status != 200:
            raise OSError(f"the proxy answered {status}")
        return keep_families(body, ("caddy_",))

    @staticmethod
    def _mlflow_requests() -> bytes:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=MLFLOW_METRICS_DIR)
        return generate_latest(registry)

    @staticmethod
    def _mlflow_health() -> bool:
        status, _body = http_get("/health", unix_socket=MLFLOW_SOCKET)
        return status == 200


class _Registry:
    """What generate_latest needs: something with collect()."""

    def __init__(self, families: Iterable[GaugeMetricFamily]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[GaugeMetricFamily]:
        return self._families


# ---- the server -------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    collector: Collector
    server_version = "kit-metrics"
    sys_version = ""

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/health":
            self._answer(200, b"ok\n", "text/plain")
        elif self.path.split("?")[0] == "/metrics":
            try:
                body = self.collector.render()
            except Exception as exc:  # one line in the log, a 500 to the scraper: never a traceback
                logger.error("a scrape failed: %s: %s", type(exc).__name__, exc)
                self._answer(500, b"metrics failed; see the metrics service's log\n", "text/plain")
                return
            self._answer(200, body, "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._answer(404, b"not found\n", "text/plain")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:
        return "proxy"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self) -> tuple[socket.socket, Any]:
        request, _address = super().get_request()
        return request, ("", 0)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that gave up mid-answer (a broken pipe): one line, not a traceback.
        logger.warning("a request ended early: %s", sys.exc_info()[1])


def serve() -> None:
    logging.basicConfig(level=logging.INFO, format="kit-metrics: %(levelname)s %(message)s")
    collector = Collector()
    collector.start()
    Handler.collector = collector
    with suppress(FileNotFoundError):
        os.unlink(SOCKET)
    server = UnixServer(SOCKET, Handler)
    # The proxy (and the bundled Prometheus) connect as their own users.
    os.chmod(SOCKET, 0o666)
    logger.info("serving on %s", SOCKET)
    server.serve_forever()


def check() -> int:
    try:
        status, _body = http_get("/health", unix_socket=SOCKET)
    except OSError as exc:
        print(f"kit-metrics: not answering on {SOCKET}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(check() if sys.argv[1:] == ["--check"] else serve())
