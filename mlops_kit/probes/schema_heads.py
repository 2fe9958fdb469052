"""The schema revisions an MLflow image migrates to, and the migrations a database still needs.

Runs in a throwaway container of the MLflow image (``python - ARGS_JSON`` with this file
on stdin); it reads MLflow's own migration scripts, so the answer is that image's. It
touches no database. ARGS_JSON (optional) names the databases' current revisions:
{"tracking": "...", "auth": "..."}. Prints one JSON line: mlflow_version, tracking and
auth (lists of head revisions; auth is empty for releases whose user database had no
migrations), and tracking_pending / auth_pending (the revisions between the current one
and the heads, or null when the current one is not in this image's history).
"""

from __future__ import annotations

import json
import os
import sys

import mlflow
from alembic.config import Config
from alembic.script import ScriptDirectory


def script(folder: str) -> ScriptDirectory | None:
    if not os.path.isdir(folder):
        return None
    config = Config()
    config.set_main_option("script_location", folder)
    return ScriptDirectory.from_config(config)


def pending(directory: ScriptDirectory | None, current: str | None) -> list[str] | None:
    if directory is None:
        return []
    try:
        return [r.revision for r in directory.iterate_revisions("heads", current)]
    except Exception:  # a revision this release does not know (a newer database)
        return None


current = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
root = os.path.dirname(mlflow.__file__)
tracking = script(os.path.join(root, "store", "db_migrations"))
auth = script(os.path.join(root, "server", "auth", "db", "migrations"))
print(
    json.dumps(
        {
            "mlflow_version": mlflow.__version__,
            "tracking": sorted(tracking.get_heads()) if tracking else [],
            "auth": sorted(auth.get_heads()) if auth else [],
            "tracking_pending": pending(tracking, current.get("tracking")),
            "auth_pending": pending(auth, current.get("auth")),
        }
    )
)
