#!/bin/bash
# Start as root only long enough to turn the Compose secret (a root-owned 0600
# file on the host) into a libpq password file owned by the mlflow user, then
# run the server as that user. The password never sits in argv or environment.
set -euo pipefail

secret_file="${MLFLOW_DB_PASSWORD_FILE:-/run/secrets/postgres_password}"

if [[ "$(id -u)" == "0" ]]; then
    if [[ ! -r "${secret_file}" ]]; then
        echo "mlflow-entrypoint: cannot read the database password file ${secret_file}; run \`mlops-kit init\` (it writes secrets/postgres_password) or check the postgres_password secret in compose.yaml" >&2
        exit 78
    fi
    password="$(<"${secret_file}")"
    # .pgpass escapes: backslash and colon.
    password="${password//\\/\\\\}"
    password="${password//:/\\:}"
    install -o mlflow -g mlflow -m 0600 /dev/null "${PGPASSFILE}"
    printf '*:*:*:%s:%s\n' "${MLFLOW_DB_USER:-mlflow}" "${password}" >"${PGPASSFILE}"
    unset password
    artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-}"
    if [[ "${artifacts}" == /* ]] && ! setpriv --reuid=mlflow --regid=mlflow --init-groups test -w "${artifacts}"; then
        echo "mlflow-entrypoint: the artifact store ${artifacts} is not writable by uid $(id -u mlflow); for NFS, export it with all_squash,anonuid=$(id -u mlflow),anongid=$(id -g mlflow) or chown the export to that uid" >&2
        exit 73
    fi
    exec setpriv --reuid=mlflow --regid=mlflow --init-groups "$@"
fi

exec "$@"
