"""The kit's MLflow image with an older MLflow release (tests/integration/old_mlflow), built on demand.

The old release sits in its own venv (/opt/mlflow-old) in an image built FROM the kit's,
so it serves on the kit's socket with the kit's login; tests also run its client
(`/opt/mlflow-old/bin/python`) to write and read data the way that release does.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent

MLFLOW2 = "2.22.5"
MLFLOW2_IMAGE = f"mlops-kit/mlflow:{MLFLOW2}-kit-test"
#: Where the old release's Python is in its image.
OLD_PYTHON = "/opt/mlflow-old/bin/python"


def build_image(tag: str, folder: str, *build_args: str) -> str:
    """`docker build` tests/integration/FOLDER as ``tag`` (the kit's images must exist); returns ``tag``."""
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    subprocess.run(
        ["docker", "build", "--quiet", "--force-rm", *args, "-t", tag, str(HERE / folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return tag


def build_mlflow2_image() -> str:
    """The kit's image with MLflow 2.22, which serves with gunicorn (on the kit's socket)."""
    return build_image(
        MLFLOW2_IMAGE,
        "old_mlflow",
        f"OLD_MLFLOW={MLFLOW2}",
        "OLD_PINS=sqlalchemy<2.1 opentelemetry-api<1.43 opentelemetry-sdk<1.43",
        "GUNICORN_OPTS=--bind unix:/run/mlflow/mlflow.sock --forwarded-allow-ips=*",
    )
