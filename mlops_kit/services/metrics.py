"""The metrics service: everything behind https://<host>:<port>/metrics (docs/monitoring.md)."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

METRICS = ServiceSpec(
    name="metrics",
    image_setting="MLOPS_KIT_METRICS_IMAGE",
    dockerfile="docker/metrics/Dockerfile",
    healthcheck="kit-metrics --check",
    description="Prometheus metrics of MLflow, the proxy, PostgreSQL and the kit (behind the metrics login)",
)

#: The only login /metrics accepts (its password: the secret file metrics_password).
SCRAPE_USER = "metrics"
SCRAPE_PASSWORD_FILE = "metrics_password"
