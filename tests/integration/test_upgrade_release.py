"""From the previous kit release to this one, the way an operator does it.

The operator's folder is a checkout of the previous release (kit 0.5.0, which had no
`upgrade` command): its own CLI, compose.yaml and Dockerfiles `init` and `up` a stack
(building the 0.5.0 images), and a data scientist fills it. Then the checkout moves to
this release as `git pull` would (files the release removed go, changed ones change, the
operator's `.env`, secrets, certificates and backups stay), and this release's CLI runs
`mlops-kit upgrade`: every byte and every login is there afterwards, and the 0.5.0 images
are kept for the way back.

The previous release comes from this checkout's git history. A checkout without it (an
export, a shallow clone) cannot run this test: it says so and is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import uuid
from io import BytesIO
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, Stack, free_port
from tests.integration.mlflow_data import digest, populate

#: Kit 0.5.0 as it landed (tag v0.5.0): the security round two, before `upgrade` existed.
PREVIOUS_RELEASE = "0be66e4d9a508216333ca4e5cbfaa2fc183a9e01"
PREVIOUS_IMAGES = ("mlops-kit/mlflow:3.17.2-kit0.5.0", "mlops-kit/postgres:17-kit0.5.0")
EXPERIMENTS = ["Default", "rel-experiment-0", "rel-experiment-1"]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=False)


def _previous_release_tree() -> bytes:
    """The previous release's files as a tar stream, or a skip naming what is missing."""
    if shutil.which("git") is None or _git("cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}").returncode != 0:
        pytest.skip(
            f"this checkout has no git history with the previous release ({PREVIOUS_RELEASE[:7]}): "
            "clone the repository without --depth to run it"
        )
    return _git("archive", "--format=tar", PREVIOUS_RELEASE).stdout


def _pull_this_release(folder: Path) -> None:
    """Move ``folder`` from the previous release's files to this checkout's, as `git pull` would."""
    old_files = _git("ls-tree", "-r", "--name-only", PREVIOUS_RELEASE).stdout.decode().splitlines()
    for name in old_files:
        (folder / name).unlink(missing_ok=True)
    for name in _git("ls-files", "--cached").stdout.decode().splitlines():
        source = REPO_ROOT / name
        if source.is_file():  # a file deleted in the working tree is not part of this release
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)


@pytest.fixture
def previous_release_stack(kit_images: None, tmp_path: Path) -> Stack:
    """A checkout of the previous release, initialised and up, driven by its own CLI."""
    tree = _previous_release_tree()
    project = f"mlkt-rel-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / project
    folder.mkdir()
    with tarfile.open(fileobj=BytesIO(tree)) as archive:
        archive.extractall(folder, filter="data")
    # The README's first step on that checkout: among others it gives the image builds the
    # host's CAs (docker/extra-ca/, not in git), without which no build reaches PyPI here.
    subprocess.run([str(folder / "scripts" / "bootstrap-host.sh")], capture_output=True, check=True)
    # `python -m mlops_kit` in the folder imports the folder's own package: the release's CLI.
    return Stack(directory=folder, project=project, port=free_port())


def test_previous_release_checkout_upgrades_with_every_byte_and_login(
    previous_release_stack: Stack, fail_fast: None
) -> None:
    stack = previous_release_stack
    try:
        stack.init()
        stack.kit("up")
        assert stack.kit("--version").stdout.startswith("mlops-kit 0.5.0 ")
        with stack.as_user("admin"):
            experiment_ids = populate(stack.tracking_uri, prefix="rel")
        stack.kit("users", "add", "alice")
        alice = stack.password("alice")
        stack.kit("users", "grant", "alice", "READ", "experiment", experiment_ids[0])
        grants = json.loads(stack.kit("users", "permissions", "alice", "--json").stdout)
        with stack.as_user("admin"):
            before = digest(stack.tracking_uri, EXPERIMENTS)
        admin_password = stack.password("admin")

        _pull_this_release(stack.directory)
        assert not stack.kit("--version").stdout.startswith("mlops-kit 0.5.0 ")
        plan = json.loads(stack.kit("upgrade", "--dry-run", "--json").stdout)
        assert plan["kit"]["current"] == "0.5.0" and plan["kit"]["target"] != "0.5.0"
        assert plan["anything_to_do"] is True
        done = json.loads(stack.kit("upgrade", "--yes", "--json").stdout)
        assert done["upgraded"] is True

        # Every byte, every login and grant; the new release's images serve, the old ones are kept.
        with stack.as_user("admin"):
            assert digest(stack.tracking_uri, EXPERIMENTS) == before
        assert stack.password("admin") == admin_password
        assert json.loads(stack.kit("users", "permissions", "alice", "--json").stdout) == grants
        assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)
        env = stack.env_values()
        assert "kit0.5.0" not in env.get("MLOPS_KIT_MLFLOW_IMAGE", "kit0.5.0")
        running = {s["service"]: s for s in stack.status()["services"]}
        assert all(s["health"] == "healthy" for s in running.values()), running
        for image in PREVIOUS_IMAGES:
            kept = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
            assert kept.returncode == 0, f"{image} was not kept for the way back"
        assert stack.kit("check").returncode == 0
    finally:
        stack.destroy()
