#!/bin/bash
# Healthy = the real server (not the entrypoint's private one) answers a query
# in every kit database over the shared socket.
set -euo pipefail
if [[ "$(id -u)" == "0" ]]; then
    # Peer authentication: ask as the postgres OS user.
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[[ -e /tmp/.kit-serving ]] || { echo "starting: initialisation not finished" >&2; exit 1; }
# --live (the watchdog's question, kit-watchdog): a server starting up (crash recovery)
# or shutting down (the checkpoint of a clean stop) is busy on purpose: exit 75 tells
# the watchdog so, and it does not count that time as silence.
if [[ "${1:-}" == "--live" && -r "${PGDATA:-/var/lib/postgresql/data}/postmaster.pid" ]]; then
    server_state="$(sed -n 8p "${PGDATA:-/var/lib/postgresql/data}/postmaster.pid" | tr -d ' ')"
    if [[ "${server_state}" == "starting" || "${server_state}" == "stopping" ]]; then
        echo "busy: PostgreSQL is ${server_state}" >&2
        exit 75
    fi
fi
for db in ${POSTGRES_DATABASES:-mlflow mlflow_auth}; do
    psql --no-psqlrc --quiet --tuples-only --host=/run/postgresql --username=postgres \
        --dbname="${db}" --command='SELECT 1' >/dev/null
done
