"""The MLflow release the kit's fast paths were verified against, and when they must stay off.

Both fast paths, kit-auth's (``mlops_kit_auth_app``) and the tracking store's
(``mlops_kit_store``), replace MLflow internals with code proven equal to them for one
release only: on any other release, or with workspaces on (where every row also carries its
workspace), MLflow's own code serves and the plugin says why in the log.
``MLOPS_KIT_FAST_PATHS=off`` turns both off too: the benchmark's stock server runs in the
kit's image with it, and an operator can rule the kit's code out of a problem with it.
"""

from __future__ import annotations

import os

VERIFIED_MLFLOW = "3.17.2"


def fallback_reason(mlflow_version: str) -> str:
    """Why MLflow's own code paths must serve in this process ("" when the fast paths may)."""
    if mlflow_version != VERIFIED_MLFLOW:
        return f"MLflow {mlflow_version} (verified: {VERIFIED_MLFLOW})"
    if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("true", "1"):
        return "workspaces are on"
    if os.environ.get("MLOPS_KIT_FAST_PATHS", "").lower() in ("off", "false", "0"):
        return "MLOPS_KIT_FAST_PATHS is off"
    return ""
