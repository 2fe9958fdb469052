#!/opt/mlflow/bin/python
"""Container healthcheck: the web server answers and both databases work.

/health (exempt from authentication) proves the HTTP server is up; a query in
the tracking and the auth database, with the server's own credentials, proves
the database path. Runs as the mlflow user: the probe needs no privilege and
the password file belongs to that user.
"""

import os
import sys
import urllib.request

if os.getuid() == 0:
    os.execvp("setpriv", ["setpriv", "--reuid=mlflow", "--regid=mlflow", "--init-groups", sys.argv[0]])

PORT = os.environ.get("MLFLOW_PORT", "5000")


def fail(what: str, exc: BaseException) -> None:
    print(f"unhealthy: {what}: {exc}", file=sys.stderr)
    sys.exit(1)


try:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=4) as response:
        response.read()
except Exception as exc:  # any failure means unhealthy; say which probe
    fail("GET /health", exc)

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
