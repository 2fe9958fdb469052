#!/bin/bash
# Start as root only long enough to read the Compose secret (a root-owned 0600
# file on the host), then run everything as the unprivileged postgres user.
#
# First start: initdb with data checksums, superuser reachable only through the
# local socket (peer auth), and an application role that owns the application
# database. The temporary server listens on no TCP port, so the healthcheck
# (TCP) stays red until the real server is up.
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
secret_file="${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}"
app_user="${POSTGRES_USER:-mlflow}"
app_db="${POSTGRES_DB:-mlflow}"
# Where the root half hands the password to the postgres half (a private copy).
password_copy=/run/postgresql/.app_password

log() { echo "postgres-entrypoint: $*" >&2; }

if [[ "$(id -u)" == "0" ]]; then
    if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
        if [[ ! -r "${secret_file}" ]]; then
            log "cannot read the password file ${secret_file}; run \`mlops-kit init\` (it writes secrets/postgres_password) or check the postgres_password secret in compose.yaml"
            exit 78
        fi
        install -o postgres -g postgres -m 0400 "${secret_file}" "${password_copy}"
    fi
    # Volumes mounted from elsewhere (or restored) may come with another owner.
    [[ "$(stat -c %u "${PGDATA}")" == "$(id -u postgres)" ]] || chown -R postgres:postgres "${PGDATA}"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [[ "${1:-}" == "postgres" && ! -s "${PGDATA}/PG_VERSION" ]]; then
    log "initialising a new cluster in ${PGDATA}"
    initdb --pgdata="${PGDATA}" --username=postgres --auth-local=peer --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
    # Containers on the stack's network connect over TCP with a password.
    printf 'host all all all scram-sha-256\n' >>"${PGDATA}/pg_hba.conf"

    pg_ctl --pgdata="${PGDATA}" --wait --silent \
        --options="-c listen_addresses='' -c unix_socket_directories=/run/postgresql" start
    # The password goes through psql's stdin (\set from a file), never argv.
    psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --username=postgres --dbname=postgres \
        --set=app_user="${app_user}" --set=app_db="${app_db}" <<SQL
\\set app_password \`cat "${password_copy}"\`
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
SQL
    pg_ctl --pgdata="${PGDATA}" --wait --silent --mode=fast stop
    log "cluster ready: database ${app_db} owned by ${app_user}"
fi
rm -f "${password_copy}"

exec "$@"
