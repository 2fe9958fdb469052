"""The HTTPS proxy (Caddy): the stack's only published service."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

PROXY = ServiceSpec(
    name="proxy",
    image_setting="MLOPS_KIT_PROXY_IMAGE",
    dockerfile="docker/proxy/Dockerfile",
    healthcheck="proxy-healthcheck",
    description="HTTPS front door (Caddy): TLS, HTTP->HTTPS redirect, streaming to MLflow",
)

#: The port the proxy listens on inside its container (published as MLOPS_KIT_PORT).
CONTAINER_PORT = 8443
