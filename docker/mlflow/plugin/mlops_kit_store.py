"""The kit's tracking store: MLflow's SQLAlchemy store with the hot writes in a few statements.

Registered for the ``postgresql`` scheme (the ``mlflow.tracking_store`` entry point of this
plugin, which MLflow registers after its own), so the server, and every job of the image,
gets it for the kit's backend URI. Everything is MLflow's ``SqlAlchemyStore`` except how a
batch of metrics goes in (``log_metric`` and the metrics of ``log_batch``): MLflow's ORM path
loads the run, inserts row by row, reads the latest values of the keys, locks them and
writes them back one by one, and on a duplicate metric rolls back and starts over. Here,
in one transaction:

1. the run's lifecycle stage (one primary-key query: a missing or deleted run fails with
   MLflow's own error and message);
2. one multi-row ``INSERT INTO metrics ... ON CONFLICT DO NOTHING RETURNING`` (a metric
   already logged with the same key, step, timestamp and value is skipped, as MLflow's
   retry skips it);
3. one multi-row upsert of ``latest_metrics``, a key's row replaced only by a metric that is
   later by step, then timestamp, then value (MLflow's rule; the first of equal ones wins),
   the rows in key order, as MLflow locks them.

Params (``log_param`` and ``log_batch``'s) go in with one ``INSERT ... ON CONFLICT DO NOTHING
RETURNING``; only a key that was already there is read back, and a different value is
refused with MLflow's message, the whole call undone, as MLflow refuses it before writing.
Tags (``set_tag`` and ``log_batch``'s) are one upsert, the last value of a key in the call
winning as in MLflow; the run name tag (``mlflow.runName``), which also renames the run,
takes MLflow's own steps (its run check, then ``update_run_info``), but with the check's
session closed before the rename opens its own. Where MLflow's ORM fails a call that raced another writer of the
same param or tag key (an integrity error), this store applies the same rule to the row
the other writer left: the same value passes, a different one is refused.

``log_batch`` is MLflow's, in the same order, except that its run check's session is closed
before the writes open theirs: one connection at a time instead of two (three while
renaming), so concurrent batches cannot hold a worker's whole pool while each waits for
another connection.

The validation before it is MLflow's own code, in the same order, with the same messages
and error codes; NaN and infinities are stored as MLflow stores them. Deadlocks are retried
by MLflow's own wrapper. Metrics that name a logged model, other databases, workspaces and
any MLflow release but ``mlops_kit_verified.VERIFIED_MLFLOW`` take MLflow's own path (the last two say so
in the log). ``tests/integration/test_store_equivalence.py`` replays the same calls against
both stores on two fresh PostgreSQL servers and compares every row and every error.
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import Any

from mlops_kit_verified import fallback_reason

_logger = logging.getLogger("mlops_kit.store")

#: Why the fast path is off in this process ("" when it is on).
STATE: dict[str, str] = {"fallback": ""}


def build_store(store_uri: str, artifact_uri: str | None = None) -> Any:
    """The store for a ``postgresql`` backend URI (MLflow's builder's signature)."""
    import mlflow

    reason = fallback_reason(mlflow.__version__)
    if reason:
        if STATE["fallback"] != reason:
            _logger.warning("kit store: MLflow's own SQLAlchemy store only: %s", reason)
        STATE["fallback"] = reason
        return _mlflows_own(store_uri, artifact_uri)
    STATE["fallback"] = ""
    from mlflow.server.constants import READ_REPLICA_BACKEND_STORE_URI_ENV_VAR
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.tracking._tracking_service.utils import _SERVER_ARTIFACT_ROOT_ENV_VAR

    if artifact_uri is None:
        # As MLflow's builder: inside the server, the server's artifact root.
        artifact_uri = os.environ.get(_SERVER_ARTIFACT_ROOT_ENV_VAR, DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    # As the server's builder: its read replica, when it has one.
    read_db_uri = os.environ.get(READ_REPLICA_BACKEND_STORE_URI_ENV_VAR)
    return _kit_store_class()(store_uri, artifact_uri, read_db_uri=read_db_uri)


def _mlflows_own(store_uri: str, artifact_uri: str | None) -> Any:
    """What MLflow's server builds for the URI (its client-side builder where that is missing)."""
    try:
        from mlflow.server.handlers import TrackingStoreRegistryWrapper

        return TrackingStoreRegistryWrapper._get_sqlalchemy_store(store_uri, artifact_uri)
    except (ImportError, AttributeError):
        from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

        return _get_sqlalchemy_store(store_uri, artifact_uri)


_CLASS: list[Any] = []
#: Set while log_batch runs: MLflow's _validate_batch_log_data has checked every metric
#: with the same rule and path, so the second identical check can only pass.
_BATCH_VALIDATED: contextvars.ContextVar[bool] = contextvars.ContextVar("batch_validated", default=False)


def _kit_store_class() -> Any:
    """KitSqlAlchemyStore, made once (MLflow is imported only when a store is built)."""
    if _CLASS:
        return _CLASS[0]
    import sqlalchemy as sa
    from mlflow.entities import RunStatus
    from mlflow.entities.lifecycle_stage import LifecycleStage
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
    from mlflow.store.db.db_types import POSTGRES
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlTag
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from mlflow.utils.validation import (
        _validate_batch_log_data,
        _validate_batch_log_limits,
        _validate_metric,
        _validate_param,
        _validate_param_keys_unique,
        _validate_run_id,
        _validate_tag,
    )
    from sqlalchemy.dialects.postgresql import insert

    run_stage = sa.text("SELECT lifecycle_stage FROM runs WHERE run_uuid = :run_id")
    metrics_table, latest_table = SqlMetric.__table__, SqlLatestMetric.__table__
    insert_metrics = (
        insert(metrics_table)
        .on_conflict_do_nothing()
        .returning(
            metrics_table.c.key,
            metrics_table.c.timestamp,
            metrics_table.c.step,
            metrics_table.c.value,
            metrics_table.c.is_nan,
        )
    )
    excluded = insert(latest_table).excluded
    upsert_latest = insert(latest_table).on_conflict_do_update(
        index_elements=[latest_table.c.key, latest_table.c.run_uuid],
        set_={
            "value": excluded.value,
            "timestamp": excluded.timestamp,
            "step": excluded.step,
            "is_nan": excluded.is_nan,
        },
        # Later by step, then timestamp, then value: MLflow's rule.
        where=sa.tuple_(excluded.step, excluded.timestamp, excluded.value)
        > sa.tuple_(latest_table.c.step, latest_table.c.timestamp, latest_table.c.value),
    )

    params_table, tags_table = SqlParam.__table__, SqlTag.__table__
    insert_params = insert(params_table).on_conflict_do_nothing().returning(params_table.c.key)
    stored_params = sa.select(params_table.c.key, params_table.c.value).where(
        params_table.c.run_uuid == sa.bindparam("run_id"), params_table.c.key.in_(sa.bindparam("keys", expanding=True))
    )
    upsert_tags = insert(tags_table)
    upsert_tags = upsert_tags.on_conflict_do_update(
        index_elements=[tags_table.c.key, tags_table.c.run_uuid], set_={"value": upsert_tags.excluded.value}
    )

    def require_active(session: Any, run_id: str) -> None:
        """MLflow's _get_run and _check_run_is_active, answered by one primary-key query."""
        stages = session.execute(run_stage, {"run_id": run_id}).fetchall()
        if not stages:
            raise MlflowException(f"Run with id={run_id} not found", RESOURCE_DOES_NOT_EXIST)
        if stages[0][0] != LifecycleStage.ACTIVE:
            raise MlflowException(
                f"The run {run_id} must be in the 'active' state. Current state is {stages[0][0]}.",
                INVALID_PARAMETER_VALUE,
            )

    class KitSqlAlchemyStore(SqlAlchemyStore):  # type: ignore[misc]
        """MLflow's store; metrics, params and tags go in with set-based SQL (module docstring)."""

        def log_param(self, run_id: str, param: Any) -> None:
            if self.db_type != POSTGRES:
                super().log_param(run_id, param)
                return
            param = _validate_param(param.key, param.value)
            with self.ManagedSessionMaker(read_only=False) as session:
                require_active(session, run_id)
                row = {"run_uuid": run_id, "key": param.key, "value": param.value}
                if session.execute(insert_params, [row]).fetchall():
                    return
                old = session.execute(stored_params, {"run_id": run_id, "keys": [param.key]}).fetchall()
                if old and old[0][1] != param.value:
                    raise MlflowException(
                        f"Changing param values is not allowed. Param with key='{param.key}' was already"
                        f" logged with value='{old[0][1]}' for run ID='{run_id}'. Attempted logging new value"
                        f" '{param.value}'.",
                        INVALID_PARAMETER_VALUE,
                    )

        def _log_params(self, run_id: str, params: list[Any]) -> None:
            if not params:
                return
            if self.db_type != POSTGRES:
                super()._log_params(run_id, params)
                return
            with self.ManagedSessionMaker(read_only=False) as session:
                require_active(session, run_id)
                rows = [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params]
                new = {row[0] for row in session.execute(insert_params, rows).fetchall()}
                there = [p.key for p in params if p.key not in new]
                if not there:
                    return
                old = dict(session.execute(stored_params, {"run_id": run_id, "keys": there}).fetchall())
                non_matching_params = [
                    {"key": p.key, "old_value": old[p.key], "new_value": p.value}
                    for p in params
                    if p.key in old and old[p.key] != p.value
                ]
                if non_matching_params:
                    # Raised inside the transaction: the params inserted above are undone with it.
                    raise MlflowException(
                        "Changing param values is not allowed. Params were already"
                        f" logged='{non_matching_params}' for run ID='{run_id}'.",
                        INVALID_PARAMETER_VALUE,
                    )

        def set_tag(self, run_id: str, tag: Any) -> None:
            if self.db_type != POSTGRES:
                super().set_tag(run_id, tag)
                return
            if tag.key == MLFLOW_RUN_NAME:
                self._rename(run_id, tag)
                return
            with self.ManagedSessionMaker(read_only=False) as session:
                tag = _validate_tag(tag.key, tag.value)
                require_active(session, run_id)
                session.execute(upsert_tags, [{"run_uuid": run_id, "key": tag.key, "value": tag.value}])

        def _rename(self, run_id: str, tag: Any) -> None:
            """MLflow's set_tag for the run name (it renames the run), one connection at a time.

            MLflow's holds its run check's session open while update_run_info opens another.
            """
            tag = _validate_tag(tag.key, tag.value)
            with self.ManagedSessionMaker(read_only=False) as session:
                run = self._get_run(run_uuid=run_id, session=session)
                self._check_run_is_active(run)
                status, end_time = RunStatus.from_string(run.status), run.end_time
            self.update_run_info(run_id, status, end_time, tag.value)

        def _set_tags(self, run_id: str, tags: list[Any]) -> None:
            if not tags:
                return
            if self.db_type != POSTGRES:
                super()._set_tags(run_id, tags)
                return
            if not _BATCH_VALIDATED.get():
                tags = [_validate_tag(t.key, t.value, path=f"tags[{idx}]") for (idx, t) in enumerate(tags)]
            # The run name first, each in its own transaction, as MLflow's loop does before it
            # commits the other tags (a name it cannot store leaves them unwritten). The first
            # rename checks the run before anything is written, as MLflow does. MLflow keeps its
            # run check's connection open meanwhile (two at once, three while renaming); here
            # each is closed before the next opens.
            for tag in tags:
                if tag.key == MLFLOW_RUN_NAME:
                    self._rename(run_id, tag)
            # One row per key, its last value (as MLflow); in key order, as rows are locked.
            last = {t.key: t.value for t in tags if t.key != MLFLOW_RUN_NAME}
            if last:
                with self.ManagedSessionMaker(read_only=False) as session:
                    require_active(session, run_id)
                    rows = [{"run_uuid": run_id, "key": key, "value": last[key]} for key in sorted(last)]
                    session.execute(upsert_tags, rows)

        def log_batch(self, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]) -> None:
            token = _BATCH_VALIDATED.set(True)
            try:
                if self.db_type != POSTGRES:
                    super().log_batch(run_id, metrics, params, tags)
                else:
                    self._log_batch_one_connection_at_a_time(run_id, metrics, params, tags)
            finally:
                _BATCH_VALIDATED.reset(token)

        def _log_batch_one_connection_at_a_time(
            self, run_id: str, metrics: list[Any], params: list[Any], tags: list[Any]
        ) -> None:
            # MLflow's log_batch, in the same order, but its run check's session is closed
            # before the writes: MLflow holds it open while each write opens its own, two
            # connections per call, so as many concurrent batches as a worker's pool holds
            # (13 in the kit) each wait for a second one until the pool's 30 s timeout
            # (seen at 32 client threads). Each write checks the run again (require_active).
            _validate_run_id(run_id)
            metrics, params, tags = _validate_batch_log_data(metrics, params, tags)
            _validate_batch_log_limits(metrics, params, tags)
            _validate_param_keys_unique(params)
            with self.ManagedSessionMaker(read_only=False) as session:
                run = self._get_run(run_uuid=run_id, session=session)
                self._check_run_is_active(run)
                experiment_id = run.experiment_id
            try:
                self._log_params(run_id, params)
                self._log_metrics(run_id, metrics)
                self._log_model_metrics(run_id, metrics, experiment_id=experiment_id)
                self._set_tags(run_id, tags)
            except MlflowException:
                raise
            except Exception as e:
                raise MlflowException(e, INTERNAL_ERROR) from e

        def _log_metrics_once(self, run_id: str, metrics: list[Any]) -> None:
            if self.db_type != POSTGRES or any(getattr(m, "model_id", None) for m in metrics):
                super()._log_metrics_once(run_id, metrics)
                return
            # MLflow's validation and de-duplication, exactly (Metric equality: NaN != NaN).
            rows: list[dict[str, Any]] = []
            seen: set[Any] = set()
            single = len(metrics) == 1
            validated = _BATCH_VALIDATED.get()
            for index, metric in enumerate(metrics):
                if not validated:
                    _validate_metric(
                        metric.key,
                        metric.value,
                        metric.timestamp,
                        metric.step,
                        path="" if single else f"metrics[{index}]",
                    )
                if metric not in seen:
                    is_nan, value = self.sanitize_metric_value(metric.value)
                    rows.append(
                        {
                            "run_uuid": run_id,
                            "key": metric.key,
                            "value": value,
                            "timestamp": metric.timestamp,
                            "step": metric.step,
                            "is_nan": is_nan,
                        }
                    )
                seen.add(metric)

            with self.ManagedSessionMaker(read_only=False) as session:
                require_active(session, run_id)
                if not rows:
                    return
                # One statement for the whole batch (SQLAlchemy's "insertmanyvalues": the
                # statement is compiled once and cached, the rows go as one VALUES list).
                inserted = session.execute(insert_metrics, rows).fetchall()
                new = {tuple(row) for row in inserted}
                latest = _latest_per_key(
                    [r for r in rows if (r["key"], r["timestamp"], r["step"], r["value"], r["is_nan"]) in new]
                )
                if latest:
                    session.execute(upsert_latest, latest)

    _CLASS.append(KitSqlAlchemyStore)
    return KitSqlAlchemyStore


def _latest_per_key(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per key, the row MLflow's comparison keeps: the latest by (step, timestamp, value), the
    first of equal ones; sorted by key, the order MLflow locks ``latest_metrics`` rows in."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = best.get(row["key"])
        if kept is None or (row["step"], row["timestamp"], row["value"]) > (
            kept["step"],
            kept["timestamp"],
            kept["value"],
        ):
            best[row["key"]] = row
    return [dict(best[key]) for key in sorted(best)]
