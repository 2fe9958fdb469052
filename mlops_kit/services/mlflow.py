"""MLflow: tracking server, model registry and artifact proxy (behind the HTTPS proxy, with logins)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from mlops_kit.services.base import ServiceSpec
from mlops_kit.services.postgres import AUTH_DATABASE, DATABASE, ROLE, SOCKET_DIR

MLFLOW = ServiceSpec(
    name="mlflow",
    image_setting="MLOPS_KIT_MLFLOW_IMAGE",
    dockerfile="docker/mlflow/Dockerfile",
    healthcheck="mlflow-healthcheck",
    description="MLflow tracking server, model registry and artifact proxy",
)

PROBE_TIMEOUT_SECONDS = 5.0
#: As in compose.yaml: no password (libpq reads it from the entrypoint's .pgpass),
#: host= the PostgreSQL socket folder.
BACKEND_STORE_URI = f"postgresql+psycopg2://{ROLE}@/{DATABASE}?host={SOCKET_DIR}"
AUTH_DATABASE_URI = f"postgresql+psycopg2://{ROLE}@/{AUTH_DATABASE}?host={SOCKET_DIR}"
#: One-shot job in the MLflow image: make MLOPS_KIT_ADMIN_USER an admin with the
#: password in secrets/mlflow_admin_password (after a restore; lost password).
RESET_ADMIN = "mlflow-reset-admin"
#: One-shot job in the MLflow image: retention and garbage collection (docker/mlflow/gc.py).
GC_JOB = "mlflow-gc"
#: One-shot job in the MLflow image: import another MLflow's data (docker/mlflow/importer.py).
IMPORT_JOB = "mlflow-import"
#: The MLflow image's service user (docker/mlflow/Dockerfile): a job's scratch folder belongs to it.
MLFLOW_UID = 10001
#: The secret file of MLflow's key-encryption passphrase (AI gateway and webhook
#: secrets in the database); every backup set carries a copy of it.
KEK_FILE = "mlflow_kek_passphrase"
#: The variables the MLflow client reads (and `client-env` prints).
CLIENT_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
)


@dataclass(frozen=True)
class ServerAccess:
    """How to reach MLflow: the proxy's URL, the CA to verify it with, and a login."""

    base_url: str
    #: CA file to verify the proxy's certificate with, or True for the system's CAs.
    verify: str | bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def session(self) -> requests.Session:
        session = requests.Session()
        # Not the environment's: REQUESTS_CA_BUNDLE would replace this CA, and an
        # HTTPS_PROXY meant for the internet must not carry calls to this host.
        session.trust_env = False
        session.verify = self.verify
        if self.username and self.password is not None:
            session.auth = (self.username, self.password)
        return session

    def client_variables(self) -> dict[str, str]:
        """The MLflow client's variables for this access (``CLIENT_VARIABLES``)."""
        variables = {"MLFLOW_TRACKING_URI": self.base_url}
        if self.username and self.password is not None:
            variables["MLFLOW_TRACKING_USERNAME"] = self.username
            variables["MLFLOW_TRACKING_PASSWORD"] = self.password
        if isinstance(self.verify, str):
            variables["MLFLOW_TRACKING_SERVER_CERT_PATH"] = self.verify
        return variables

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", PROBE_TIMEOUT_SECONDS)
        with self.session() as session:
            return session.request(method, f"{self.base_url}{path}", **kwargs)


@contextmanager
def patched_environ(values: Mapping[str, str], unset: Iterable[str] = ()) -> Iterator[None]:
    """Set ``values`` (and remove ``unset``) in this process's environment, restoring both afterwards."""
    names = {*values, *unset}
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in unset:
            os.environ.pop(name, None)
        os.environ.update(values)
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def as_mlflow_client(access: ServerAccess) -> Iterator[None]:
    """Point this process's MLflow client at ``access`` (its variables), restoring them afterwards.

    The MLflow client reads its login and CA from the environment on every call,
    so this is how in-process checks (smoke check, restore drill) log in. A tracking URI
    set earlier with ``mlflow.set_tracking_uri`` would win over the environment (and send
    the calls to another server): the block uses ``access``'s, and the old one comes back.
    """
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with (
        patched_environ(access.client_variables(), unset=CLIENT_VARIABLES),
        tracking_utils._use_tracking_uri(access.base_url),
    ):
        yield


def server_version(access: ServerAccess, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """The MLflow version the server reports on /version, or None if it does not answer."""
    try:
        response = access.request("GET", "/version", timeout=timeout)
    except requests.RequestException:
        return None
    return response.text.strip() if response.ok else None


def is_ready(access: ServerAccess, timeout: float = PROBE_TIMEOUT_SECONDS) -> bool:
    """True when /health answers through the proxy and the user can read the Default experiment."""
    try:
        health = access.request("GET", "/health", timeout=timeout)
        default = access.request(
            "GET", "/api/2.0/mlflow/experiments/get", params={"experiment_id": "0"}, timeout=timeout
        )
    except requests.RequestException:
        return False
    return health.ok and default.ok
