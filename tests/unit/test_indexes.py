"""The database index check: what counts as present, what doctor says about what is missing."""

from __future__ import annotations

from typing import Any

from mlops_kit.probes import missing_indexes as probe
from mlops_kit.workflows.indexes import IndexReport, index_check
from mlops_kit.workflows.preflight import OK, WARN


def missing(table: str, columns: list[str], kind: str = "index", rows: int = 0) -> dict[str, Any]:
    return {"table": table, "columns": columns, "name": f"index_{table}", "kind": kind, "table_rows": rows}


def test_nothing_missing_is_ok() -> None:
    assert index_check(IndexReport(checked=147)).status == OK


def test_missing_index_on_a_small_table_is_reported_without_a_warning() -> None:
    # MLflow 3.17.2's migrations never create index_issues_created_by: every new stack lacks it.
    result = index_check(IndexReport(checked=147, missing=[missing("issues", ["created_by"])]))
    assert result.status == OK
    assert "issues(created_by)" in result.detail and "--fix-indexes" in result.fix


def test_missing_index_on_a_large_table_warns_with_the_fix() -> None:
    result = index_check(IndexReport(checked=147, missing=[missing("metrics", ["run_uuid"], rows=3_000_000)]))
    assert result.status == WARN
    assert "metrics(run_uuid)" in result.detail and "3,000,000 rows" in result.detail
    assert "mlops-kit doctor --fix-indexes" in result.fix


def test_missing_primary_key_is_not_built_automatically() -> None:
    result = index_check(
        IndexReport(checked=147, missing=[missing("metrics", ["key", "run_uuid"], kind="primary key", rows=50_000)])
    )
    assert result.status == WARN and "duplicate rows" in result.fix


def test_probe_expects_mlflows_declared_indexes() -> None:
    expected = probe.expected_indexes()
    keys = {(e["table"], tuple(e["columns"]), e["kind"]) for e in expected}
    assert ("latest_metrics", ("run_uuid",), "index") in keys
    assert any(e["table"] == "metrics" and e["kind"] == "primary key" for e in expected)


def test_probe_matches_keys_by_column_set_and_indexes_by_leading_columns() -> None:
    key = {"kind": "primary key", "columns": ["request_id", "key"]}
    assert probe._serves(key, ["key", "request_id"])  # the migration's column order
    index = {"kind": "index", "columns": ["run_uuid"]}
    assert probe._serves(index, ["run_uuid", "key"])
    assert not probe._serves(index, ["key", "run_uuid"])
