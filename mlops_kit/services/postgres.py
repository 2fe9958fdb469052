"""PostgreSQL: the backend store (tracking and model registry metadata)."""

from __future__ import annotations

from mlops_kit.services.base import ServiceSpec

POSTGRES = ServiceSpec(
    name="postgres",
    image_setting="MLOPS_KIT_POSTGRES_IMAGE",
    dockerfile="docker/postgres/Dockerfile",
    healthcheck="postgres-healthcheck",
    description="PostgreSQL 17 backend store",
)

#: The application database and the role that owns it (the superuser has no
#: password and is reachable only through the container's local socket).
DATABASE = "mlflow"
ROLE = "mlflow"
