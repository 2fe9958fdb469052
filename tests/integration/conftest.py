"""Integration fixtures: real Docker engine, real images, one stack per fixture.

The stacks, the CLI runner and the other helpers live in tests/harness.py (the
benchmarks use them too); this file only turns them into fixtures. Nothing here
mocks Docker, MLflow or PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness import LIVE_STACKS, RemoteHost, Stack, new_stack, remote_host_link
from tests.integration.old_releases import BUILD_LOCKS, build_lock, start_background_builds, stop_background_builds

#: This test run, the same in every pytest-xdist worker of it (one id per process without xdist).
TEST_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", uuid.uuid4().hex)


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_background_builds()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report ends with the state of every stack it used (for CI, where
    the stack is gone by the time anyone looks)."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for stack in list(LIVE_STACKS.values()):
        if not stack.containers():
            continue
        try:
            report.sections.append((f"stack {stack.project}", stack.diagnostics()))
        except Exception as exc:  # diagnostics must never hide the failure itself
            report.sections.append((f"stack {stack.project}", f"no diagnostics: {exc!r}"))


@pytest.fixture(autouse=True)
def no_tracking_uri_from_an_earlier_test() -> None:
    """MLflow's process-wide tracking URI (mlflow.set_tracking_uri) outlives the test that set
    it and wins over the environment: unset, it cannot send this test's calls to a stack
    that is gone."""
    import mlflow

    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The suite needs a real engine: fail loudly (never skip) when there is none."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not installed: run scripts/bootstrap-host.sh first")
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"no Docker engine answers ({result.stderr.strip()}): run scripts/bootstrap-host.sh first")


@pytest.fixture(scope="session")
def kit_images(docker_engine: None, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    """Build the images from this checkout's Dockerfiles once per test run (cached layers: fast),
    then start building the older releases' test images the session's tests will need.

    Once per run, not per worker: a Compose build labels the images with its project, so a
    second worker's build (all cached) would still give every kit image a new id, and each
    test image built FROM them would miss the cache. The first worker builds; the other
    waits on the lock and finds the run's mark."""
    built = BUILD_LOCKS / f"kit-images-{TEST_RUN}.built"
    with build_lock("kit-images"):
        if not built.exists():
            builder = new_stack(tmp_path_factory.mktemp("build"), prefix="mlkt-build")
            # With monitoring: its images (Prometheus, Alertmanager) are built from this checkout too.
            builder.init("--monitoring")
            builder.kit("build")
            built.touch()
    start_background_builds({Path(str(item.fspath)).stem for item in request.session.items})


@pytest.fixture
def stack_factory(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Make fresh stacks; every one is torn down (with its volumes) at the end of the test."""
    made: list[Stack] = []

    def make(prefix: str = "mlkt") -> Stack:
        stack = new_stack(tmp_path_factory.mktemp("stack"), prefix)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.destroy()


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow client in this process gives up at once instead of retrying for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


@pytest.fixture(scope="module")
def remote_host() -> Iterator[RemoteHost]:
    """A remote host for this test module; removed (with its link) afterwards."""
    with remote_host_link() as host:
        yield host
