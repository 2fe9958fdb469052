"""The bundled Alertmanager (MLOPS_KIT_MONITORING=true): sends firing alerts to a webhook and/or email."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

ALERTMANAGER = ServiceSpec(
    name="alertmanager",
    image_setting="MLOPS_KIT_ALERTMANAGER_IMAGE",
    dockerfile="docker/alertmanager/Dockerfile",
    healthcheck="curl /-/ready",
    description="Alertmanager: the kit's alerts to a webhook (generic, Slack, Teams) and/or email",
)

#: Its address inside its own container (no port is published).
LOCAL_URL = "http://127.0.0.1:9093"
