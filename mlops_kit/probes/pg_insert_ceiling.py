"""The raw PostgreSQL insert rate of log_batch's rows: the ceiling a tracking server can reach.

Runs inside the MLflow container (``python - ARGS_JSON`` with this file on stdin), as the
mlflow user, with the server's own database login (libpq's PGPASSFILE). It inserts the
same rows ``log_batch`` writes (metrics: key, value, timestamp, run_uuid, step, is_nan)
into a scratch copy of MLflow's ``metrics`` table (same columns, keys and indexes), one
transaction per call of ``batch_size`` rows, from ``threads`` connections at once, and
prints one JSON line: rows, seconds, rows_per_second. The scratch table is dropped
afterwards. Standard library and psycopg2 only: it must run in any MLflow image.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid

import psycopg2
from psycopg2.extras import execute_values

TABLE = "mlops_kit_bench_insert_ceiling"


def main(arguments: dict[str, object]) -> dict[str, object]:
    dsn = str(arguments["dsn"])
    calls, threads, batch_size = (int(str(arguments[k])) for k in ("calls", "threads", "batch_size"))
    with psycopg2.connect(dsn) as setup:
        setup.autocommit = True
        with setup.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
            cursor.execute(f"CREATE TABLE {TABLE} (LIKE metrics INCLUDING ALL)")
    connections = [psycopg2.connect(dsn) for _ in range(threads)]
    errors: list[BaseException] = []

    def insert(connection: object, share: int) -> None:
        run_uuid = uuid.uuid4().hex
        try:
            with connection.cursor() as cursor:  # type: ignore[attr-defined]
                for call in range(share):
                    rows = [
                        (f"m{i % 10}", float(i), 1_700_000_000_000 + call, run_uuid, call * batch_size + i, False)
                        for i in range(batch_size)
                    ]
                    execute_values(
                        cursor,
                        f"INSERT INTO {TABLE} (key, value, timestamp, run_uuid, step, is_nan) VALUES %s",
                        rows,
                        page_size=batch_size,
                    )
                    connection.commit()  # type: ignore[attr-defined]
        except BaseException as error:  # reported to the caller as JSON, not a traceback
            errors.append(error)

    shares = [calls // threads + (1 if t < calls % threads else 0) for t in range(threads)]
    workers = [threading.Thread(target=insert, args=(c, s)) for c, s in zip(connections, shares, strict=True)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    with psycopg2.connect(dsn) as cleanup:
        cleanup.autocommit = True
        with cleanup.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
    if errors:
        return {"error": f"{type(errors[0]).__name__}: {errors[0]}"}
    rows = calls * batch_size
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 1)}


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
