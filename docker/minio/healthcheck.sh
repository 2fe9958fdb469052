#!/bin/bash
# Healthy = MinIO's cluster health endpoint answers 200. Unlike /minio/health/live
# and /ready (200 as soon as the HTTP listener is up, with only an
# x-minio-server-status: offline header while the drive is still loading),
# /minio/health/cluster is 503 until the object layer, bucket metadata and IAM
# are initialised and the drive has write quorum. It needs no credentials.
# Plain bash (/dev/tcp): the image has no curl.
set -euo pipefail
if [[ "$(id -u)" == "0" ]]; then
    # It needs no privilege: ask as the minio user.
    exec setpriv --reuid=minio --regid=minio --init-groups "$0" "$@"
fi
exec 3<>/dev/tcp/127.0.0.1/9000
printf 'GET /minio/health/cluster HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: minio-healthcheck\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 4 status_line <&3 || { echo "no answer from 127.0.0.1:9000" >&2; exit 1; }
status_line="${status_line%$'\r'}"
[[ "${status_line}" =~ ^HTTP/1\.[01]\ 200([[:space:]]|$) ]] || { echo "minio: ${status_line}" >&2; exit 1; }
