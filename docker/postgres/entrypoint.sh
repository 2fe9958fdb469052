#!/bin/bash
# Start as root only long enough to read the Compose secret (a root-owned 0600
# file on the host), then run everything as the unprivileged postgres user.
#
# PostgreSQL has no network interface at all: it listens on its Unix socket
# only, in a volume shared with the containers that need it (mlflow, backup
# jobs). On Docker < 28 the host can reach containers on "internal" networks,
# so a socket is the only way to keep the database unreachable from the host.
#
# First start: initdb with data checksums, an application role that owns the
# tracking database and the auth database. Every start: the kit's pg_hba.conf
# (superuser by peer only, everyone else by password) and any missing kit
# database (stacks created before the auth database existed get it here).
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
secret_file="${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}"
app_user="${POSTGRES_USER:-mlflow}"
read -r -a databases <<<"${POSTGRES_DATABASES:-mlflow mlflow_auth}"
# Where the root half hands the password to the postgres half (a private copy).
password_copy=/tmp/.app_password
# The healthcheck reports healthy only once this exists: the temporary
# socket-only server used below must never look like the real one.
ready_marker=/tmp/.kit-serving

log() { echo "postgres-entrypoint: $*" >&2; }

if [[ "$(id -u)" == "0" ]]; then
    if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
        if [[ ! -r "${secret_file}" ]]; then
            log "cannot read the password file ${secret_file}; run \`mlops-kit init\` (it writes secrets/postgres_password) or check the postgres_password secret in compose.yaml"
            exit 78
        fi
        # Written by the postgres user itself (no CHOWN/FOWNER needed): root
        # only opens the secret and hands its content over on stdin.
        setpriv --reuid=postgres --regid=postgres --init-groups \
            sh -c 'umask 077 && cat >"$1"' sh "${password_copy}" <"${secret_file}"
    fi
    # Volumes mounted from elsewhere (or restored) may come with another owner.
    [[ "$(stat -c %u "${PGDATA}")" == "$(id -u postgres)" ]] || chown -R postgres:postgres "${PGDATA}"
    if [[ "$(stat -c %u /run/postgresql)" != "$(id -u postgres)" ]]; then
        chown postgres:postgres /run/postgresql
        setpriv --reuid=postgres --regid=postgres --init-groups chmod 2775 /run/postgresql
    fi
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

rm -f "${ready_marker}"

start_private() {
    # Socket only, in a private folder: nobody else can connect meanwhile.
    install -d -m 0700 /tmp/.kit-init-socket
    pg_ctl --pgdata="${PGDATA}" --wait --silent \
        --options="-c listen_addresses='' -c unix_socket_directories=/tmp/.kit-init-socket" start
}
stop_private() { pg_ctl --pgdata="${PGDATA}" --wait --silent --mode=fast stop; }
psql_private() {
    psql --no-psqlrc --quiet --set=ON_ERROR_STOP=1 --host=/tmp/.kit-init-socket --username=postgres "$@"
}

if [[ "${1:-}" == "postgres" ]]; then
    if [[ ! -s "${PGDATA}/PG_VERSION" ]]; then
        log "initialising a new cluster in ${PGDATA}"
        initdb --pgdata="${PGDATA}" --username=postgres --auth-local=peer --auth-host=reject \
            --encoding=UTF8 --locale=C.UTF-8 --data-checksums >/dev/null
        start_private
        # The password goes through psql's stdin (\set from a file), never argv.
        psql_private --dbname=postgres --set=app_user="${app_user}" <<SQL
\\set app_password \`cat "${password_copy}"\`
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_password';
SQL
        stop_private
    fi
    rm -f "${password_copy}"

    # The kit owns pg_hba.conf: the superuser only by peer over the socket,
    # every other role by password over the socket, nothing over TCP.
    cat >"${PGDATA}/pg_hba.conf" <<'HBA'
# Managed by mlops-kit: rewritten at every start (edits are lost).
# TYPE  DATABASE  USER               METHOD
local   all       postgres           peer
local   all       mlops_kit_monitor  peer
local   all       all                scram-sha-256
HBA

    # The marker names the kit's databases and the version of its monitoring objects:
    # a change of either runs the block below once.
    wanted="${databases[*]} monitor:2"
    if [[ "$(cat "${PGDATA}/.mlops-kit-databases" 2>/dev/null)" != "${wanted}" ]]; then
        start_private
        for db in "${databases[@]}"; do
            exists="$(psql_private --dbname=postgres --tuples-only --no-align \
                --set=db="${db}" <<<"SELECT 1 FROM pg_database WHERE datname = :'db'")"
            if [[ "${exists}" != "1" ]]; then
                psql_private --dbname=postgres --set=db="${db}" --set=app_user="${app_user}" \
                    <<<'CREATE DATABASE :"db" OWNER :"app_user";'
                log "created database ${db} owned by ${app_user}"
            fi
        done
        # The metrics service's role (peer authentication from its container's user):
        # statistics only. It cannot read MLflow's tables, nor other sessions' query
        # texts (they hold parameter and tag values); connections and the longest
        # transaction come from one function that returns only counts and ages.
        psql_private --dbname=postgres <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlops_kit_monitor') THEN
        CREATE ROLE mlops_kit_monitor LOGIN;
    END IF;
END $$;
CREATE SCHEMA IF NOT EXISTS mlops_kit AUTHORIZATION postgres;
CREATE OR REPLACE FUNCTION mlops_kit.activity()
    RETURNS TABLE (state text, connections bigint, longest_transaction_seconds double precision)
    -- pg_temp last and every name qualified: a caller's temporary view named like a
    -- catalog object must never run inside this superuser-owned function.
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
        SELECT coalesce(a.state, 'unknown'), pg_catalog.count(*),
               coalesce(pg_catalog.max(EXTRACT(epoch FROM pg_catalog.now() - a.xact_start)), 0)::double precision
        FROM pg_catalog.pg_stat_activity a WHERE a.backend_type = 'client backend' GROUP BY 1
    $f$;
REVOKE ALL ON FUNCTION mlops_kit.activity() FROM PUBLIC;
GRANT USAGE ON SCHEMA mlops_kit TO mlops_kit_monitor;
GRANT EXECUTE ON FUNCTION mlops_kit.activity() TO mlops_kit_monitor;
SQL
        stop_private
        printf '%s' "${wanted}" >"${PGDATA}/.mlops-kit-databases"
    fi
    touch "${ready_marker}"
fi

exec "$@"
