"""One module per service of the stack: its image, its healthcheck, its probes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_kit.services.alertmanager import ALERTMANAGER
from mlops_kit.services.backup import BACKUP
from mlops_kit.services.base import ServiceSpec
from mlops_kit.services.egress import EGRESS
from mlops_kit.services.metrics import METRICS
from mlops_kit.services.minio import MINIO
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.services.postgres import POSTGRES
from mlops_kit.services.prometheus import PROMETHEUS
from mlops_kit.services.proxy import PROXY

if TYPE_CHECKING:
    from mlops_kit.config.loader import KitConfig

#: Every image the kit builds in every mode: the stack's services in start order, then job images.
SERVICES: tuple[ServiceSpec, ...] = (POSTGRES, MLFLOW, PROXY, METRICS, BACKUP)
#: The services `up` starts and `status` reports in every mode.
STACK_SERVICES: tuple[ServiceSpec, ...] = tuple(s for s in SERVICES if s.long_running)


def kit_services(config: KitConfig) -> tuple[ServiceSpec, ...]:
    """The images this stack needs: its store's own services first (MinIO), the kit's, egress, monitoring."""
    services = (*config.store.extra_services, *SERVICES)
    if config.webhook_allowed_hosts:
        services = (*services, EGRESS)
    if config.monitoring_on:
        services = (*services, PROMETHEUS, ALERTMANAGER)
    return services


def stack_services(config: KitConfig) -> tuple[ServiceSpec, ...]:
    """The long-running services of this stack's mode, in start order."""
    return tuple(s for s in kit_services(config) if s.long_running)


__all__ = [
    "ALERTMANAGER",
    "BACKUP",
    "EGRESS",
    "METRICS",
    "MINIO",
    "MLFLOW",
    "POSTGRES",
    "PROMETHEUS",
    "PROXY",
    "SERVICES",
    "STACK_SERVICES",
    "ServiceSpec",
    "kit_services",
    "stack_services",
]
