"""The kit's login and request policy, in front of MLflow's basic-auth.

MLflow's basic-auth app calls one configurable ``authorization_function`` for
every protected request, on its Flask routes and (through its bridge) on its
native FastAPI routes. The kit names :func:`authenticate_request` there
(``MLFLOW_AUTH_CONFIG_PATH``, written by the entrypoint). It keeps MLflow's own
password check, users, grants and login cache, and adds what a deployment that
others can reach needs:

- only Basic credentials: any other scheme (``Bearer x``) gets 401, not a 500;
- failed logins are counted per client address (shared by every worker through
  a SQLite file in /dev/shm); past ``MLOPS_KIT_LOGIN_FAILURES_PER_MINUTE`` the
  address gets 429 with Retry-After and no password is checked at all. A password
  being checked counts until its answer is known, but a burst of good logins is not
  taken for guessing: a worker checks one credential once however many requests
  bring it at the same time, and an address held back only by checks still in
  progress is told to retry in a second, not in a minute. A login MLflow has cached
  goes on uncounted only from an address that passed a counted check of it;
- an unknown user costs the same password hash as a known one, so the answer's
  timing does not tell which user names exist;
- requests no user should make: setting or removing a trace's storage-location
  tags (they decide where the server reads the trace's files), an experiment
  artifact location chosen by anyone but the admin, the user list for anyone but
  the admin, and the AI gateway, assistant and demo-data endpoints for anyone but
  the admin (unless ``MLOPS_KIT_GENAI_ENDPOINTS=users``);
- error answers without internals: a 5xx body says only that the server failed,
  a 4xx message is cut before database, SQL or file-system details; the full
  text goes to the server log;
- the authenticated user in the ``X-Mlops-Kit-User`` response header, which the
  proxy's access log records (who, from where, what, result).

The client address is the one the proxy forwards: MLflow listens only on a Unix
socket the proxy shares, and Caddy replaces any X-Forwarded-For a client sends.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from typing import Any, NamedTuple

from flask import Response, after_this_request, g, jsonify, request
from mlops_kit_trace_guard import install as guard_trace_locations
from mlops_kit_webhooks import route_through_egress

_logger = logging.getLogger("mlops_kit.auth")

USER_HEADER = "X-Mlops-Kit-User"
THROTTLE_DB = os.environ.get("MLOPS_KIT_LOGIN_THROTTLE_DB", "/dev/shm/mlops-kit-login-failures.sqlite")
WINDOW_SECONDS = 60.0

#: Trace tags the server sets and reads to find a trace's files: never a client's to change.
RESERVED_TRACE_TAGS = frozenset(
    {"mlflow.artifactLocation", "mlflow.trace.spansLocation", "mlflow.trace.archiveLocation"}
)

_TRACE_TAGS_PATH = re.compile(r"/(?:ajax-)?api/(?P<version>[23])\.0/mlflow/traces/[^/]+/tags")
_TRACE_PATH = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/traces/[^/]+")  # the deprecated end-trace call
_START_TRACE_PATH = re.compile(r"/(?:ajax-)?api/(?P<version>[23])\.0/mlflow/traces")
_CREATE_EXPERIMENT_PATH = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/experiments/create")
_LIST_USERS_PATH = re.compile(r"/(?:ajax-)?api/2\.0/mlflow/users/list")
_GENAI_PATH = re.compile(
    r"/gateway/.*|/(?:ajax-)?api/[23]\.0/mlflow/(?:gateway(?:/.*|-proxy)|assistant(?:/.*)?|demo/.*)"
)

#: Where a message stops being for the client: driver and SQL details, internal paths and URLs.
_INTERNAL_DETAIL = re.compile(
    r"\(psycopg2\.|\(sqlalchemy\.|\[SQL:|\[parameters:|Traceback|/run/postgresql|/mlflow/artifacts"
    r"|/var/tmp/|/tmp/|kit-s3://|s3://|https?://(?!localhost)[^\s'\"]*:\d+"
)


# MLflow imports this module in every worker (its authorization_function), before the
# first request is handled: the place for the kit's other server-side settings. Both
# reach into MLflow internals that the kit's unit tests pin for its MLflow release; on
# another release (the older-MLflow test image) a missing one is logged, loudly.
for _install in (route_through_egress, guard_trace_locations):
    try:
        _install()
    except (ImportError, AttributeError) as _missing:
        _logger.error("mlops-kit: %s could not be installed on this MLflow: %r", _install.__name__, _missing)


# ---- the authorization function ----------------------------------------------------------


def authenticate_request() -> Any:
    """MLflow's ``authorization_function``: an ``Authorization`` to go on, or a Response to stop."""
    decided = g.get("mlops_kit_auth")
    if decided is not None:  # MLflow asks again in its after-request handlers
        return decided
    decided = _decide()
    g.mlops_kit_auth = decided
    return decided


def _decide() -> Any:
    from mlflow.server import auth

    credentials = request.authorization
    if credentials is None or credentials.type != "basic" or not credentials.username:
        # No login, or a scheme MLflow's basic-auth cannot check (``Bearer x``).
        return auth.make_basic_auth_response()

    # A login this worker verified moments ago for this same address (MLflow's per-worker
    # cache, and the kit's note of where the check came from) costs nothing and is no
    # guess: it goes on even from an address over its limit (clients on the Docker host all
    # share one address), and takes no part in the count. From any other address it is
    # checked and counted like any login: otherwise an address over its limit could test
    # guesses against the cache for free, at full speed, while the user is active.
    username, client = credentials.username, client_address()
    key = _cache_key(username, credentials.password or "")  # one HMAC per request, used below
    if _verified_recently(key) and _checked_from(client, key):
        result = auth.authenticate_request_basic_auth()
    else:
        # A sweep's workers all start at once with the same login: the first request
        # checks it, the others of this worker wait for that answer and find it cached.
        with _one_check_at_a_time(key):
            if _verified_recently(key) and _checked_from(client, key):
                result = auth.authenticate_request_basic_auth()
            else:
                result = _check_password(username, key, client)
    if isinstance(result, Response):  # a failed login, or a cached one removed meanwhile
        return result

    username = str(result.username)
    refused = refusal(request.method, request.path, _request_message, is_admin=lambda: _is_admin(username))
    _after(_finish_response(username))
    return refused or result


def _check_password(username: str, key: Any, client: str) -> Any:
    """MLflow's password check (or its cache), counted against the client's address."""
    from mlflow.server import auth

    # The attempt is counted as a failure before the password is checked and the
    # count is given back on success: concurrent guesses cannot all slip past the limit.
    reservation = failures().reserve(client)
    if reservation.wait:
        return _too_many_failures(reservation)
    try:
        result = auth.authenticate_request_basic_auth()
    except BaseException:
        failures().confirm(reservation.attempt)
        raise
    if isinstance(result, Response):
        failures().confirm(reservation.attempt)
        _equalise_unknown_user(username)
        _logger.warning("login failed for user %r from %s", username, client)
        return result
    failures().release(reservation.attempt)
    _remember_check(client, key)
    return result


#: (client address, MLflow's login-cache key) -> when this worker last checked that login for it.
_CHECKED: dict[tuple[str, Any], float] = {}
_CHECKED_LOCK = threading.Lock()


def _cache_key(username: str, password: str) -> Any:
    """MLflow's own login-cache key (the user and an HMAC of the password), or None."""
    from mlflow.server import auth

    key_of = getattr(auth, "_auth_cache_key", None)
    return None if key_of is None else key_of(username, password)


def _cache_seconds() -> float:
    from mlflow.server import auth

    config = getattr(auth, "auth_config", None)
    return float(getattr(config, "auth_cache_ttl_seconds", 0) or 0)


def _remember_check(client: str, key: Any) -> None:
    """Note that ``client`` passed a counted check of this login (its ``_cache_key``) in this worker."""
    if key is None:
        return
    with _CHECKED_LOCK:
        if len(_CHECKED) > 10_000:
            _CHECKED.clear()
        _CHECKED[(client, key)] = time.monotonic()


def _checked_from(client: str, key: Any) -> bool:
    """True when ``client`` passed a counted check of this login in this worker, within MLflow's cache time."""
    if key is None:
        return False
    with _CHECKED_LOCK:
        checked = _CHECKED.get((client, key))
    return checked is not None and time.monotonic() - checked <= _cache_seconds()


_CHECKS: dict[Any, list[Any]] = {}  # credential key -> [its lock, requests holding or waiting for it]
_CHECKS_LOCK = threading.Lock()


@contextmanager
def _one_check_at_a_time(key: Any) -> Iterator[None]:
    """Hold the lock of this credential in this worker (no lock when MLflow caches no login).

    The key is MLflow's own cache key (an HMAC of the password with a per-process key):
    no password is kept here. Different credentials are still checked in parallel. The
    wait is bounded (``CHECK_WAIT_SECONDS``), and there is none on the server's event loop
    (MLflow checks logins of its FastAPI routes there): past it the check goes on
    without the lock, counted as any other.
    """
    from mlflow.server import auth

    if key is None or getattr(auth, "_USER_AUTH_CACHE", None) is None:
        yield
        return
    with _CHECKS_LOCK:
        entry = _CHECKS.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    acquired = False
    try:
        acquired = entry[0].acquire(timeout=CHECK_WAIT_SECONDS) if not _on_event_loop() else entry[0].acquire(False)
        yield
    finally:
        if acquired:
            entry[0].release()
        with _CHECKS_LOCK:
            entry[1] -= 1
            if entry[1] == 0:
                del _CHECKS[key]


#: How long a request waits for another request's check of the same login (one hash takes ~0.1 s).
CHECK_WAIT_SECONDS = 2.0


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def client_address() -> str:
    """The client's address as the proxy saw it (the proxy overwrites X-Forwarded-For);
    IPv6 clients are counted by their /64, which one host usually holds whole."""
    forwarded = request.headers.get("X-Forwarded-For", "")
    address = forwarded.split(",")[0].strip() or (request.remote_addr or "")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def _verified_recently(key: Any) -> bool:
    """True when MLflow's per-worker login cache holds this exact credential (its ``_cache_key``)."""
    from mlflow.server import auth

    cache = getattr(auth, "_USER_AUTH_CACHE", None)
    lock = getattr(auth, "_USER_AUTH_CACHE_LOCK", None)
    if cache is None or key is None or lock is None:
        return False
    with lock:
        return cache.get(key) is not None


#: The request messages the policy reads, by the name it asks for them.
_MESSAGES = {
    "create_experiment": "CreateExperiment",
    "set_trace_tag_2": "SetTraceTag",
    "set_trace_tag_3": "SetTraceTagV3",
    "delete_trace_tag_2": "DeleteTraceTag",
    "delete_trace_tag_3": "DeleteTraceTagV3",
    "start_trace_2": "StartTrace",
    "start_trace_3": "StartTraceV3",
    "end_trace_2": "EndTrace",
}


def _request_message(kind: str) -> dict[str, Any]:
    """The request's body as MLflow's handler will read it (camelCase names, a body sent as
    a JSON string), as a dict with the proto's field names. Only called for the JSON calls
    the policy reads: reading a body consumes the stream an upload handler would read."""
    from google.protobuf.json_format import MessageToDict
    from mlflow.protos import service_pb2
    from mlflow.server.handlers import _get_request_message

    try:
        message = _get_request_message(getattr(service_pb2, _MESSAGES[kind])())
    except Exception:  # MLflow's handler refuses the same body the same way
        return {}
    return MessageToDict(message, preserving_proto_field_name=True)


def _is_admin(username: str) -> bool:
    from mlflow.server.auth import store

    try:
        return bool(store.get_user(username).is_admin)
    except Exception:  # a user removed meanwhile is no admin
        return False


def _after(hook: Callable[[Response], Response]) -> None:
    try:
        after_this_request(hook)
    except Exception:  # the FastAPI bridge's synthetic context runs no after-request hooks
        pass


# ---- the policy -------------------------------------------------------------------------------


def refusal(
    method: str, path: str, body: Callable[[str], dict[str, Any]], is_admin: Callable[[], bool]
) -> Response | None:
    """The answer to a request no user (or no user but the admin) may make; None lets it through.

    ``body(kind)`` reads the request message of that kind (see ``_MESSAGES``); it is called
    only for the calls whose body matters here, never for artifact uploads.
    """
    reserved = _reserved_trace_tags(method, path, body)
    if reserved:
        return _error(
            400,
            "INVALID_PARAMETER_VALUE",
            f"Tag '{reserved}' is set by the server and cannot be set or removed by a client.",
        )
    if (
        method == "POST"
        and _CREATE_EXPERIMENT_PATH.fullmatch(path)
        and body("create_experiment").get("artifact_location")
    ):
        if not is_admin():
            return _error(
                403,
                "PERMISSION_DENIED",
                "Experiments store their artifacts where the server decides: leave artifact_location empty "
                "(only the admin may choose one).",
            )
    if _LIST_USERS_PATH.fullmatch(path) and not is_admin():
        return _error(403, "PERMISSION_DENIED", "Only the admin may list users.")
    if _GENAI_PATH.fullmatch(path) and os.environ.get("MLOPS_KIT_GENAI_ENDPOINTS", "admin") != "users":
        if not is_admin():
            return _error(
                403,
                "PERMISSION_DENIED",
                "The AI gateway, assistant and demo-data endpoints are for the admin on this server "
                "(the operator can open them with MLOPS_KIT_GENAI_ENDPOINTS=users).",
            )
    return None


def _reserved_trace_tags(method: str, path: str, read: Callable[[str], dict[str, Any]]) -> str | None:
    """A reserved tag the request would set or remove on a trace (the trace guard also
    refuses to read from a location that got there some other way)."""
    keys: list[Any] = []
    if method in ("PATCH", "DELETE") and (match := _TRACE_TAGS_PATH.fullmatch(path)):
        verb = "set" if method == "PATCH" else "delete"
        keys = [read(f"{verb}_trace_tag_{match.group('version')}").get("key")]
    elif method == "POST" and (match := _START_TRACE_PATH.fullmatch(path)):
        body = read(f"start_trace_{match.group('version')}")
        # v3: {"trace": {"trace_info": {"tags": {key: value}}}}; v2: {"tags": [{"key": k, "value": v}]}
        trace = body.get("trace")
        info = trace.get("trace_info") if isinstance(trace, dict) else None
        tags = info.get("tags") if isinstance(info, dict) else None
        keys = list(tags) if isinstance(tags, dict) else []
        keys += [tag.get("key") for tag in body.get("tags", []) if isinstance(tag, dict)]
    elif method == "PATCH" and _TRACE_PATH.fullmatch(path):
        keys = [tag.get("key") for tag in read("end_trace_2").get("tags", []) if isinstance(tag, dict)]
    return next((key for key in keys if key in RESERVED_TRACE_TAGS), None)


def _error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error_code": code, "message": message})
    response.status_code = status
    return response


# ---- answers ------------------------------------------------------------------------------------


def _finish_response(username: str) -> Callable[[Response], Response]:
    def finish(response: Response) -> Response:
        response.headers[USER_HEADER] = username
        return sanitise_error(response)

    return finish


def sanitise_error(response: Response) -> Response:
    """Keep internals (SQL, driver errors, paths, internal URLs) out of error answers."""
    if response.status_code < 400 or response.mimetype != "application/json" or response.direct_passthrough:
        return response
    try:
        body = response.get_json(silent=True)
    except Exception:
        return response
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return response
    message = body["message"]
    cleaned = public_message(response.status_code, message, str(body.get("error_code", "")))
    if cleaned != message:
        _logger.warning("%s %s answered %s: %s", request.method, request.path, response.status_code, message)
        body["message"] = cleaned
        response.set_data(jsonify(body).get_data())
    return response


#: 5xx answers that are part of the protocol, not failures: clients act on their message
#: (a 501 "not supported" makes the MLflow client fall back to a proxied upload).
PROTOCOL_ERROR_CODES = frozenset({"NOT_IMPLEMENTED", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})


def public_message(status: int, message: str, error_code: str = "") -> str:
    """What a client may read of an error message."""
    if status >= 500 and error_code not in PROTOCOL_ERROR_CODES:
        return "The server failed to handle this request; its log has the details."
    cut = _INTERNAL_DETAIL.search(message)
    if cut is None:
        return message
    kept = message[: cut.start()].rstrip(" .:;,(-")
    if kept.endswith("Error"):  # "... Error: (psycopg2..." -> drop the dangling label
        kept = kept[: -len("Error")].rstrip(" .:;,(-")
    return (
        f"{kept}. (Details are in the server log.)" if kept else "The request failed; the server log has the details."
    )


def _too_many_failures(reservation: Reservation) -> Response:
    seconds = max(1, math.ceil(reservation.wait))
    what = "logins being checked at once" if reservation.in_flight else "failed logins"
    response = Response(
        f"Too many {what} from this address: try again in {seconds} s.\n",
        status=429,
        mimetype="text/plain",
    )
    response.headers["Retry-After"] = str(seconds)
    return response


# ---- timing ------------------------------------------------------------------------------------

_DUMMY_HASH: str | None = None


def _equalise_unknown_user(username: str) -> None:
    """Spend on an unknown user the same password hash a known user's wrong password costs."""
    global _DUMMY_HASH
    from mlflow.server.auth import store
    from werkzeug.security import check_password_hash, generate_password_hash

    if store.has_user(username):
        return
    if _DUMMY_HASH is None:
        _DUMMY_HASH = generate_password_hash(os.urandom(16).hex())
    check_password_hash(_DUMMY_HASH, "not-the-password")


# ---- failed-login counts ---------------------------------------------------------------------


class Reservation(NamedTuple):
    """The answer of :meth:`FailureCounter.reserve`."""

    #: Seconds the client must wait (0: the check may go on).
    wait: float
    #: The attempt to ``release`` or ``confirm`` (None when refused).
    attempt: int | None
    #: Refused only because of checks still in progress (a short wait), not of failures.
    in_flight: bool = False


class FailureCounter:
    """Failed logins per client address in the last minute, shared by every worker process.

    An attempt is counted from the moment its check starts (``reserve``): as in progress
    until ``confirm`` (it failed) or ``release`` (it succeeded, and is taken back). An address
    at its limit only because of checks in progress is asked to wait ``IN_FLIGHT_WAIT``
    seconds, the time such a check takes; an address at its limit of failures waits until
    the oldest leaves the window. An attempt in progress for longer than ``STALE_SECONDS``
    (its worker died) counts as a failure.
    """

    IN_FLIGHT_WAIT = 1.0
    STALE_SECONDS = 10.0

    def __init__(self, path: str, limit: int, window: float = WINDOW_SECONDS) -> None:
        self.path = path
        self.limit = limit
        self.window = window
        with closing(self._connect()) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS attempts"
                " (client TEXT NOT NULL, at REAL NOT NULL, in_progress INTEGER NOT NULL DEFAULT 1)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS attempts_by_client ON attempts (client, at)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again (0: now)."""
        now = time.time() if now is None else now
        with closing(self._connect()) as db:
            return self._wait(db, client, now)[0]

    def _wait(self, db: sqlite3.Connection, client: str, now: float) -> tuple[float, bool]:
        rows = db.execute(
            "SELECT at, in_progress FROM attempts WHERE client = ? AND at > ? ORDER BY at DESC",
            (client, now - self.window),
        ).fetchall()
        if len(rows) < self.limit:
            return 0.0, False
        failed = [at for at, in_progress in rows if not in_progress or at <= now - self.STALE_SECONDS]
        if len(failed) >= self.limit:
            return max(0.0, float(failed[self.limit - 1]) + self.window - now), False
        return self.IN_FLIGHT_WAIT, True

    def reserve(self, client: str, now: float | None = None) -> Reservation:
        """Count an attempt as in progress, unless ``client`` is at its limit (then: how long to wait).

        Check and count are one transaction, so concurrent attempts cannot all pass the
        check first. ``release`` the attempt on success, ``confirm`` it on failure.
        """
        now = time.time() if now is None else now
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                wait, in_flight = self._wait(db, client, now)
                attempt = None
                if not wait:
                    attempt = db.execute("INSERT INTO attempts (client, at) VALUES (?, ?)", (client, now)).lastrowid
                    db.execute("DELETE FROM attempts WHERE at <= ?", (now - self.window,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Reservation(wait, attempt, in_flight)

    def release(self, attempt: int | None) -> None:
        """Take back an attempt that turned out to be a good login."""
        if attempt is None:
            return
        with closing(self._connect()) as db:
            db.execute("DELETE FROM attempts WHERE rowid = ?", (attempt,))

    def confirm(self, attempt: int | None) -> None:
        """Count an attempt that turned out to be a failed login as one, for the whole window."""
        if attempt is None:
            return
        with closing(self._connect()) as db:
            db.execute("UPDATE attempts SET in_progress = 0 WHERE rowid = ?", (attempt,))


_COUNTER: FailureCounter | None = None


def failures() -> FailureCounter:
    global _COUNTER
    if _COUNTER is None:
        _COUNTER = FailureCounter(THROTTLE_DB, int(os.environ.get("MLOPS_KIT_LOGIN_FAILURES_PER_MINUTE", "10")))
    return _COUNTER
