"""Keep healthcheck probes out of MLflow's access log.

The container's healthcheck and the proxy's each ask every 5 s; logging each
success would bury real traffic (~35,000 lines a day per probe). Dropped:
successful /health probes from inside the container (this container's
healthcheck: on the Unix socket it has no client address, on TCP it is loopback)
and successful /health?probe=proxy (the proxy's).
Failures, and every other request, are logged as before.
"""

import logging

LOCAL_PROBE_PATHS = ("/health",)
PROXY_PROBE_PATH = "/health?probe=proxy"


class HealthcheckProbeFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access records carry (client_addr, method, path, http_version, status).
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        client, _method, path, _version, status = args
        local = str(client) == "" or str(client).startswith("127.0.0.1:")
        is_probe = path == PROXY_PROBE_PATH or (local and path in LOCAL_PROBE_PATHS)
        return not (is_probe and isinstance(status, int) and status < 400)
