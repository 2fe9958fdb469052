#!/bin/bash
# Start as root only long enough to copy the proxy's certificate (a root-owned 0600
# file on the host; its expiry date is a metric) into the private /tmp, then run the
# collector as the unprivileged metrics user.
set -euo pipefail
secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"
if [[ "$(id -u)" == "0" ]]; then
    as_metrics() { setpriv --reuid=metrics --regid=metrics --init-groups "$@"; }
    as_metrics mkdir -p -m 0700 /tmp/tls
    if [[ -r "${secrets_dir}/tls_cert" ]]; then
        as_metrics sh -c 'umask 077 && cat >/tmp/tls/server.crt' <"${secrets_dir}/tls_cert"
    fi
    exec setpriv --reuid=metrics --regid=metrics --init-groups "$@"
fi
exec "$@"
