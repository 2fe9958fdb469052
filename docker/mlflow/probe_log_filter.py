"""Keep the container's own healthcheck out of MLflow's access log.

The healthcheck asks every 5 s; logging each success would bury real traffic
(~35,000 lines a day). Only successful probes from loopback are dropped:
failures, and every other request, are logged as before.
"""

import logging

PROBE_PATHS = ("/health", "/api/2.0/mlflow/experiments/get?experiment_id=0")


class HealthcheckProbeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access records carry (client_addr, method, path, http_version, status).
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        client, _method, path, _version, status = args
        is_probe = str(client).startswith("127.0.0.1:") and path in PROBE_PATHS
        return not (is_probe and isinstance(status, int) and status < 400)
