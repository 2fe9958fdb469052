#!/opt/mlflow/bin/python
"""Container healthcheck: the web server answers and the backend store works.

/health only proves the HTTP server is up; reading the Default experiment
(id 0) proves the database connection too.
"""
import os
import sys
import urllib.request

BASE = f"http://127.0.0.1:{os.environ.get('MLFLOW_PORT', '5000')}"
PROBES = ("/health", "/api/2.0/mlflow/experiments/get?experiment_id=0")

for path in PROBES:
    try:
        with urllib.request.urlopen(BASE + path, timeout=4) as response:
            response.read()
    except Exception as exc:  # any failure means unhealthy; say which probe
        print(f"unhealthy: GET {path}: {exc}", file=sys.stderr)
        sys.exit(1)
print("ok")
