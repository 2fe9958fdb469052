#!/opt/mlflow/bin/python
"""Container healthcheck: the web server answers and both databases work.

/health (exempt from authentication) on MLflow's Unix socket proves the HTTP
server is up; a query in the tracking and the auth database, with the server's
own credentials, proves the database path. Runs as the mlflow user: the probe
needs no privilege and the password file belongs to that user.

``--live``: only the web server's answer (the watchdog's question, kit-watchdog:
a database that is down is PostgreSQL's problem, not a reason to restart MLflow).
"""

import http.client
import os
import socket
import sys

if os.getuid() == 0:
    os.execvp("setpriv", ["setpriv", "--reuid=mlflow", "--regid=mlflow", "--init-groups", *sys.argv])

SOCKET = os.environ.get("MLOPS_KIT_MLFLOW_SOCKET", "")
PORT = int(os.environ.get("MLFLOW_PORT", "5000"))


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over MLflow's Unix socket (the server has no TCP listener)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def fail(what: str, exc: BaseException | str) -> None:
    print(f"unhealthy: {what}: {exc}", file=sys.stderr)
    sys.exit(1)


try:
    connection = UnixHTTPConnection(SOCKET, 4) if SOCKET else http.client.HTTPConnection("127.0.0.1", PORT, timeout=4)
    connection.request("GET", "/health", headers={"Host": "localhost"})
    response = connection.getresponse()
    response.read()
    if response.status != 200:
        fail("GET /health", f"HTTP {response.status}")
except Exception as exc:  # any failure means unhealthy; say which probe
    fail("GET /health", exc)
if "--live" in sys.argv[1:]:
    print("ok: the web server answers")
    sys.exit(0)

import psycopg2  # noqa: E402  (only needed once the server answers)

for uri in filter(None, (os.environ.get("MLFLOW_BACKEND_STORE_URI"), os.environ.get("MLOPS_KIT_AUTH_DATABASE_URI"))):
    dsn = uri.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        with psycopg2.connect(dsn, connect_timeout=4) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        conn.close()
    except Exception as exc:
        fail(f"database {dsn.rsplit('/', 1)[-1].split('?')[0]}", exc)
print("ok")
