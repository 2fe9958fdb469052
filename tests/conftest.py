"""Shared fixtures: a fresh copy of the kit in a temporary folder."""

from __future__ import annotations

import importlib.util
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mlops_kit.masking import clear_registered_secrets

# Re-exported: the unit tests import them from here (the harness is their one home).
from tests.harness import KIT_FILES, REPO_ROOT, copy_kit

__all__ = ["KIT_FILES", "REPO_ROOT", "copy_kit", "load_image_module"]


def load_image_module(name: str, relative_path: str) -> ModuleType:
    """Import a Python file that ships inside an image (under docker/) for a unit test."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the class is made.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_plugin_module(name: str) -> ModuleType:
    """A module of the MLflow image's plugin folder, which the image installs side by side in site-packages."""
    plugin = str(REPO_ROOT / "docker" / "mlflow" / "plugin")
    sys.path.insert(0, plugin)
    try:
        return load_image_module(name, f"docker/mlflow/plugin/{name}.py")
    finally:
        sys.path.remove(plugin)


@pytest.fixture
def kit_dir(tmp_path: Path) -> Path:
    """A fresh folder holding a copy of the kit, as an operator would have it."""
    return copy_kit(tmp_path / "kit")


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_registered_secrets()


# ---- the last lines of a run: where the time went, and what failed ------------------------
# CI keeps only the tail of the output, and pytest's own summary there is the long assertion
# diff of the last failure: these lines come after everything else, one per module or test.
_MODULE_SECONDS: dict[str, float] = defaultdict(float)
_TEST_SECONDS: dict[str, float] = defaultdict(float)
_FAILED: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _MODULE_SECONDS[report.nodeid.split("::")[0]] += report.duration
    _TEST_SECONDS[report.nodeid] += report.duration
    if report.failed and report.nodeid not in _FAILED:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)
        first = message.strip().splitlines()[0] if message.strip() else ""
        _FAILED[report.nodeid] = f"{report.when}: {first[:240]}"


def pytest_unconfigure(config: pytest.Config) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    # A pytest-xdist worker's lines would go nowhere: the controller gets every report.
    if reporter is None or not _MODULE_SECONDS or hasattr(config, "workerinput"):
        return
    slowest = sorted(_MODULE_SECONDS.items(), key=lambda item: -item[1])[:25]
    reporter.write_line(
        "[tests] seconds per module (setup, call and teardown): "
        + ", ".join(f"{Path(module).stem} {seconds:.0f}" for module, seconds in slowest)
    )
    longest = sorted(_TEST_SECONDS.items(), key=lambda item: -item[1])[:15]
    reporter.write_line(
        "[tests] longest tests (with their fixtures): "
        + ", ".join(f"{Path(nodeid.split('::')[0]).stem}::{nodeid.split('::')[-1]} {s:.0f}" for nodeid, s in longest)
    )
    for nodeid, why in _FAILED.items():
        reporter.write_line(f"[tests] failed: {nodeid} ({why})")


# ---- the order of modules: the longest first ---------------------------------------------
# With two workers (scripts/run-tests.sh: pytest-xdist, one module at a time each), a long
# module started last would run alone at the end. These are the longest, from the seconds
# per module of the last full runs; the old-release modules come after a long one, so the
# images they need are built in the background meanwhile. Compose builds (plain compose,
# MinIO) come last: they relabel the kit's images for a moment, and no image is being built
# FROM them by then.
FIRST_MODULES = (
    "test_s3_store",
    "test_import",
    "test_backup_restore",
    "test_upgrade",
    "test_workflow",
    "test_self_heal",
    "test_upgrade_release",
    "test_monitoring",
    "test_chaos",
    "test_security",
    "test_artifact_bind",
    "test_attacks",
    "test_bad_input",
    "test_gc",
    "test_restore_older_mlflow",
    "test_webhooks",
)
LAST_MODULES = ("test_plain_compose", "test_minio_store")


def _module_rank(item: pytest.Item) -> float:
    path = Path(str(item.fspath))
    if "integration" not in path.parts:
        # Right after the first module: the other worker runs the unit tests while the
        # first builds the kit's images (every integration module waits for them).
        return 0.5
    if path.stem in FIRST_MODULES:
        return FIRST_MODULES.index(path.stem)
    return len(FIRST_MODULES) + (2 if path.stem in LAST_MODULES else 1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # sorted() is stable: a module's tests keep their order, and every worker sees the same list.
    items[:] = sorted(items, key=_module_rank)
