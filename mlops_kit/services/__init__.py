"""One module per service of the stack: its image, its healthcheck, its probes."""

from mlops_kit.services.backup import BACKUP
from mlops_kit.services.base import ServiceSpec
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.services.postgres import POSTGRES
from mlops_kit.services.proxy import PROXY

#: Every image the kit builds: the stack's services in start order, then job images.
SERVICES: tuple[ServiceSpec, ...] = (POSTGRES, MLFLOW, PROXY, BACKUP)
#: The services `up` starts and `status` reports.
STACK_SERVICES: tuple[ServiceSpec, ...] = tuple(s for s in SERVICES if s.long_running)

__all__ = ["BACKUP", "MLFLOW", "POSTGRES", "PROXY", "SERVICES", "STACK_SERVICES", "ServiceSpec"]
