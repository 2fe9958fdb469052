"""From earlier kit releases to this one, the way an operator does it.

The operator's folder is a checkout of an earlier release (the previous one, 0.10.0, back to
0.5.0, which had no `upgrade` command yet): its own CLI, compose.yaml and Dockerfiles
`init` and `up` a stack (building that release's images), and a data scientist fills it.
Then the checkout moves to this release as `git pull` would (files the release removed
go, changed ones change, the operator's `.env`, secrets, certificates and backups stay),
and this release's CLI runs `mlops-kit upgrade`: every byte and every login is there
afterwards, and the old release's images are kept for the way back.

The releases come from this checkout's git history. A checkout without it (an export, a
shallow clone) cannot run these tests: they say so and are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from io import BytesIO
from pathlib import Path

import pytest

from tests.harness import REPO_ROOT, Stack, clean_env, free_port
from tests.integration.mlflow_data import digest, populate

#: Earlier releases as they landed (tags v0.5.0 ... v0.10.0): version -> commit.
RELEASES = {
    # The security round two, before `upgrade` existed.
    "0.5.0": "0be66e4d9a508216333ca4e5cbfaa2fc183a9e01",
    # The reshape and `upgrade`.
    "0.6.0": "a043df31e9a9c151743c4a22900f82e229b43206",
    # MLflow 2.x upgrades and the watchdog.
    "0.7.0": "ccd10e6ae6e560c22d7005319a5115df13df21b1",
    # gc and retention (to 0.9.0: the metrics service and its secret).
    "0.8.0": "eceee26766c84114994e579fd79a8eaadfcf9d88",
    # Metrics and monitoring (to 0.10.0: the MLflow image's import job).
    "0.9.0": "4b1ab5402273668c80480972f6786ebe107e9bf8",
    # Import; the previous release (to 0.11.0: the kit-auth app, a new --app-name).
    "0.10.0": "5ba508b3f33a27f9ffff37912626eb1d08947401",
}
EXPERIMENTS = ["Default", "rel-experiment-0", "rel-experiment-1"]


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=False)


def _release_tree(commit: str) -> bytes:
    """The release's files as a tar stream, or a skip naming what is missing."""
    if shutil.which("git") is None or _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        pytest.skip(
            f"this checkout has no git history with the release {commit[:7]}: "
            "clone the repository without --depth to run it"
        )
    archive = _git("archive", "--format=tar", commit)
    if archive.returncode != 0 or not archive.stdout:
        pytest.skip(f"git archive {commit[:7]} failed in this checkout: {archive.stderr.decode().strip()}")
    return archive.stdout


def _pull_this_release(folder: Path, commit: str) -> None:
    """Move ``folder`` from the release's files to this checkout's, as `git pull` would.

    The release's files go (and folders they leave empty); this checkout's files (tracked,
    or new and not ignored) come; what git ignores (`.env`, secrets/, tls/, backups/) stays.
    """
    old_files = _git("ls-tree", "-r", "-z", "--name-only", commit).stdout.decode().split("\0")
    for name in filter(None, old_files):
        (folder / name).unlink(missing_ok=True)
        for parent in (folder / name).parents:
            if parent == folder or any(parent.iterdir()):
                break
            parent.rmdir()
    new_files = _git("ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout.decode().split("\0")
    for name in filter(None, new_files):
        source, target = REPO_ROOT / name, folder / name
        if not source.is_file():  # deleted in the working tree: not part of this release
            continue
        if target.is_dir():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


#: The upgrade CI runs: from the previous release. Each earlier one was run in CI while it was
#: the previous one; all six take about 24 minutes of CI's 90 (MLOPS_KIT_TEST_ALL_RELEASES=1
#: runs every one, 0.5.0 before `upgrade` existed included).
TESTED = sorted(RELEASES) if os.environ.get("MLOPS_KIT_TEST_ALL_RELEASES") else ["0.10.0"]


@pytest.fixture(params=TESTED)
def old_release(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Stack]:
    """(version, a checkout of that release), not initialised yet; driven by its own CLI."""
    version = str(request.param)
    tree = _release_tree(RELEASES[version])  # skips before anything is built when there is no history
    request.getfixturevalue("kit_images")
    project = f"mlkt-rel-{uuid.uuid4().hex[:8]}"
    folder = tmp_path / project
    folder.mkdir()
    with tarfile.open(fileobj=BytesIO(tree)) as archive:
        # The "data" filter where this Python has it (3.11.4+, 3.10.12+): no links out of the folder.
        options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(folder, **options)  # type: ignore[arg-type]
    # The README's first step on that checkout: among others it gives the image builds the
    # host's CAs (docker/extra-ca/, not in git), without which no build reaches PyPI here.
    subprocess.run([str(folder / "scripts" / "bootstrap-host.sh")], capture_output=True, check=True)
    # `python -m mlops_kit` in the folder imports the folder's own package: the release's CLI.
    return version, Stack(directory=folder, project=project, port=free_port())


def test_an_earlier_release_checkout_upgrades_with_every_byte_and_login(
    old_release: tuple[str, Stack], fail_fast: None
) -> None:
    version, stack = old_release
    try:
        stack.init()
        stack.kit("up")
        assert stack.kit("--version").stdout.startswith(f"mlops-kit {version} ")
        with stack.as_user("admin"):
            experiment_ids = populate(stack.tracking_uri, prefix="rel")
        stack.kit("users", "add", "alice")
        alice = stack.password("alice")
        stack.kit("users", "grant", "alice", "READ", "experiment", experiment_ids[0])
        grants = json.loads(stack.kit("users", "permissions", "alice", "--json").stdout)
        with stack.as_user("admin"):
            before = digest(stack.tracking_uri, EXPERIMENTS)
        admin_password = stack.password("admin")

        _pull_this_release(stack.directory, RELEASES[version])
        assert not stack.kit("--version").stdout.startswith(f"mlops-kit {version} ")
        plan = json.loads(stack.kit("upgrade", "--dry-run", "--json").stdout)
        assert plan["kit"]["current"] == version and plan["kit"]["target"] != version
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
        assert f"kit{version}" not in env.get("MLOPS_KIT_MLFLOW_IMAGE", f"kit{version}")
        running = {s["service"]: s for s in stack.status()["services"]}
        assert all(s["health"] == "healthy" for s in running.values()), running
        # Kit 0.9.0's metrics service runs, and its PostgreSQL role exists on the old data.
        assert "metrics" in running
        scraper = stack.session(None)
        scraper.auth = ("metrics", (stack.directory / "secrets" / "metrics_password").read_text().strip())
        metrics = scraper.get(f"{stack.tracking_uri}/metrics", timeout=30).text
        assert 'mlops_kit_source_up{source="database"} 1.0' in metrics
        assert 'mlops_kit_source_up{source="postgres_exporter"} 1.0' in metrics
        for image in (f"mlops-kit/mlflow:3.17.2-kit{version}", f"mlops-kit/postgres:17-kit{version}"):
            kept = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
            assert kept.returncode == 0, f"{image} was not kept for the way back"
        assert stack.kit("check").returncode == 0
        # Kit 0.10.0's import job is in the MLflow image that serves now.
        small = stack.directory.parent / "small-store"
        populated = subprocess.run(
            [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), "populate-small", "rel-imp"],
            env=clean_env({"MLFLOW_TRACKING_URI": (small / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}),
            cwd=stack.directory.parent, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert populated.returncode == 0, populated.stderr[-3000:]
        plan = json.loads(stack.kit("import", str(small / "mlruns"), "--dry-run", "--merge", "--json").stdout)
        assert plan["planned_rows"]["runs"] == 2 and plan["rows"] == {}
    finally:
        stack.destroy()
