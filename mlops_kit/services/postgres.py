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

#: The tracking database, the basic-auth user database and the role that owns
#: both (the superuser has no password: peer authentication only).
DATABASE = "mlflow"
AUTH_DATABASE = "mlflow_auth"
DATABASES: tuple[str, ...] = (DATABASE, AUTH_DATABASE)
ROLE = "mlflow"
#: PostgreSQL has no network interface: clients mount this folder (the
#: postgres-socket volume) and connect to the Unix socket in it.
SOCKET_DIR = "/run/postgresql"
