#!/bin/bash
# Start as root only long enough to read the root credentials (Compose secrets:
# root-owned 0600 files on the host), then run MinIO as the unprivileged minio
# user. The credentials reach MinIO through its process environment, never
# argv, so they are not in `ps`, `docker inspect` or the compose file.
#
# MinIO could read MINIO_ROOT_USER_FILE / MINIO_ROOT_PASSWORD_FILE itself, but
# only as the user it runs as, and that user cannot open the secret files.
set -euo pipefail

secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"
die() { echo "minio-entrypoint: $1" >&2; exit 78; }

# Only the kit's secrets set the root credentials: drop any other source MinIO
# would otherwise prefer (the *_FILE variables win over the plain ones).
unset MINIO_ROOT_USER_FILE MINIO_ROOT_PASSWORD_FILE MINIO_ACCESS_KEY_FILE MINIO_SECRET_KEY_FILE \
      MINIO_ACCESS_KEY MINIO_SECRET_KEY

read_secret() {
    local file="${secrets_dir}/$1" value
    [[ -r "${file}" && -s "${file}" ]] \
        || die "cannot read ${file}; run \`mlops-kit init\` (it generates the S3 keys for the minio mode) or check the $1 secret in docker/compose/artifacts-minio.yaml"
    value="$(<"${file}")"
    # Trailing newlines are gone ($(...)); a stray carriage return too.
    value="${value%$'\r'}"
    printf '%s' "${value}"
}

MINIO_ROOT_USER="$(read_secret minio_root_user)"
MINIO_ROOT_PASSWORD="$(read_secret minio_root_password)"
# MinIO's own limits: it refuses to start with shorter ones, less clearly.
(( ${#MINIO_ROOT_USER} >= 3 )) || die "the root user (secret minio_root_user) must have at least 3 characters"
(( ${#MINIO_ROOT_PASSWORD} >= 8 )) || die "the root password (secret minio_root_password) must have at least 8 characters"
export MINIO_ROOT_USER MINIO_ROOT_PASSWORD

if [[ "$(id -u)" == "0" ]]; then
    # setpriv keeps the environment: give MinIO its own home (its config and
    # certs directories exist there already; the root filesystem is read-only).
    export HOME=/home/minio USER=minio LOGNAME=minio
    as_minio() { setpriv --reuid=minio --regid=minio --init-groups "$@"; }
    # A volume created elsewhere (or restored as root) may belong to someone
    # else; say so rather than let MinIO fail with a permission error later.
    as_minio test -w /data \
        || die "/data is not writable by the minio user (uid $(id -u minio)); chown -R $(id -u minio):$(id -g minio) the minio-data volume"
    exec setpriv --reuid=minio --regid=minio --init-groups "$@"
fi

exec "$@"
