"""Database indexes MLflow's queries need: find the missing ones (MLflow issue 14465), build them.

The check runs MLflow's own models against PostgreSQL's catalog inside the MLflow
container (mlops_kit/probes/missing_indexes.py), so it always matches the MLflow
version the stack runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from mlops_kit.checks import OK, WARN, CheckResult
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_json, last_line
from mlops_kit.errors import StackError
from mlops_kit.probes import TRACKING_DSN, probe_script, run_in_mlflow

FIX_COMMAND = "mlops-kit doctor --fix-indexes"


@dataclass
class IndexReport:
    """What the probe found: how many indexes it checked, the missing ones, the ones it built."""

    checked: int
    missing: list[dict[str, Any]] = field(default_factory=list)
    created: list[str] = field(default_factory=list)

    def describe(self, entry: dict[str, Any]) -> str:
        return f"{entry['table']}({', '.join(entry['columns'])}) {entry['kind']}, ~{entry.get('table_rows', 0):,} rows"


def run_index_probe(project: ComposeProject, *, create: bool = False) -> IndexReport:
    """Compare MLflow's declared indexes with the tracking database's (and build missing ones if ``create``)."""
    result = run_in_mlflow(
        project,
        probe_script("missing_indexes"),
        [json.dumps({"dsn": TRACKING_DSN, "create": create})],
        changes_state=create,
        check=False,
    )
    answer = last_json(result.stdout) if result.ok else None
    if not isinstance(answer, dict):
        detail = last_line(result.stderr) or "no answer"
        raise StackError(
            f"the index check could not run in the mlflow container: {detail}",
            hint="is the stack up? mlops-kit status",
        )
    return IndexReport(
        checked=answer["checked"],
        missing=answer["missing"],
        created=answer["created"],
    )


#: Below this many rows a missing index costs nothing noticeable (a scan of a small table).
SMALL_TABLE_ROWS = 10_000


def index_check(report: IndexReport) -> CheckResult:
    """The doctor's line for ``report``: a warning naming each missing index on a table that matters.

    A missing index on a small table is reported but not warned about: MLflow 3.17.2's
    migrations never create ``index_issues_created_by`` (its model declares it), so every
    new stack lacks it, harmlessly until that table grows.
    """
    if not report.missing:
        return CheckResult("database indexes", OK, f"all {report.checked} indexes of MLflow's schema are present")
    names = "; ".join(report.describe(e) for e in report.missing)
    detail = f"{len(report.missing)} of {report.checked} missing: {names}"
    if all(e.get("table_rows", 0) < SMALL_TABLE_ROWS for e in report.missing):
        return CheckResult(
            "database indexes", OK, f"{detail} (small tables: no effect yet)", f"optional: {FIX_COMMAND}"
        )
    plain = [e for e in report.missing if e["kind"] == "index"]
    fix = (
        f"build them without stopping the server: {FIX_COMMAND}"
        if plain
        else "a missing key or unique constraint needs a look at duplicate rows first: see docs/performance.md"
    )
    return CheckResult("database indexes", WARN, detail, fix)
