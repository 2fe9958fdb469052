"""Egress (with MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS): the allowlisting forward proxy of MLflow's webhooks."""

from __future__ import annotations

from pathlib import Path

from mlops_kit.services.base import ServiceSpec

EGRESS = ServiceSpec(
    name="egress",
    image_setting="MLOPS_KIT_EGRESS_IMAGE",
    dockerfile="docker/egress/Dockerfile",
    healthcheck="egress-healthcheck",
    description="Forward proxy (Squid) for MLflow's webhooks: the allowed hosts and ports only",
)

#: The Compose overlay that adds this service (only with MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS).
WEBHOOKS_OVERLAY = Path("docker/compose/webhooks.yaml")
