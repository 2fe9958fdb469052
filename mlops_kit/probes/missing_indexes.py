"""Indexes MLflow's queries need that the tracking database lacks (MLflow issue 14465).

Runs inside the MLflow container (``python - ARGS_JSON`` with this file on stdin), as the
mlflow user. The expected indexes come from the installed MLflow itself: every primary
key, unique constraint and index declared on its SQLAlchemy models (tracking, model
registry, traces). They are compared with PostgreSQL's catalog by table and columns, not
by name: an index with the same leading columns serves the same queries whatever it is
called. A database whose migrations were interrupted or hand-edited can miss some, and
then run and metric pages scan whole tables (20 s and more in that issue).

With ``"create": true`` the missing plain indexes are built with CREATE INDEX
CONCURRENTLY (no lock on writes, the server keeps running). Missing primary keys and
unique constraints are only reported: adding one can fail on duplicates that already
exist, which needs a person to look at.

Prints one JSON line: checked, missing (table, columns, name, kind, table_rows), created.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import mlflow.store.model_registry.dbmodels.models
import mlflow.store.tracking.dbmodels.models  # noqa: F401
import psycopg2
import sqlalchemy as sa
from mlflow.store.db.base_sql_model import Base


def expected_indexes() -> list[dict[str, Any]]:
    """Every index MLflow's models declare: (table, columns, name, kind)."""
    found: list[dict[str, Any]] = []
    for table in Base.metadata.sorted_tables:
        if table.primary_key.columns:
            found.append(
                {
                    "table": table.name,
                    "columns": [c.name for c in table.primary_key.columns],
                    "name": table.primary_key.name,
                    "kind": "primary key",
                }
            )
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint) and constraint.columns:
                found.append(
                    {
                        "table": table.name,
                        "columns": [c.name for c in constraint.columns],
                        "name": constraint.name,
                        "kind": "unique",
                    }
                )
        for index in table.indexes:
            columns = [c.name for c in index.columns]
            # Expression indexes have no plain columns to compare: skip them.
            if columns and len(columns) == len(index.expressions):
                found.append(
                    {
                        "table": table.name,
                        "columns": columns,
                        "name": index.name,
                        "kind": "unique index" if index.unique else "index",
                    }
                )
    return found


def present_indexes(cursor: Any) -> dict[str, list[list[str]]]:
    """The column lists of every index in the public schema, by table."""
    cursor.execute(
        """
        SELECT t.relname, array_agg(a.attname ORDER BY k.n)
        FROM pg_index i
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace ns ON ns.oid = t.relnamespace AND ns.nspname = current_schema()
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE i.indisvalid
        GROUP BY i.indexrelid, t.relname
        """
    )
    present: dict[str, list[list[str]]] = {}
    for table, columns in cursor.fetchall():
        present.setdefault(table, []).append(list(columns))
    return present


def _serves(expected: dict[str, Any], columns: list[str]) -> bool:
    """Whether an index on ``columns`` serves ``expected``.

    Keys and unique constraints: the same set of columns (their order in the catalog is the
    migration's, not the model's). Plain indexes: the same leading columns, in order.
    """
    if expected["kind"] in ("primary key", "unique"):
        return sorted(columns) == sorted(expected["columns"])
    return bool(columns[: len(expected["columns"])] == expected["columns"])


def estimated_rows(cursor: Any) -> dict[str, int]:
    """PostgreSQL's row estimate per table (pg_class.reltuples; -1 before the first ANALYZE)."""
    cursor.execute(
        "SELECT c.relname, c.reltuples::bigint FROM pg_class c "
        "JOIN pg_namespace ns ON ns.oid = c.relnamespace AND ns.nspname = current_schema() WHERE c.relkind = 'r'"
    )
    return {name: max(0, int(rows)) for name, rows in cursor.fetchall()}


def tables(cursor: Any) -> set[str]:
    cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {row[0] for row in cursor.fetchall()}


def main(arguments: dict[str, Any]) -> dict[str, Any]:
    connection = psycopg2.connect(str(arguments["dsn"]))
    # Not `with connection:` (that is a transaction): CREATE INDEX CONCURRENTLY cannot run in one.
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            existing_tables = tables(cursor)
            row_estimates = estimated_rows(cursor)
            present = present_indexes(cursor)
            # Tables a newer MLflow would create are not "missing indexes": the upgrade makes them.
            wanted = [e for e in expected_indexes() if e["table"] in existing_tables]
            missing = [e for e in wanted if not any(_serves(e, cols) for cols in present.get(e["table"], []))]
            for entry in missing:
                entry["table_rows"] = row_estimates.get(entry["table"], 0)
            created: list[str] = []
            if arguments.get("create"):
                for entry in missing:
                    if entry["kind"] != "index":
                        continue
                    # The kit's own name: a later MLflow migration that creates the index under
                    # MLflow's name then still succeeds (a duplicate index costs writes, not upgrades).
                    name = f"mlops_kit_{entry['table']}_{'_'.join(entry['columns'])}"[:63]
                    columns = ", ".join(f'"{c}"' for c in entry["columns"])
                    cursor.execute(
                        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{name}" ON "{entry["table"]}" ({columns})'
                    )
                    created.append(name)
    finally:
        connection.close()
    return {
        "checked": len(wanted),
        "missing": missing,
        "created": created,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
