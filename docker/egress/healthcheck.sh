#!/bin/bash
# Healthy = the socket MLflow uses is there and Squid answers a request (on its own
# health port, which refuses everything and stays out of the access log).
set -euo pipefail
[[ -S "${MLOPS_KIT_EGRESS_SOCKET:-/run/egress/proxy.sock}" ]] || { echo "unhealthy: no socket for MLflow" >&2; exit 1; }
exec 3<>/dev/tcp/127.0.0.1/3129 || { echo "unhealthy: Squid does not accept connections" >&2; exit 1; }
printf 'GET http://health.invalid/ HTTP/1.0\r\n\r\n' >&3
read -r -t 4 status <&3 || true
[[ "${status}" == HTTP/* ]] || { echo "unhealthy: Squid does not answer requests" >&2; exit 1; }
