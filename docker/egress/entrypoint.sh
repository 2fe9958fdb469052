#!/bin/bash
# Write Squid's configuration from MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS (host[:port],
# comma-separated; the port defaults to 443), start Squid on loopback as the proxy
# user, and bridge the Unix socket MLflow connects to (in the egress-socket volume)
# to it. Only CONNECT tunnels (https) to those host and port pairs pass; every
# other destination, port or method is refused (403).
set -euo pipefail

die() { echo "egress-entrypoint: $1" >&2; exit 78; }
socket="${MLOPS_KIT_EGRESS_SOCKET:-/run/egress/proxy.sock}"
conf=/tmp/squid.conf

[[ -n "${MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS:-}" ]] || die "MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS is empty: with no allowed host this service has nothing to do"
as_proxy() { setpriv --reuid=proxy --regid=proxy --init-groups "$@"; }
as_proxy mkdir -p -m 0700 /tmp/squid

{
    echo "http_port 127.0.0.1:3128"
    # The healthcheck's port: it only connects, and stays out of the access log.
    echo "http_port 127.0.0.1:3129 name=health"
    echo "acl health myportname health"
    echo "cache_effective_user proxy"
    echo "cache_effective_group proxy"
    echo "pinger_enable off"
    echo "pid_filename none"
    echo "cache deny all"
    echo "cache_mem 0"
    echo "access_log none health"
    echo "access_log stdio:/tmp/squid/access.log"
    echo "cache_log stdio:/tmp/squid/cache.log"
    echo "logfile_rotate 0"
    echo "coredump_dir /tmp/squid"
    echo "shutdown_lifetime 1 seconds"
    echo "forwarded_for delete"
    echo "via off"
    echo "acl CONNECT method CONNECT"
    n=0
    IFS=',' read -r -a entries <<<"${MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS}"
    for entry in "${entries[@]}"; do
        entry="${entry// /}"
        [[ -n "${entry}" ]] || continue
        if [[ "${entry}" =~ ^\[(.+)\](:([0-9]+))?$ ]]; then      # [v6]:port
            host="${BASH_REMATCH[1]}" port="${BASH_REMATCH[3]:-443}"
        elif [[ "${entry}" =~ ^([^:]+)(:([0-9]+))?$ ]]; then      # name or v4, :port
            host="${BASH_REMATCH[1]}" port="${BASH_REMATCH[3]:-443}"
        else
            die "MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS: cannot read '${entry}' (expected host or host:port)"
        fi
        if [[ "${host}" =~ ^[0-9.]+$ || "${host}" == *:* ]]; then
            echo "acl host_${n} dst ${host}"
        else
            # -n: match the name the client asked for, never a reverse lookup of an address.
            echo "acl host_${n} dstdomain -n ${host}"
        fi
        echo "acl port_${n} port ${port}"
        # Webhooks are https: a tunnel to the allowed host and port, nothing else.
        echo "http_access allow CONNECT host_${n} port_${n}"
        n=$((n + 1))
    done
    echo "http_access deny all"
} >"${conf}"
chmod 0644 "${conf}"
squid -k parse -f "${conf}" >/dev/null 2>&1 || { squid -k parse -f "${conf}" >&2; die "Squid refused the configuration written from MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS"; }

# The bridge runs as the proxy user too; the socket is for the mlflow user (any uid: 0666).
rm -f "${socket}"
setpriv --reuid=proxy --regid=proxy --init-groups socat "UNIX-LISTEN:${socket},fork,mode=0666,unlink-early" TCP:127.0.0.1:3128 &
# Squid (as cache_effective_user) cannot open the container's stdout: its log files
# are copied there, so that `mlops-kit logs egress` shows every decision.
as_proxy touch /tmp/squid/access.log /tmp/squid/cache.log
setpriv --reuid=proxy --regid=proxy --init-groups tail -q -n +1 -F /tmp/squid/access.log /tmp/squid/cache.log &
exec squid -N -f "${conf}"
