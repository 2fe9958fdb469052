"""The kit's tracking store (docker/mlflow/plugin/mlops_kit_store.py) against MLflow's own.

Two fresh PostgreSQL servers (the kit's PostgreSQL image, `containers.plain_postgres`), one
per store: MLflow's ``SqlAlchemyStore`` and the kit's store, both built by MLflow's own
migrations in this process (this checkout's MLflow 3.17.2). The same sequence of calls goes
to both: every answer (nothing, or the error's class, code and message) must be the same,
and afterwards every row of the tables the calls touch (runs, metrics, latest_metrics,
params, tags), run ids replaced by the run's name. Then writers in eight threads log
overlapping metrics, and params and tags, to one run of each store at once: again, the
same rows.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlops_kit.config.settings import SETTINGS_BY_ENV
from tests.conftest import load_plugin_module
from tests.integration.containers import SOURCE_DB_PASSWORD, running_plain_postgres

POSTGRES_IMAGE = SETTINGS_BY_ENV["MLOPS_KIT_POSTGRES_IMAGE"].default
TABLES = {
    "runs": "run_uuid, name, status, lifecycle_stage, start_time, end_time",
    "metrics": "run_uuid, key, value, timestamp, step, is_nan",
    "latest_metrics": "run_uuid, key, value, timestamp, step, is_nan",
    "params": "run_uuid, key, value",
    "tags": "run_uuid, key, value",
}


@pytest.fixture(scope="module")
def stores(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    artifacts = tmp_path_factory.mktemp("artifacts")
    with running_plain_postgres(POSTGRES_IMAGE) as stock_port, running_plain_postgres(POSTGRES_IMAGE) as kit_port:
        kit = load_plugin_module("mlops_kit_store").build_store(database_uri(kit_port), str(artifacts / "kit"))
        assert type(kit).__name__ == "KitSqlAlchemyStore"
        yield {"stock": SqlAlchemyStore(database_uri(stock_port), str(artifacts / "stock")), "kit": kit}


def database_uri(port: int) -> str:
    return f"postgresql+psycopg2://mlflow:{SOURCE_DB_PASSWORD}@127.0.0.1:{port}/mlflow"


class Replay:
    """One call on both stores; what each answered, in order."""

    def __init__(self, stores: dict[str, Any]) -> None:
        self.stores = stores
        self.runs: dict[str, dict[str, str]] = {"stock": {}, "kit": {}}
        self.experiment = {name: store.create_experiment("equivalence") for name, store in stores.items()}

    def named(self, side: str, text: str) -> str:
        for name, run_id in self.runs[side].items():
            text = text.replace(run_id, f"<{name}>")
        return text

    def create_run(self, name: str) -> None:
        for side, store in self.stores.items():
            run = store.create_run(self.experiment[side], "user", 1_700_000_000_000, [], name)
            self.runs[side][name] = run.info.run_id

    def call(self, method: str, run: str, *args: Any) -> None:
        answers = {}
        for side, store in self.stores.items():
            run_id = self.runs[side].get(run, run)
            try:
                getattr(store, method)(run_id, *args)
                answers[side] = None
            except Exception as error:  # every error is compared, whatever its class
                answers[side] = (type(error).__name__, getattr(error, "error_code", None), self.named(side, str(error)))
        assert answers["kit"] == answers["stock"], (method, run, args)

    def rows(self, side: str, table: str) -> list[tuple[Any, ...]]:
        import sqlalchemy as sa

        with self.stores[side].engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT {TABLES[table]} FROM {table}")).fetchall()
        names = {run_id: name for name, run_id in self.runs[side].items()}
        return sorted((names.get(row[0], row[0]), *row[1:]) for row in rows)

    def assert_same_rows(self) -> None:
        for table in TABLES:
            assert self.rows("kit", table) == self.rows("stock", table), table


def metric(key: str, value: float, timestamp: int, step: int, model_id: str | None = None) -> Any:
    from mlflow.entities import Metric

    return Metric(key, value, timestamp, step, model_id=model_id)


@pytest.fixture(scope="module")
def replay(stores: dict[str, Any]) -> Replay:
    return Replay(stores)


def test_single_metrics_follow_mlflows_rules_for_latest_values_nan_and_infinity(replay: Replay) -> None:
    replay.create_run("single")
    cases = [
        ("loss", 1.0, 100, 0),
        ("loss", 1.0, 100, 0),  # the same metric again: skipped, no error
        ("loss", 2.0, 100, 0),  # same step and time, larger value: the latest
        ("loss", 0.5, 100, 0),  # smaller: history only
        ("loss", 9.0, 50, 1),  # later step, earlier time: the latest
        ("loss", 8.0, 60, 1),  # same step, later time: the latest
        ("loss", 7.0, 10, 0),  # an earlier step: history only
        ("acc", math.nan, 5, 3),
        ("acc", math.nan, 5, 3),  # NaN twice (NaN != NaN for MLflow's de-duplication)
        ("acc", 0.0, 5, 3),  # equal to the stored NaN (value 0): the first stays
        ("big", math.inf, 1, 0),
        ("big", -math.inf, 2, 0),
        ("neg", -0.0, 1, 0),
        ("neg", 0.0, 1, 0),
    ]
    for key, value, timestamp, step in cases:
        replay.call("log_metric", "single", metric(key, value, timestamp, step))
    replay.assert_same_rows()


def test_batches_and_every_refusal_answer_alike(replay: Replay) -> None:
    from mlflow.entities import Param, RunTag

    replay.create_run("batch")
    batch = [metric(f"m{i % 7}", float(i % 13), 1_000 + i % 5, i % 11) for i in range(1000)]
    replay.call("log_batch", "batch", batch, [Param("lr", "0.1")], [RunTag("team", "a")])
    replay.call("log_batch", "batch", batch[:10], [Param("lr", "0.1")], [])  # repeated: no change
    replay.call("log_batch", "batch", [], [Param("lr", "0.2")], [])  # a changed param: refused
    replay.call("log_batch", "batch", batch + batch[:1], [], [])  # 1,001 metrics: refused
    replay.call("log_batch", "batch", [metric("x", 1.0, 1, 0), metric("x", 1.0, 1, 0)], [], [])
    replay.call("log_batch", "batch", [], [], [])
    # Equal by step, time and value in one batch (NaN is stored as 0): the first is the latest.
    replay.call("log_batch", "batch", [metric("tie", math.nan, 5, 1), metric("tie", 0.0, 5, 1)], [], [])
    replay.call("log_batch", "batch", [metric("tie2", 0.0, 5, 1), metric("tie2", math.nan, 5, 1)], [], [])
    for bad in (
        metric("../escape", 1.0, 1, 0),
        metric("ok", 1.0, None, 0),  # type: ignore[arg-type]
        metric("ok", 1.0, 1, None),  # type: ignore[arg-type]
        metric("ok", "1.0", 1, 0),  # type: ignore[arg-type]
        metric("", 1.0, 1, 0),
    ):
        replay.call("log_metric", "batch", bad)
        replay.call("log_batch", "batch", [metric("fine", 1.0, 1, 0), bad], [], [])
    replay.call("log_metric", "f" * 32, metric("m", 1.0, 1, 0))  # no such run
    replay.call("log_batch", "f" * 32, [metric("m", 1.0, 1, 0)], [], [])
    replay.call("log_metric", "not a run id", metric("m", 1.0, 1, 0))
    replay.create_run("deleted")
    replay.call("log_metric", "deleted", metric("m", 1.0, 1, 0))
    replay.call("delete_run", "deleted")
    replay.call("log_metric", "deleted", metric("m", 2.0, 2, 1))  # a deleted run: refused
    replay.call("log_batch", "deleted", [metric("m", 2.0, 2, 1)], [], [])
    replay.call("restore_run", "deleted")
    replay.call("log_metric", "deleted", metric("m", 3.0, 3, 2))
    replay.assert_same_rows()


def run_writers(replay: Replay, run: str, writer: Callable[[Any, str, int], Callable[[], None]]) -> None:
    """Eight threads of ``writer(store, run_id, worker)`` on the run, on one store and then the other."""
    for side, store in replay.stores.items():
        threads = [threading.Thread(target=writer(store, replay.runs[side][run], w)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(thread.is_alive() for thread in threads), side


def test_concurrent_writers_to_one_run_leave_the_same_rows(replay: Replay) -> None:
    replay.create_run("busy")
    errors: list[BaseException] = []

    def writer(store: Any, run_id: str, worker: int) -> Callable[[], None]:
        def write() -> None:
            try:
                for round_ in range(20):
                    batch = [
                        metric(f"k{j}", float((worker + j) % 5), 10 + round_, (worker * 3 + j) % 9) for j in range(25)
                    ]
                    store.log_batch(run_id, batch, [], [])
                    store.log_metric(run_id, metric("shared", float(worker), 10 + round_, round_ % 4))
            except BaseException as error:
                errors.append(error)

        return write

    run_writers(replay, "busy", writer)
    assert not errors, errors
    replay.assert_same_rows()


def test_metrics_of_a_logged_model_take_mlflows_own_path(replay: Replay) -> None:
    replay.create_run("model")
    model = {side: store.create_logged_model(replay.experiment[side]) for side, store in replay.stores.items()}
    for side, store in replay.stores.items():
        store.log_metric(replay.runs[side]["model"], metric("auc", 0.9, 1, 0, model_id=model[side].model_id))
    replay.assert_same_rows()


def param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, value)


def tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value)


def test_params_and_tags_follow_mlflows_rules_and_refusals(replay: Replay) -> None:
    replay.create_run("pt")
    replay.call("log_param", "pt", param("lr", "0.1"))
    replay.call("log_param", "pt", param("lr", "0.1"))  # the same value again: fine
    replay.call("log_param", "pt", param("lr", "0.2"))  # a changed value: refused
    replay.call("log_param", "pt", param("long", "v" * 7000))  # past MLflow's limit
    for bad_key in ("../escape", "", "a" * 251):
        replay.call("log_param", "pt", param(bad_key, "1"))
        replay.call("set_tag", "pt", tag(bad_key, "1"))
    # A batch: known keys with the same value pass, new ones go in.
    replay.call("log_batch", "pt", [], [param("lr", "0.1"), param("depth", "3"), param("seed", "7")], [])
    # A batch with one changed value among new ones: refused whole (``fresh`` must not stay).
    replay.call("log_batch", "pt", [], [param("fresh", "1"), param("seed", "8"), param("depth", "4")], [])
    replay.call("log_batch", "pt", [], [param("twice", "1"), param("twice", "1")], [])  # duplicate keys
    replay.call("set_tag", "pt", tag("team", "a"))
    replay.call("set_tag", "pt", tag("team", "b"))  # overwritten
    replay.call("set_tag", "pt", tag("note", "n" * 9000))  # past the tag limit
    replay.call("set_tag", "pt", tag("mlflow.runName", "renamed"))  # renames the run
    # Tags in a batch: the last value of a key wins; the run name tag renames the run.
    tags = [tag("stage", "1"), tag("stage", "2"), tag("team", "c"), tag("mlflow.runName", "again"), tag("z", "")]
    replay.call("log_batch", "pt", [], [param("opt", "adam")], tags)
    # A run name the runs table cannot hold (250 characters): the batch's other tags stay unwritten.
    replay.call("log_batch", "pt", [], [], [tag("kept-out", "1"), tag("mlflow.runName", "n" * 300)])
    # A bad metric refuses the batch before any param or tag is written.
    replay.call("log_batch", "pt", [metric("ok", 1.0, None, 0)], [param("never", "1")], [tag("never", "1")])  # type: ignore[arg-type]
    replay.call("log_batch", "pt", [], [param("p", "1")], [tag("", "1")])
    for run in ("f" * 32, "not a run id"):
        replay.call("log_param", run, param("lr", "1"))
        replay.call("set_tag", run, tag("t", "1"))
        replay.call("log_batch", run, [], [param("lr", "1")], [tag("t", "1")])
    replay.create_run("pt-deleted")
    replay.call("delete_run", "pt-deleted")
    replay.call("log_param", "pt-deleted", param("lr", "1"))
    replay.call("set_tag", "pt-deleted", tag("t", "1"))
    replay.call("log_batch", "pt-deleted", [], [param("lr", "1")], [tag("t", "1")])
    replay.call("restore_run", "pt-deleted")
    replay.call("log_batch", "pt-deleted", [metric("m", 1.0, 1, 0)], [param("lr", "1")], [tag("t", "1")])
    replay.assert_same_rows()


def test_concurrent_params_and_tags_to_one_run_leave_the_same_rows(replay: Replay) -> None:
    """Eight writers: their own params and tags, in batches and one by one, and one param every
    writer logs with the same value (the race MLflow's log_param settles by reading it back)."""
    replay.create_run("busy-pt")
    errors: list[BaseException] = []

    def writer(store: Any, run_id: str, worker: int) -> Callable[[], None]:
        def write() -> None:
            try:
                for round_ in range(10):
                    params = [param(f"w{worker}-r{round_}-p{j}", str(j)) for j in range(10)]
                    tags = [tag(f"w{worker}-t{j}", f"{round_}") for j in range(10)]
                    store.log_batch(run_id, [], params, tags)
                    store.log_param(run_id, param("shared", "same"))
                    store.set_tag(run_id, tag(f"w{worker}-single", str(round_)))
                    store.log_param(run_id, param(f"w{worker}-single-{round_}", str(round_)))
            except BaseException as error:
                errors.append(error)

        return write

    run_writers(replay, "busy-pt", writer)
    assert not errors, errors
    replay.assert_same_rows()


def test_a_batch_needs_one_connection_at_a_time(
    stores: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """MLflow's log_batch holds its run check's connection while each write takes another: as
    many concurrent batches as a worker's pool holds waited for the pool's timeout (seen at 32
    client threads). The kit's takes one connection at a time."""
    from mlflow.entities import Metric, Param, RunTag
    from sqlalchemy import event

    kit = stores["kit"]
    run_id = kit.create_run(kit.create_experiment("one-connection"), "u", 0, [], "one-connection").info.run_id
    # A URI of its own: MLflow keeps one engine (and pool) per URI.
    counted = load_plugin_module("mlops_kit_store").build_store(
        f"{kit.db_uri}?application_name=one-connection", str(tmp_path_factory.mktemp("counted"))
    )
    held = {"now": 0, "most": 0}

    def checkout(*_: Any) -> None:
        held["now"] += 1
        held["most"] = max(held["most"], held["now"])

    def checkin(*_: Any) -> None:
        held["now"] -= 1

    event.listen(counted.engine, "checkout", checkout)
    event.listen(counted.engine, "checkin", checkin)
    counted.log_batch(run_id, [Metric("m", 1.0, 1, 0)], [Param("p", "v")], [RunTag("t", "v")])
    assert held == {"now": 0, "most": 1}
    run = kit.get_run(run_id)
    assert (run.data.metrics, run.data.params, run.data.tags.get("t")) == ({"m": 1.0}, {"p": "v"}, "v")
    # A batch that renames the run: MLflow's set_tag for the name runs inside its tags' session.
    counted.log_batch(run_id, [], [], [RunTag("mlflow.runName", "renamed"), RunTag("t", "w")])
    assert held == {"now": 0, "most": 1}
    run = kit.get_run(run_id)
    assert (run.info.run_name, run.data.tags.get("t")) == ("renamed", "w")
