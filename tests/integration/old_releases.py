"""Test-only images of older releases: the kit's MLflow image with an older MLflow
(tests/integration/old_mlflow), one whose migration fails (broken_migration), and the kit's
PostgreSQL image on PostgreSQL 15. Each is built on demand, and ahead of time.

The old release sits in its own venv (/opt/mlflow-old) in an image built FROM the kit's,
so it serves on the kit's socket with the kit's login; tests also run its client
(`/opt/mlflow-old/bin/python`) to write and read data the way that release does.

Ahead of time: building them takes minutes (a pip install of a whole MLflow release, a
debootstrap of Debian bookworm), mostly waiting on the network and the disk. So once the
kit's images are built, :func:`start_background_builds` builds the ones the session's tests
need, one after another in a background thread, their RUN steps at a low CPU weight (the
tests' containers come first). A test's fixture then waits for that build and runs the
same `docker build` again, which the cache answers in seconds (or, if the background build
failed, fails in the fixture with the build's own error).

With two test workers (pytest-xdist), only the first builds ahead; every build of a tag
holds that tag's lock file (:func:`build_lock`), so a worker that needs an image the other
is building waits for it, then gets it from the cache.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

from filelock import FileLock

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent

MLFLOW2 = "2.22.5"
MLFLOW2_IMAGE = f"mlops-kit/mlflow:{MLFLOW2}-kit-test"
OLD_MLFLOW3 = "3.10.1"
OLD_MLFLOW3_IMAGE = f"mlops-kit/mlflow:{OLD_MLFLOW3}-kit-test"
BROKEN_MIGRATION_IMAGE = "mlops-kit/mlflow:3.17.2-broken-migration-kit-test"
PG15_IMAGE = "mlops-kit/postgres:15-kit-test"
#: Where the old release's Python is in its image.
OLD_PYTHON = "/opt/mlflow-old/bin/python"
#: `docker build --cpu-shares` of a background build (a container's default is 1024).
BACKGROUND_CPU_SHARES = "64"
#: The lock files of image builds, shared by every test process on this host (one engine).
BUILD_LOCKS = Path(tempfile.gettempdir()) / "mlops-kit-test-builds"

_BACKGROUND: dict[str, Future[str]] = {}
_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-image-build")


def build_lock(name: str) -> FileLock:
    """The lock every test process holds while it builds ``name`` (an image tag, or a set).

    Two processes building the same Dockerfile at once would each run every step; with the
    lock the second waits, and its build is answered by the cache."""
    BUILD_LOCKS.mkdir(parents=True, exist_ok=True)
    return FileLock(BUILD_LOCKS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock")


def _docker_build(tag: str, context: Path, build_args: Iterable[str], *, background: bool, **options: str) -> str:
    args = [arg for pair in build_args for arg in ("--build-arg", pair)]
    args += [arg for flag, value in options.items() for arg in (f"--{flag}", value)]
    if background:
        args += ["--cpu-shares", BACKGROUND_CPU_SHARES]
    else:
        _wait_for_background(tag)
    with build_lock(tag):
        subprocess.run(
            ["docker", "build", "--quiet", "--force-rm", *args, "-t", tag, str(context)],
            check=True,
            capture_output=True,
            text=True,
        )
    return tag


def _wait_for_background(tag: str) -> None:
    future = _BACKGROUND.get(tag)
    if future is None:
        return
    # A failed background build is built again by the fixture, which reports its error.
    with contextlib.suppress(Exception):
        future.result(timeout=3600)


def build_image(tag: str, folder: str, *build_args: str, background: bool = False) -> str:
    """`docker build` tests/integration/FOLDER as ``tag`` (the kit's images must exist); returns ``tag``."""
    return _docker_build(tag, HERE / folder, build_args, background=background)


def build_mlflow2_image(background: bool = False) -> str:
    """The kit's image with MLflow 2.22, which serves with gunicorn (on the kit's socket)."""
    return build_image(
        MLFLOW2_IMAGE,
        "old_mlflow",
        f"OLD_MLFLOW={MLFLOW2}",
        "OLD_PINS=sqlalchemy<2.1 opentelemetry-api<1.43 opentelemetry-sdk<1.43",
        "GUNICORN_OPTS=--bind unix:/run/mlflow/mlflow.sock --forwarded-allow-ips=*",
        background=background,
    )


def build_old_mlflow3_image(background: bool = False) -> str:
    """The kit's image with MLflow 3.10.1 (an older 3.x schema)."""
    return build_image(OLD_MLFLOW3_IMAGE, "old_mlflow", f"OLD_MLFLOW={OLD_MLFLOW3}", background=background)


def build_broken_migration_image(background: bool = False) -> str:
    """The kit's image whose schema migration fails, as a release with a broken migration would."""
    return build_image(BROKEN_MIGRATION_IMAGE, "broken_migration", background=background)


def build_pg15_image(background: bool = False) -> str:
    """The kit's PostgreSQL image built FROM Debian bookworm, which carries PostgreSQL 15.

    No registry: the bookworm base is made with debootstrap by the kit's own bootstrap
    script (the same way as the trixie base every kit image builds FROM).
    """
    if not background:
        _wait_for_background(PG15_IMAGE)
    bootstrap = [str(REPO_ROOT / "scripts" / "bootstrap-host.sh")]
    with build_lock("debian:bookworm-slim"):
        subprocess.run(
            ["nice", "-n", "19", "ionice", "-c", "3", *bootstrap] if background else bootstrap,
            env={**os.environ, "MLOPS_KIT_BASE_IMAGE": "debian:bookworm-slim", "MLOPS_KIT_BASE_SUITE": "bookworm"},
            check=True,
            capture_output=True,
            text=True,
        )
    return _docker_build(
        PG15_IMAGE,
        REPO_ROOT / "docker",
        ["BASE_IMAGE=debian:bookworm-slim", "POSTGRES_MAJOR=15"],
        background=background,
        file=str(REPO_ROOT / "docker" / "postgres" / "Dockerfile"),
    )


#: Each image, the test modules that use it, and its build (in the order the suite needs them).
BUILDS: list[tuple[str, tuple[str, ...], Callable[..., str]]] = [
    (MLFLOW2_IMAGE, ("test_import", "test_upgrade"), build_mlflow2_image),
    (OLD_MLFLOW3_IMAGE, ("test_restore_older_mlflow", "test_upgrade"), build_old_mlflow3_image),
    (BROKEN_MIGRATION_IMAGE, ("test_upgrade",), build_broken_migration_image),
    (PG15_IMAGE, ("test_upgrade",), build_pg15_image),
]


def start_background_builds(modules: Iterable[str]) -> list[str]:
    """Start building, in the background, the images these test modules use; returns their tags.

    ``MLOPS_KIT_TEST_PREBUILD=0`` turns it off (each image is then built when first needed).
    Of several pytest-xdist workers only the first (gw0) builds ahead: the others would only
    wait on its locks."""
    if os.environ.get("MLOPS_KIT_TEST_PREBUILD", "1") == "0":
        return []
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return []
    wanted = set(modules)
    started = []
    for tag, users, build in BUILDS:
        if tag not in _BACKGROUND and wanted.intersection(users):
            _BACKGROUND[tag] = _POOL.submit(partial(build, background=True))
            started.append(tag)
    return started


def stop_background_builds() -> None:
    """Drop the builds not started yet (a session that ends early waits only for the one running)."""
    _POOL.shutdown(wait=False, cancel_futures=True)
