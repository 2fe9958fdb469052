#!/bin/bash
# Healthy = the real server (not the entrypoint's private one) answers a query
# in every kit database over the shared socket.
set -euo pipefail
if [[ "$(id -u)" == "0" ]]; then
    # Peer authentication: ask as the postgres OS user.
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
[[ -e /tmp/.kit-serving ]] || { echo "starting: initialisation not finished" >&2; exit 1; }
for db in ${POSTGRES_DATABASES:-mlflow mlflow_auth}; do
    psql --no-psqlrc --quiet --tuples-only --host=/run/postgresql --username=postgres \
        --dbname="${db}" --command='SELECT 1' >/dev/null
done
