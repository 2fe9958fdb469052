"""The minio artifact mode: build the MinIO image from source, then run the mode end to end.

Building `docker/minio/Dockerfile` downloads the Go toolchain, MinIO's source and its Go
modules. Where they can be reached (or mirrors are set: MLOPS_KIT_GO_DOWNLOAD_URL,
MLOPS_KIT_MINIO_GIT_URL, MLOPS_KIT_GOPROXY), the build must succeed and the stack must
work. Where they cannot (the kit's own CI machines: docs/testing.md), `mlops-kit build`
must fail in one line that names the image, the download that failed and the mirror
settings, and the end-to-end test is skipped with that line as its reason.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Stack, clean_env, fresh_stack, keeping_kit_images
from tests.integration.mlflow_data import digest, populate

PREFIX = "mio"
NAMES = [f"{PREFIX}-experiment-0", f"{PREFIX}-experiment-1"]
#: What a build that cannot reach its sources says (curl, git, the Go module download).
UNREACHABLE = ("Could not resolve host", "unable to access", "Failed to connect", "dial tcp", "i/o timeout")


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("minio"), prefix="mlkt-mio") as stack:
        stack.init("--artifact-store", "minio")
        yield stack


@pytest.fixture(scope="module")
def build(stack: Stack) -> subprocess.CompletedProcess[str]:
    # Generous: compiling MinIO takes minutes on two cores.
    with keeping_kit_images():
        return stack.kit("build", check=False, timeout=3600)


def test_minio_image_builds_or_says_which_download_failed(build: subprocess.CompletedProcess[str]) -> None:
    if build.returncode == 0:
        return
    lines = [line for line in build.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in build.stderr, build.stderr
    assert build.returncode == 5
    line = lines[0]
    assert line.startswith("error: building the minio image (docker/minio/Dockerfile) failed: "), line
    assert any(marker in line for marker in UNREACHABLE), f"the MinIO build failed for another reason: {line}"
    mirrors = ("MLOPS_KIT_GO_DOWNLOAD_URL", "MLOPS_KIT_MINIO_GIT_URL", "MLOPS_KIT_GOPROXY", "MLOPS_KIT_MINIO_IMAGE")
    assert all(setting in line for setting in mirrors), line


def test_minio_mode_end_to_end(stack: Stack, build: subprocess.CompletedProcess[str]) -> None:
    """Private bucket on an internal network, proxy-only transfers, backup and restore with an identical digest."""
    if build.returncode != 0:
        pytest.skip(f"MinIO could not be built here: {build.stderr.strip()[:300]}")
    stack.kit("up")
    assert stack.status()["healthy"] is True
    doctor = json.loads(stack.kit("doctor", "--json").stdout)
    store = next(c for c in doctor["checks"] if c["name"] == "artifact store (minio)")
    assert store["status"] == "ok", store
    # Nothing of MinIO is published, and its network has no route out.
    inspect = json.loads(
        subprocess.run(
            ["docker", "inspect", f"{stack.project}-minio-1"], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert not any(inspect["NetworkSettings"]["Ports"].values())
    info = stack.session(None).get(f"{stack.tracking_uri}/api/3.0/mlflow/server-info", timeout=30).json()
    assert info["multipart_uploads_enabled"] is False and info["multipart_downloads_enabled"] is False
    # MLflow's check warns when the bucket can be listed without keys; a private bucket gives no warning.
    checked = subprocess.run(
        ["docker", "compose", "run", "--rm", "--no-deps", "-T", "s3-check"],
        cwd=stack.directory,
        env=clean_env(None),
        capture_output=True,
        text=True,
        check=True,
    )
    verdict: dict[str, Any] = json.loads(checked.stdout.strip().splitlines()[-1])
    assert verdict["ok"] is True and verdict["warnings"] == [], verdict
    with stack.as_user("admin"):
        populate(stack.tracking_uri, PREFIX)
        before = digest(stack.tracking_uri, NAMES)
    stack.kit("backup")
    stack.kit("down", "--volumes", "--yes")
    stack.kit("restore", "--yes")
    with stack.as_user("admin"):
        assert digest(stack.tracking_uri, NAMES) == before
