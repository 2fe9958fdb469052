#!/bin/bash
# Start as root only long enough to turn the Compose secrets (root-owned 0600
# files on the host) into files owned by the mlflow user in the private /tmp
# (a tmpfs): libpq's password file and the basic-auth configuration. Then run
# the server as mlflow. No secret ever sits in argv or in the container's
# configured environment (`docker inspect`).
set -euo pipefail

secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"

die() { echo "mlflow-entrypoint: $1" >&2; exit "${2:-78}"; }

as_mlflow() { setpriv --reuid=mlflow --regid=mlflow --init-groups "$@"; }
# Write stdin to a file only mlflow can read, as mlflow itself: root needs no
# CHOWN or FOWNER capability for it.
write_private() { as_mlflow sh -c 'umask 077 && cat >"$1"' sh "$1"; }

read_secret() {
    local file="${secrets_dir}/$1"
    [[ -r "${file}" ]] || die "cannot read the secret file ${file}; run \`mlops-kit init\` (it writes every missing file under secrets/) or check the $1 secret in compose.yaml"
    local value
    value="$(<"${file}")"
    [[ -n "${value}" ]] || die "the secret file ${file} is empty; run \`mlops-kit init\` to generate it"
    printf '%s' "${value}"
}

# Browsers send an Origin header with the UI's writes; MLflow refuses writes from
# any origin but localhost unless it is listed. The proxy already refuses every
# other origin (localhost pages included); MLflow gets the same list.
# shellcheck source=../common/allowed-origins.sh
source /usr/local/lib/mlops-kit/allowed-origins.sh
if [[ -z "${MLFLOW_SERVER_CORS_ALLOWED_ORIGINS:-}" && -n "${MLOPS_KIT_PUBLIC_PORT:-}" ]]; then
    MLFLOW_SERVER_CORS_ALLOWED_ORIGINS="$(allowed_origins)"
    export MLFLOW_SERVER_CORS_ALLOWED_ORIGINS
fi

# Database connection pools: MLflow opens one SQLAlchemy engine per store in every
# worker (tracking, model registry, users; jobs when enabled), each with its own pool.
# SQLAlchemy's default (5 + 10 overflow) times 3 engines times 4 workers is 180
# connections: more than PostgreSQL's 100, and under load requests fail with "too many
# clients". Split what PostgreSQL allows (less a reserve for backups, healthchecks and
# job runners) evenly instead, unless the operator set the pool variables.
if [[ -z "${MLFLOW_SQLALCHEMYSTORE_POOL_SIZE:-}" && -n "${MLOPS_KIT_POSTGRES_MAX_CONNECTIONS:-}" ]]; then
    engines=3
    [[ "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-true}" == "false" ]] || engines=4
    reserve=20
    per_engine=$(( (MLOPS_KIT_POSTGRES_MAX_CONNECTIONS - reserve) / (${MLFLOW_WORKERS:-4} * engines) ))
    (( per_engine >= 2 )) || die "POSTGRES_MAX_CONNECTIONS=${MLOPS_KIT_POSTGRES_MAX_CONNECTIONS} is too small for MLOPS_KIT_MLFLOW_WORKERS=${MLFLOW_WORKERS:-4} (each worker needs ${engines} pools of at least 2 connections, plus ${reserve} in reserve); raise POSTGRES_MAX_CONNECTIONS to $(( ${MLFLOW_WORKERS:-4} * engines * 2 + reserve )) or more in .env" 78
    pool=$(( per_engine < 5 ? per_engine : 5 ))
    export MLFLOW_SQLALCHEMYSTORE_POOL_SIZE="${pool}"
    export MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW="$(( per_engine - pool ))"
    # Recycle connections before any firewall or PostgreSQL timeout silently drops them.
    export MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE="${MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE:-1800}"
fi

# s3 and minio modes (docker/compose/artifacts-s3.yaml sets MLOPS_KIT_S3_BUCKET):
# artifacts go to the bucket. kit-s3:// stores exactly as s3:// does but keeps
# every transfer on MLflow's proxy (no presigned URLs naming an internal host);
# MLOPS_KIT_S3_PRESIGNED=true hands clients presigned URLs instead.
if [[ -n "${MLOPS_KIT_S3_BUCKET:-}" ]]; then
    scheme="kit-s3"
    [[ "${MLOPS_KIT_S3_PRESIGNED:-false}" != "true" ]] || scheme="s3"
    prefix="${MLOPS_KIT_S3_PREFIX:-}"
    MLFLOW_ARTIFACTS_DESTINATION="${scheme}://${MLOPS_KIT_S3_BUCKET}${prefix:+/${prefix}}"
    export MLFLOW_ARTIFACTS_DESTINATION
    # An empty endpoint means AWS itself: botocore must not see an empty URL.
    [[ -n "${MLFLOW_S3_ENDPOINT_URL:-}" ]] || unset MLFLOW_S3_ENDPOINT_URL
    export AWS_SHARED_CREDENTIALS_FILE=/tmp/mlflow-aws/credentials AWS_CONFIG_FILE=/tmp/mlflow-aws/config
fi

# Listen on the Unix socket the proxy shares, never on TCP. Only the proxy can
# connect to it, so the client address and scheme it forwards are trusted (the
# public https URL in redirects, the real client in the access log).
if [[ -n "${MLOPS_KIT_MLFLOW_SOCKET:-}" ]]; then
    MLFLOW_UVICORN_OPTS="${MLFLOW_UVICORN_OPTS:-} --uds ${MLOPS_KIT_MLFLOW_SOCKET} --proxy-headers --forwarded-allow-ips=*"
    export MLFLOW_UVICORN_OPTS
fi

# The tracking server itself (not a one-shot job such as `mlflow db upgrade`).
serving=false
if [[ "${1:-}" == "mlflow" && "${2:-}" == "server" ]]; then serving=true; fi

if [[ "$(id -u)" == "0" ]]; then
    if [[ -n "${MLFLOW_BACKEND_STORE_URI:-}" ]]; then
        password="$(read_secret postgres_password)"
        # .pgpass escapes: backslash and colon.
        password="${password//\\/\\\\}"
        password="${password//:/\\:}"
        printf '*:*:*:%s:%s\n' "${MLFLOW_DB_USER:-mlflow}" "${password}" | write_private "${PGPASSFILE}"
        unset password
    fi

    if [[ -n "${MLOPS_KIT_S3_BUCKET:-}" ]]; then
        # boto3 reads the keys from a credentials file only the mlflow user can read:
        # never from the container's configured environment or argv.
        as_mlflow mkdir -p -m 0700 /tmp/mlflow-aws
        {
            printf '[default]\n'
            printf 'aws_access_key_id = %s\n' "$(read_secret s3_access_key_id)"
            printf 'aws_secret_access_key = %s\n' "$(read_secret s3_secret_access_key)"
        } | write_private "${AWS_SHARED_CREDENTIALS_FILE}"
        printf '[default]\nregion = %s\n' "${AWS_DEFAULT_REGION:-us-east-1}" | write_private "${AWS_CONFIG_FILE}"
        # The operator's CA for the endpoint, on top of the system's (AWS_CA_BUNDLE).
        if [[ -r "${secrets_dir}/s3_ca" ]] && grep -q 'BEGIN CERTIFICATE' "${secrets_dir}/s3_ca"; then
            cat /etc/ssl/certs/ca-certificates.crt "${secrets_dir}/s3_ca" | write_private /tmp/mlflow-aws/ca-bundle.pem
            export AWS_CA_BUNDLE=/tmp/mlflow-aws/ca-bundle.pem
        fi
    fi
    # Staging of proxied transfers (a disk volume in bucket modes): leftovers of a crash go.
    # Only at the server's own start: a job (gc) shares the volume with a running server.
    if [[ "${serving}" == "true" && -n "${TMPDIR:-}" && "${TMPDIR}" == /var/tmp/* && -d "${TMPDIR}" ]]; then
        as_mlflow find "${TMPDIR}" -mindepth 1 -delete 2>/dev/null || true
    fi

    # The workers' request metrics (kit_request_metrics.py): counters start again with
    # the server, and files of workers that no longer exist must not be summed forever.
    # Only at the server's own start, like the staging above.
    if [[ "${serving}" == "true" && -n "${PROMETHEUS_MULTIPROC_DIR:-}" && -d "${PROMETHEUS_MULTIPROC_DIR}" ]]; then
        as_mlflow find "${PROMETHEUS_MULTIPROC_DIR}" -mindepth 1 -delete 2>/dev/null || true
    fi

    if [[ -n "${MLFLOW_AUTH_CONFIG_PATH:-}" ]]; then
        as_mlflow mkdir -p -m 0700 "$(dirname "${MLFLOW_AUTH_CONFIG_PATH}")"
        admin_password="$(read_secret mlflow_admin_password)"
        [[ "${admin_password}" != *$'\n'* ]] || die "the secret file ${secrets_dir}/mlflow_admin_password holds more than one line"
        # MLflow reads the file with configparser, whose interpolation treats % specially.
        admin_password="${admin_password//%/%%}"
        # The admin password only matters the first time (creating the admin
        # user); afterwards `mlops-kit users passwd` rotates it through the API.
        {
            printf '[mlflow]\n'
            printf 'default_permission = %s\n' "${MLOPS_KIT_AUTH_DEFAULT_PERMISSION:-NO_PERMISSIONS}"
            printf 'database_uri = %s\n' "${MLOPS_KIT_AUTH_DATABASE_URI:?MLOPS_KIT_AUTH_DATABASE_URI must be set}"
            printf 'admin_username = %s\n' "${MLOPS_KIT_ADMIN_USER:-admin}"
            printf 'admin_password = %s\n' "${admin_password}"
            # MLflow's password check behind the kit's login and request policy
            # (docker/mlflow/plugin/mlops_kit_auth.py).
            printf 'authorization_function = mlops_kit_auth:authenticate_request\n'
            # Password hashes are slow on purpose (scrypt, ~100 ms): a verified login is
            # cached per worker for this long (password changes and deletions reach the
            # other workers within it).
            printf 'auth_cache_ttl_seconds = %s\n' "${MLOPS_KIT_AUTH_CACHE_SECONDS:-60}"
        } | write_private "${MLFLOW_AUTH_CONFIG_PATH}"
        unset admin_password
        # MLflow reads the CSRF key from this variable only. It lives in the
        # server's process environment, never in the container configuration.
        MLFLOW_FLASK_SERVER_SECRET_KEY="$(read_secret mlflow_flask_secret_key)"
        export MLFLOW_FLASK_SERVER_SECRET_KEY
    fi

    # The key-encryption passphrase of MLflow's stored secrets (AI gateway, webhooks):
    # the kit's own, never MLflow's public default. Same route as the CSRF key.
    if [[ -e "${secrets_dir}/mlflow_kek_passphrase" ]]; then
        MLFLOW_CRYPTO_KEK_PASSPHRASE="$(read_secret mlflow_kek_passphrase)"
        export MLFLOW_CRYPTO_KEK_PASSPHRASE
        if [[ "${serving}" == "true" ]]; then
            # Secrets a kit without its own passphrase stored under the default one.
            as_mlflow mlflow-kek-adopt || die "could not re-wrap MLflow's stored secrets with the kit's passphrase (see above)" 70
        fi
        # Webhook secrets (the HMAC keys) are encrypted with their own Fernet key;
        # without one each worker process makes up its own, so a secret stored by one
        # worker cannot be read by the next, nor after a restart. Derived from the
        # passphrase (backups carry it), never written anywhere.
        MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY="$(printf '%s' "${MLFLOW_CRYPTO_KEK_PASSPHRASE}" | python3 -c \
            'import base64, hashlib, sys; print(base64.urlsafe_b64encode(hashlib.sha256(b"mlops-kit webhook secrets\0" + sys.stdin.buffer.read()).digest()).decode())')"
        export MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY
    fi

    # Webhook deliveries leave only through the egress proxy's allowlist, or not at all
    # (mlops_kit_webhooks.py, in every mode): that replaces MLflow's own check that a
    # webhook URL resolves to a public address, which needs DNS (MLflow has none) and
    # refuses the private addresses on-prem receivers have.
    export MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true
    # Webhooks (docker/compose/webhooks.yaml): MLflow has no network; its one way out
    # is the egress proxy's socket, offered on loopback as an HTTP proxy for the webhook
    # session only (docker/mlflow/plugin/mlops_kit_webhooks.py). The proxy allows only
    # MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS, so MLflow's own check that a webhook reaches a
    # public address (it would see only this loopback proxy, and on-prem receivers have
    # private addresses) gives way to that allowlist.
    if [[ -n "${MLOPS_KIT_EGRESS_SOCKET:-}" && "${serving}" == "true" ]]; then
        setpriv --reuid=mlflow --regid=mlflow --init-groups \
            socat TCP-LISTEN:3128,bind=127.0.0.1,fork,reuseaddr "UNIX-CONNECT:${MLOPS_KIT_EGRESS_SOCKET}" &
        export MLOPS_KIT_WEBHOOK_PROXY=http://127.0.0.1:3128
        # The CAs receivers' certificates are checked against: the system's (with the
        # build's extra CAs), plus MLOPS_KIT_WEBHOOK_CA_FILE's.
        export MLOPS_KIT_WEBHOOK_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
        if [[ -r "${secrets_dir}/webhook_ca" ]] && grep -q 'BEGIN CERTIFICATE' "${secrets_dir}/webhook_ca"; then
            as_mlflow mkdir -p -m 0700 /tmp/mlflow-webhooks
            cat /etc/ssl/certs/ca-certificates.crt "${secrets_dir}/webhook_ca" \
                | write_private /tmp/mlflow-webhooks/ca-bundle.pem
            MLOPS_KIT_WEBHOOK_CA_BUNDLE=/tmp/mlflow-webhooks/ca-bundle.pem
        fi
    fi

    if [[ -n "${MLOPS_KIT_MLFLOW_SOCKET:-}" && "${serving}" == "true" ]]; then
        # A socket left by a killed server would make uvicorn's bind fail. Only the server
        # itself may remove it: a one-shot job (gc, say) shares the socket's volume while
        # the server runs, and would cut the proxy off from it.
        as_mlflow rm -f "${MLOPS_KIT_MLFLOW_SOCKET}"
        # MLflow's job runners call the server at http://127.0.0.1:5000: offer the socket
        # there, inside MLflow's own namespace only.
        if [[ "${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}" == "true" && "${serving}" == "true" ]]; then
            setpriv --reuid=mlflow --regid=mlflow --init-groups \
                socat TCP-LISTEN:5000,bind=127.0.0.1,fork,reuseaddr "UNIX-CONNECT:${MLOPS_KIT_MLFLOW_SOCKET}" &
        fi
    fi

    artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-}"
    if [[ "${artifacts}" == /* ]] && ! as_mlflow test -w "${artifacts}"; then
        die "the artifact store ${artifacts} is not writable by uid $(id -u mlflow); for NFS, export it with all_squash,anonuid=$(id -u mlflow),anongid=$(id -g mlflow) or chown the export to that uid" 73
    fi
    # setpriv keeps root's HOME; MLflow's assistant and caches write under HOME.
    export HOME=/home/mlflow
    exec setpriv --reuid=mlflow --regid=mlflow --init-groups "$@"
fi

exec "$@"
