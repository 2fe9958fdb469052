#!/bin/bash
# Write Prometheus's configuration from the kit's settings, open the bridge to the metrics
# service's socket, and run Prometheus as its own user. Nothing here is secret: the scrape
# goes over the socket, behind the proxy's login. Its API listens on its own loopback only
# (`promtool` in the container, the healthcheck): its network is reachable from the host.
set -euo pipefail
die() { echo "prometheus-entrypoint: $1" >&2; exit 78; }

secrets_dir="${MLOPS_KIT_SECRETS_MOUNT:-/run/secrets}"
if [[ "$(id -u)" == "0" ]]; then
    # A volume created elsewhere may come with another owner.
    [[ "$(stat -c %u /prometheus)" == "$(id -u prometheus)" ]] || chown -R prometheus:prometheus /prometheus
    # Alertmanager's login (its API is reachable from the host): a private copy for Prometheus.
    [[ -s "${secrets_dir}/alertmanager_password" ]] || die "cannot read ${secrets_dir}/alertmanager_password; run \`mlops-kit up\` (it generates it)"
    setpriv --reuid=prometheus --regid=prometheus --init-groups sh -c 'umask 077 && head -n 1 | tr -d "\r\n" >/tmp/alertmanager_password' \
        <"${secrets_dir}/alertmanager_password"
    exec setpriv --reuid=prometheus --regid=prometheus --init-groups "$0" "$@"
fi

interval="${MLOPS_KIT_PROMETHEUS_SCRAPE_INTERVAL:-30s}"
stack="${MLOPS_KIT_STACK:-mlops-kit}"
cat >/tmp/prometheus.yml <<YAML
# Written at every start by prometheus-entrypoint (edits are lost): see docs/monitoring.md.
global:
  scrape_interval: ${interval}
  evaluation_interval: ${interval}
  external_labels:
    stack: "${stack}"
rule_files:
  - /etc/mlops-kit/rules/mlops-kit.rules.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["alertmanager:9093"]
      basic_auth:
        username: prometheus
        password_file: /tmp/alertmanager_password
scrape_configs:
  # The stack's /metrics (the metrics service), through socat below.
  - job_name: mlops-kit
    static_configs:
      - targets: ["127.0.0.1:9100"]
        labels:
          instance: "${stack}"
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:9090"]
  - job_name: alertmanager
    basic_auth:
      username: prometheus
      password_file: /tmp/alertmanager_password
    static_configs:
      - targets: ["alertmanager:9093"]
YAML
promtool check config --syntax-only /tmp/prometheus.yml >/dev/null || die "the generated configuration is invalid; check MLOPS_KIT_PROMETHEUS_* in .env"

# Prometheus scrapes TCP only: a loopback port inside this container, passed to the socket.
socat TCP-LISTEN:9100,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/run/metrics/metrics.sock &

exec prometheus \
    --config.file=/tmp/prometheus.yml \
    --storage.tsdb.path=/prometheus \
    --storage.tsdb.retention.time="${MLOPS_KIT_PROMETHEUS_RETENTION:-30d}" \
    --storage.tsdb.retention.size="${MLOPS_KIT_PROMETHEUS_RETENTION_SIZE:-2GB}" \
    --web.listen-address=127.0.0.1:9090 \
    --log.level=warn \
    "$@"
