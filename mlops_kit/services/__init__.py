"""One module per service of the stack: its image, its healthcheck, its probes."""

from mlops_kit.services.base import ServiceSpec
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.services.postgres import POSTGRES

#: Every service of the stack, in start order.
SERVICES: tuple[ServiceSpec, ...] = (POSTGRES, MLFLOW)

__all__ = ["MLFLOW", "POSTGRES", "SERVICES", "ServiceSpec"]
