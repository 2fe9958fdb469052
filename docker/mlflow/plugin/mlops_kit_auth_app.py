"""kit-auth: MLflow's basic-auth app, making the same decisions with fewer queries.

``mlflow server --app-name kit-auth`` (the ``mlflow.app`` entry point of this plugin) serves
exactly MLflow's basic-auth app: its users, passwords, grants, database, REST API, login
cache and every validator stay MLflow's own. What changes is how four of its steps are done:

- **a run's experiment**: MLflow's run validators load the whole run (params, tags, latest
  metrics, inputs: seven queries) only to read its experiment id. Here one indexed query
  (``runs.run_uuid`` is the primary key) answers it, and the answer is kept (a run never
  changes experiment). A run that does not exist is still denied, as MLflow denies it.
- **the user and their grants** (``store.get_user``, ``store.list_grants``): asked up to
  five times per request; here kept for a few seconds (MLOPS_KIT_AUTH_GRANTS_CACHE_SECONDS,
  default 10) and dropped in every worker as soon as any user, grant or role changes
  through the server (a generation stamp in /dev/shm that every write of the auth store
  moves forward). A change written around the server (``mlflow-reset-admin``) is seen
  within those seconds.
- **a run answer's redaction**: for every user but the admin, MLflow parses each
  ``runs/get`` and ``runs/search`` answer whole to withhold the models it may name. An
  answer that names no model is left as it is without parsing.
- **the verified-password cache** stays MLflow's, and is now also emptied in every worker
  when a user changes (MLflow empties only the worker that made the change).

Verified against one MLflow release (``mlops_kit_verified.VERIFIED_MLFLOW``). On any other, nothing is
replaced: the app is MLflow's own basic-auth, and a warning says so in the log. An
upgrade never runs an unverified fast path.

``mlflow server`` does two things only for an app named ``basic-auth``: it creates the
admin before starting workers, and (with job execution on) shares one internal token with
them. This module does both when ``mlflow server`` imports it to look at the factory.
"""

from __future__ import annotations

import inspect
import logging
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from mlops_kit_verified import fallback_reason

_logger = logging.getLogger("mlops_kit.auth_app")

GRANTS_CACHE_SECONDS = float(os.environ.get("MLOPS_KIT_AUTH_GRANTS_CACHE_SECONDS", "10"))
GENERATION_FILE = os.environ.get("MLOPS_KIT_AUTH_GENERATION_FILE", "/dev/shm/mlops-kit-auth-generation")
RUN_CACHE_SIZE = 50_000
#: Auth store methods that only read; every other public method may change a user, grant or role.
READ_PREFIXES = ("get_", "list_", "has_", "is_", "user_has_", "authenticate_", "init_db")
#: Where the fast paths are (for the log and the tests).
STATE: dict[str, Any] = {"fast_paths": False, "reason": ""}


# ---- the generation stamp: one per host, moved by any write ----------------------------------


def generation() -> int:
    """The stamp of the last change to users, grants or roles (0: none since the server started)."""
    try:
        return os.stat(GENERATION_FILE).st_mtime_ns
    except OSError:
        return 0


def bump_generation() -> None:
    """Tell every worker that users, grants or roles changed."""
    now = time.time_ns()
    try:
        with open(GENERATION_FILE, "a"):
            pass
        # Strictly forward, even when two changes fall into one clock tick.
        os.utime(GENERATION_FILE, ns=(now, max(now, generation() + 1)))
    except OSError as error:
        _logger.warning(
            "could not mark a change of users or grants (%s): caches expire within %.0f s", error, GRANTS_CACHE_SECONDS
        )


class TimedCache:
    """Answers kept for ``ttl`` seconds and while the generation stamp stays where it was."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self.entries: dict[Any, tuple[float, int, Any]] = {}
        self.lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        stamp = generation()
        now = time.monotonic()
        with self.lock:
            found = self.entries.get(key)
        if found is not None and found[0] > now and found[1] == stamp:
            return found[2]
        # The stamp is read before the database: a change committed meanwhile moves it on,
        # so what is loaded now is never kept past that change.
        value = load()
        with self.lock:
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[key] = (now + self.ttl, stamp, value)
        return value


# ---- the fast paths -------------------------------------------------------------------------


def cache_user_and_grants(auth: Any) -> None:
    """``store.get_user`` and ``store.list_grants`` from a short cache; writes move the stamp."""
    store = auth.store
    users, grants = TimedCache(GRANTS_CACHE_SECONDS), TimedCache(GRANTS_CACHE_SECONDS)
    get_user, list_grants = store.get_user, store.list_grants

    def cached_get_user(username: str) -> Any:
        return users.get(username, lambda: get_user(username))

    def cached_list_grants(user_id: int, workspace: str, resource_types: Any) -> list[Any]:
        key = (user_id, workspace, frozenset(resource_types))
        # A fresh list each time: a caller may add to it.
        return list(grants.get(key, lambda: list_grants(user_id, workspace, resource_types)))

    for name in dir(store):
        method = getattr(store, name)
        # Only the store's own methods: not what init_db sets on it later (its session maker).
        if name.startswith("_") or name.startswith(READ_PREFIXES) or not inspect.ismethod(method):
            continue
        setattr(store, name, _moving_the_stamp(method))
    store.get_user, store.list_grants = cached_get_user, cached_list_grants

    authenticate = auth._authenticate_cached
    seen = {"stamp": generation()}

    def authenticate_fresh(username: str, password: str) -> Any:
        stamp = generation()
        if stamp != seen["stamp"] and auth._USER_AUTH_CACHE is not None:
            # A user changed somewhere: no verified password of before is trusted.
            with auth._USER_AUTH_CACHE_LOCK:
                auth._USER_AUTH_CACHE.clear()
        seen["stamp"] = stamp
        return authenticate(username, password)

    auth._authenticate_cached = authenticate_fresh


def _moving_the_stamp(method: Callable[..., Any]) -> Callable[..., Any]:
    def write(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        finally:
            # Also after a failure: a write may have gone in before it failed.
            bump_generation()

    write.__name__ = getattr(method, "__name__", "write")
    write.__doc__ = method.__doc__
    return write


def look_up_runs_by_id(auth: Any) -> None:
    """MLflow's ``_run_requirement`` with the run's experiment from one indexed, cached query."""
    import sqlalchemy as sa
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    experiments: OrderedDict[str, str] = OrderedDict()
    lock = threading.Lock()
    query = sa.text("SELECT experiment_id FROM runs WHERE run_uuid = :run_id")

    def experiment_of(run_id: str) -> str | None:
        with lock:
            if run_id in experiments:
                experiments.move_to_end(run_id)
                return experiments[run_id]
        if not isinstance(run_id, str):
            # MLflow's get_run says what is wrong with the request; so does this.
            auth._get_tracking_store().get_run(run_id)
        with auth._get_tracking_store().engine.connect() as conn:
            found = conn.execute(query, {"run_id": run_id}).scalar()
        if found is None:
            return None
        with lock:
            experiments[run_id] = str(found)
            if len(experiments) > RUN_CACHE_SIZE:
                experiments.popitem(last=False)
        return str(found)

    def run_requirement(run_id: str, action: str) -> Any:
        try:
            experiment_id = experiment_of(run_id)
        except MlflowException as error:
            if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        if experiment_id is None:
            return None
        experiment = (auth.RESOURCE_TYPE_EXPERIMENT, experiment_id)
        return experiment, [
            auth.Requirement(auth.RESOURCE_TYPE_EXPERIMENT, experiment_id, "read"),
            auth.Requirement(auth.RESOURCE_TYPE_RUN, "*", action, fallback_if_no_grant=(experiment,)),
        ]

    auth._run_requirement = run_requirement


#: How a response names a logged model of a run (proto field names and their JSON names).
MODEL_LINK_KEYS = tuple(
    f'"{name}"'.encode()
    for name in ("model_inputs", "modelInputs", "model_outputs", "modelOutputs", "model_id", "modelId")
)


def parse_only_runs_naming_a_model(auth: Any) -> None:
    """MLflow's redaction of ``runs/get`` and ``runs/search`` answers, skipped when it has nothing to do.

    For every user but the admin, MLflow parses the whole answer into protobuf messages
    (about 130 ms for a page of 100 runs with 20 metrics and 20 params each) to withhold the
    model inputs, outputs and metric model ids a user may not see, and changes the answer
    only if there is one. An answer whose text holds none of those keys has none, so it is
    left as it is without parsing; any other goes through MLflow's own redaction.
    """
    redactions = {auth.redact_get_run_model_links, auth.redact_search_runs_model_links}

    def only_if_naming_a_model(redact: Callable[[Any], None]) -> Callable[[Any], None]:
        def redact_if_naming_a_model(response: Any) -> None:
            body = response.get_data()
            if any(key in body for key in MODEL_LINK_KEYS):
                redact(response)

        redact_if_naming_a_model.__name__ = f"{redact.__name__}_if_naming_a_model"
        return redact_if_naming_a_model

    for table in (auth.AFTER_REQUEST_HANDLERS, auth.PARAMETERIZED_AFTER_REQUEST_HANDLERS):
        for route, handler in list(table.items()):
            if handler in redactions:
                table[route] = only_if_naming_a_model(handler)


def install_fast_paths(auth: Any, mlflow_version: str) -> bool:
    """Put the fast paths in place on MLflow's basic-auth module, or say in the log why not."""
    reason = fallback_reason(mlflow_version)
    if reason:
        STATE.update(fast_paths=False, reason=reason)
    else:
        cache_user_and_grants(auth)
        parse_only_runs_naming_a_model(auth)
        if hasattr(auth._get_tracking_store(), "engine"):
            look_up_runs_by_id(auth)
        STATE.update(fast_paths=True, reason="")
        return True
    _logger.warning("kit-auth: MLflow's own code paths only: %s", STATE["reason"])
    return False


def create_app() -> Any:
    """The app ``mlflow server --app-name kit-auth`` serves in each worker."""
    import mlflow
    from mlflow.server import auth

    install_fast_paths(auth, mlflow.__version__)
    return auth.create_app()


def _prepare_server() -> None:
    """What ``mlflow server`` does before starting workers for basic-auth, done for kit-auth.

    Each step only where this MLflow has it (an older release bootstraps in the workers).
    """
    try:
        from mlflow.server import _bootstrap_basic_auth
    except ImportError:
        pass
    else:
        _bootstrap_basic_auth()
        os.environ[BOOTSTRAPPED] = "true"
    if os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "").lower() == "true":
        os.environ.setdefault("_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN", secrets.token_hex(32))
    # A fresh stamp: caches of a server that ran before are no concern of this one.
    bump_generation()


#: Set for the workers once the admin exists (MLflow's own variable, by name: older releases lack it).
BOOTSTRAPPED = "_MLFLOW_AUTH_ADMIN_BOOTSTRAPPED"

# `mlflow server` imports this module in its own process to see whether create_app is a
# factory; the workers import it again (with the admin already bootstrapped).
if os.path.basename(sys.argv[0]) == "mlflow" and sys.argv[1:2] == ["server"] and not os.environ.get(BOOTSTRAPPED):
    _prepare_server()
