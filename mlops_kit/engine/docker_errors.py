"""One classifier for what the docker CLI says when it fails.

`docker`, `docker compose` and `docker image inspect` all report an engine that is
down, a socket they may not open and a port that is taken in their own words; the
kit recognises each in this one place and turns it into a typed error with its fix.
"""

from __future__ import annotations

import re

from mlops_kit.errors import CommandError, EngineUnavailableError, PreflightError

# Docker 29's CLI says "failed to connect to the docker API at unix://..." instead.
ENGINE_DOWN_MARKERS = (
    "Cannot connect to the Docker daemon",
    "Is the docker daemon running",
    "error during connect",
    "failed to connect to the docker API",
)
_PERMISSION_DENIED = "permission denied"
_PORT_TAKEN = re.compile(r"(?:address already in use|port is already allocated)", re.IGNORECASE)
START_ENGINE_HINT = "start it: sudo scripts/bootstrap-host.sh (or: systemctl start docker)"
PERMISSION_HINT = "run as root, or add your user to the docker group"

#: What a failure means: the engine is down, the socket is not ours, a port is taken, or other.
ENGINE_DOWN, NO_PERMISSION, PORT_TAKEN, OTHER = "engine-down", "no-permission", "port-taken", "other"


def classify(stdout: str, stderr: str) -> str:
    """What a failed docker command's output means (one of the constants above)."""
    text = f"{stderr}\n{stdout}"
    if any(marker in text for marker in ENGINE_DOWN_MARKERS):
        return ENGINE_DOWN
    # Only the socket's refusal ("... to connect to the Docker daemon socket" before Docker 29,
    # "... to connect to the docker API" since): a job's own "permission denied" is not the engine's.
    lowered = stderr.lower()
    if _PERMISSION_DENIED in lowered and ("docker daemon socket" in lowered or "docker api" in lowered):
        return NO_PERMISSION
    if _PORT_TAKEN.search(stderr):
        return PORT_TAKEN
    return OTHER


def raise_if_engine_unusable(error: CommandError) -> None:
    """Turn "no engine" or "no access to the engine" into EngineUnavailableError; anything else returns."""
    kind = classify(error.stdout, error.stderr)
    if kind == ENGINE_DOWN:
        raise EngineUnavailableError("the Docker engine is not reachable", hint=START_ENGINE_HINT) from error
    if kind == NO_PERMISSION:
        raise EngineUnavailableError("permission denied on the Docker socket", hint=PERMISSION_HINT) from error


def raise_if_port_taken(error: CommandError, address: str, port: int) -> None:
    """Turn "port already in use" into a PreflightError naming the port and what to do."""
    if classify(error.stdout, error.stderr) == PORT_TAKEN:
        raise PreflightError(
            f"port {port} on {address} is already in use",
            hint="stop what uses it, or pick another port: mlops-kit init --force --port PORT (MLOPS_KIT_PORT)",
        ) from error
