"""Shared fixtures: a fresh copy of the kit in a temporary folder."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from mlops_kit.masking import clear_registered_secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
KIT_FILES = ("compose.yaml", ".env.example", "docker")


def load_image_module(name: str, relative_path: str) -> ModuleType:
    """Import a Python file that ships inside an image (under docker/) for a unit test."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_kit(target: Path) -> Path:
    """Copy what a deployment needs (compose file, example config, image sources) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in KIT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def kit_dir(tmp_path: Path) -> Path:
    """A fresh folder holding a copy of the kit, as an operator would have it."""
    return copy_kit(tmp_path / "kit")


@pytest.fixture(autouse=True)
def _forget_secrets() -> Iterator[None]:
    yield
    clear_registered_secrets()
