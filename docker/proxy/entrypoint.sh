#!/bin/bash
# Start as root only long enough to copy the TLS key (a root-owned 0600 file on
# the host) into the private /tmp (a tmpfs) for the caddy user, then run Caddy
# as caddy. The key never leaves that tmpfs.
set -euo pipefail

secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"
die() { echo "proxy-entrypoint: $1" >&2; exit 78; }
# Caddy's own metrics for the metrics service (the Caddyfile's last site).
metrics_socket=/run/proxy-metrics/caddy.sock

# The origins a browser request may come from (docker/common/allowed-origins.sh),
# as one anchored regular expression for the Caddyfile's Origin check. No names
# (the image run without the kit's settings): every Origin is refused.
# shellcheck source=../common/allowed-origins.sh
source /usr/local/lib/mlops-kit/allowed-origins.sh
origins=""
[[ -z "${MLOPS_KIT_PUBLIC_PORT:-}" ]] || origins="$(allowed_origins)"
escaped="$(printf '%s' "${origins}" | sed -e 's/[].[\\^$*+?(){}|]/\\&/g' -e 's/,/|/g')"
export MLOPS_KIT_ORIGIN_REGEX="^(${escaped})\$"

if [[ "$(id -u)" == "0" ]]; then
    for name in tls_cert tls_key; do
        [[ -s "${secrets_dir}/${name}" ]] || die "cannot read ${secrets_dir}/${name}; run \`mlops-kit init\` (it issues the kit's certificate) or check MLOPS_KIT_TLS_CERT_FILE / MLOPS_KIT_TLS_KEY_FILE"
    done
    as_caddy() { setpriv --reuid=caddy --regid=caddy --init-groups "$@"; }
    as_caddy mkdir -p -m 0700 /tmp/tls "${XDG_CONFIG_HOME}" "${XDG_DATA_HOME}"
    # Written by caddy itself: root only opens the secret files (no CHOWN needed).
    for pair in tls_cert:server.crt tls_key:server.key; do
        as_caddy sh -c 'umask 077 && cat >"$1"' sh "/tmp/tls/${pair#*:}" <"${secrets_dir}/${pair%%:*}"
    done
    # The scrape login's password, as the bcrypt hash Caddy's basicauth checks (cost 10:
    # a wrong password costs the proxy ~50 ms of CPU, not the ~1 s of Caddy's default).
    # htpasswd reads it on stdin: it never sits in argv.
    if [[ -s "${secrets_dir}/metrics_password" ]]; then
        hash="$(htpasswd -niBC 10 metrics <"${secrets_dir}/metrics_password" | cut -d: -f2-)"
        [[ "${hash}" == '$2'* ]] || die "could not hash ${secrets_dir}/metrics_password"
        MLOPS_KIT_METRICS_HASH="$(printf '%s' "${hash}" | base64 -w0)"
        export MLOPS_KIT_METRICS_HASH
    fi
    # Sockets Caddy creates (its metrics socket) are writable by its group, which the
    # metrics service's user belongs to: connecting needs write permission.
    umask 0002
    # A socket left by a Caddy that was killed (the watchdog, the OOM killer): Caddy 2.6
    # will not bind over it, and the proxy would never start again.
    as_caddy rm -f "${metrics_socket}"
    exec setpriv --reuid=caddy --regid=caddy --init-groups "$@"
fi

rm -f "${metrics_socket}"
exec "$@"
