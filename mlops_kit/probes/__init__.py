"""Scripts the kit runs inside its containers (stdin to ``python -``): they need the image's packages.

Each script is standalone (standard library, psycopg2, and for some MLflow itself): it
takes one JSON argument and prints one JSON line.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from mlops_kit.engine.compose import ComposeProject
from mlops_kit.runner import CommandResult
from mlops_kit.services.mlflow import MLFLOW
from mlops_kit.services.postgres import DATABASE, ROLE, SOCKET_DIR

#: libpq's connection to the tracking database as the server's own role, from inside the
#: MLflow container (its socket mount; the password from the entrypoint's PGPASSFILE).
TRACKING_DSN = f"host={SOCKET_DIR} dbname={DATABASE} user={ROLE}"


def probe_script(name: str) -> str:
    """The source of ``mlops_kit/probes/<name>.py``."""
    return resources.files(__name__).joinpath(f"{name}.py").read_text()


def run_in_mlflow(
    project: ComposeProject,
    script: str,
    arguments: Sequence[str],
    *,
    changes_state: bool = False,
    check: bool = True,
) -> CommandResult:
    """Run ``script`` with ``arguments`` in the stack's MLflow container, as the mlflow user."""
    return project.run(
        ["exec", "-T", "--user", "mlflow", MLFLOW.name, "python", "-", *arguments],
        input_text=script,
        changes_state=changes_state,
        check=check,
        timeout=3600,
    )
