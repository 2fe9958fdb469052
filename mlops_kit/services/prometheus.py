"""The bundled Prometheus (MLOPS_KIT_MONITORING=true): scrapes the stack, evaluates the kit's alert rules."""

from __future__ import annotations

from pathlib import Path

from mlops_kit.services.base import ServiceSpec

PROMETHEUS = ServiceSpec(
    name="prometheus",
    image_setting="MLOPS_KIT_PROMETHEUS_IMAGE",
    dockerfile="docker/prometheus/Dockerfile",
    healthcheck="promtool check healthy",
    description="Prometheus: scrapes the stack's metrics, evaluates the kit's alert rules",
)

#: The Compose overlay that adds it and Alertmanager (only with MLOPS_KIT_MONITORING=true).
MONITORING_OVERLAY = Path("docker/compose/monitoring.yaml")
#: Where its alert rules live in the kit's tree (and the promtool tests beside them).
RULES_DIR = Path("docker/prometheus/rules")
RULES_FILE = "mlops-kit.rules.yml"
RULES_TEST_FILE = "mlops-kit.rules.test.yml"
