"""MLflow: tracking server, model registry and artifact proxy."""

from __future__ import annotations

import requests

from mlops_kit.services.base import ServiceSpec

MLFLOW = ServiceSpec(
    name="mlflow",
    image_setting="MLOPS_KIT_MLFLOW_IMAGE",
    dockerfile="docker/mlflow/Dockerfile",
    healthcheck="mlflow-healthcheck",
    description="MLflow tracking server, model registry and artifact proxy",
)

PROBE_TIMEOUT_SECONDS = 5.0
#: As in compose.yaml: no password (libpq reads it from the entrypoint's .pgpass).
BACKEND_STORE_URI = "postgresql+psycopg2://mlflow@postgres:5432/mlflow"


def server_version(base_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """The MLflow version the server reports on /version, or None if it does not answer."""
    try:
        response = requests.get(f"{base_url}/version", timeout=timeout)
    except requests.RequestException:
        return None
    return response.text.strip() if response.ok else None


def is_ready(base_url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """True when the server answers /health and can read the Default experiment (database)."""
    try:
        health = requests.get(f"{base_url}/health", timeout=timeout)
        default = requests.get(
            f"{base_url}/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"}, timeout=timeout
        )
    except requests.RequestException:
        return False
    return health.ok and default.ok
