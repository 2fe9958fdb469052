#!/bin/bash
# Healthy = the server accepts TCP connections (not just the init-time socket)
# and the application database answers a query.
set -euo pipefail
if [[ "$(id -u)" == "0" ]]; then
    # Peer authentication: ask as the postgres OS user.
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
pg_isready --quiet --host=127.0.0.1 --port=5432
psql --no-psqlrc --quiet --tuples-only --host=/run/postgresql --username=postgres \
    --dbname="${POSTGRES_DB:-mlflow}" --command='SELECT 1' >/dev/null
