"""The kit's tracking store plugin (docker/mlflow/plugin/mlops_kit_store.py): what needs no database.

Its equivalence with MLflow's own store is tests/integration/test_store_equivalence.py
(two PostgreSQL servers, every row and every error compared).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_plugin_module


@pytest.fixture
def store_plugin() -> ModuleType:
    return load_plugin_module("mlops_kit_store")


def row(key: str, step: int, timestamp: int, value: float, is_nan: bool = False) -> dict[str, object]:
    return {"key": key, "step": step, "timestamp": timestamp, "value": value, "is_nan": is_nan, "run_uuid": "r"}


def test_the_latest_value_per_key_is_mlflows_later_by_step_then_time_then_value(store_plugin: ModuleType) -> None:
    rows = [
        row("b", 1, 5, 1.0),
        row("a", 0, 9, 9.0),
        row("a", 1, 1, 0.0, is_nan=True),
        row("a", 1, 1, 0.0),  # equal to the one before: the first stays
        row("b", 1, 5, 2.0),
        row("b", 1, 4, 3.0),
    ]
    assert store_plugin._latest_per_key(rows) == [row("a", 1, 1, 0.0, is_nan=True), row("b", 1, 5, 2.0)]


def test_another_mlflow_release_or_workspaces_get_mlflows_own_store(
    store_plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert type(store_plugin.build_store(uri, str(tmp_path / "a"))).__name__ == "KitSqlAlchemyStore"
    monkeypatch.setattr(mlflow, "__version__", "3.18.0")
    store = store_plugin.build_store(uri, str(tmp_path / "a"))
    assert type(store).__name__ == "SqlAlchemyStore"
    assert "MLflow's own SQLAlchemy store only: MLflow 3.18.0 (verified: 3.17.2)" in caplog.text
    assert store_plugin.STATE == {"fallback": "MLflow 3.18.0 (verified: 3.17.2)"}
    monkeypatch.setattr(mlflow, "__version__", "3.17.2")
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert store_plugin.fallback_reason("3.17.2") == "workspaces are on"
    monkeypatch.delenv("MLFLOW_ENABLE_WORKSPACES")
    monkeypatch.setenv("MLOPS_KIT_FAST_PATHS", "off")
    assert store_plugin.fallback_reason("3.17.2") == "MLOPS_KIT_FAST_PATHS is off"
    assert type(store_plugin.build_store(uri, str(tmp_path / "a"))).__name__ == "SqlAlchemyStore"
