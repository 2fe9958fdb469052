"""Count every request MLflow serves, by endpoint and status, with its latency.

MLflow's own ``--expose-prometheus`` (prometheus-flask-exporter) sees only the Flask
routes; under uvicorn, MLflow serves artifact uploads and downloads, OpenTelemetry
traces, jobs, the gateway and server-info natively in FastAPI, outside Flask. This
middleware wraps the whole ASGI app instead, so both kinds are counted the same way.

- ``mlflow_http_requests_total{method, endpoint, status}``
- ``mlflow_http_request_duration_seconds{method, endpoint, status}`` (histogram: from
  the request's arrival to the last byte of the answer, streamed bodies included)

``endpoint`` is the route's template (``/api/2.0/mlflow/runs/get``,
``/api/2.0/mlflow-artifacts/artifacts/<path:artifact_path>``), never the raw path: a
run id or artifact path must not make a new series. A path no route serves is
``other``, so random paths cannot grow the metrics without bound.

The workers write to ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode: one file per worker); the kit's metrics service reads that folder, through a
read-only volume. MLflow serves no metrics endpoint itself, and the entrypoint empties
the folder at every start of the server.

How it gets into every uvicorn worker: our log config names :func:`install` as a
filter factory; uvicorn applies that config in each worker before it loads the app,
and :func:`install` wraps ``Config.load`` so the loaded app is wrapped once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import lru_cache
from typing import Any

_logger = logging.getLogger("mlops_kit.request_metrics")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Seconds: MLflow calls take milliseconds; uploads and searches may take minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OTHER = "other"
#: Methods counted by name; any other token a client sends (h11 accepts any) is `other`,
#: so requests refused before login cannot grow the metrics without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_INSTALLED = False


class RouteNames:
    """Maps a request to the template of the route that served it.

    MLflow's native FastAPI routes: Starlette leaves the matched route in the scope
    (``scope["route"]``). Everything else went to MLflow's Flask app (mounted at "/"),
    whose URL map names the rule for the path.
    """

    def __init__(self, app: Any) -> None:
        self._flask_adapter: Any = None
        for route in getattr(_unwrap(app), "routes", ()):
            flask_app = getattr(getattr(route, "app", None), "app", None)
            if hasattr(flask_app, "url_map"):
                self._flask_adapter = flask_app.url_map.bind("localhost")
        self._flask_rule = lru_cache(maxsize=4096)(self._match_flask)

    def name(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str) and template:
            return template
        return self._flask_rule(str(scope.get("method", "GET")), str(scope.get("path", "")))

    def _match_flask(self, method: str, path: str) -> str:
        if self._flask_adapter is None:
            return OTHER
        try:
            rule, _args = self._flask_adapter.match(path, method=method, return_rule=True)
        except Exception as exc:  # werkzeug's NotFound, MethodNotAllowed, RequestRedirect
            allowed = getattr(exc, "valid_methods", None)
            if not allowed:
                return OTHER
            # The path exists with other methods (a 405): name it by its rule all the same.
            try:
                rule, _args = self._flask_adapter.match(path, method=allowed[0], return_rule=True)
            except Exception:
                return OTHER
        return str(rule.rule)


def _unwrap(app: Any) -> Any:
    """The app that holds the routes, under uvicorn's and MLflow's middleware wrappers."""
    for _ in range(8):
        if hasattr(app, "routes"):
            return app
        app = getattr(app, "app", None)
        if app is None:
            break
    return app


class RequestMetrics:
    """Pure ASGI middleware: one counter and one histogram observation per HTTP request."""

    def __init__(self, app: ASGIApp, requests: Any, durations: Any) -> None:
        self.app = app
        self._routes: RouteNames | None = None
        self._requests = requests
        self._durations = durations

    def _endpoint(self, scope: Scope) -> str:
        if self._routes is None:
            self._routes = RouteNames(self.app)
        return self._routes.name(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message.get("type") == "http.response.start":
                status = int(message.get("status", 500))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            method = str(scope.get("method", "GET"))
            method = method if method in METHODS else OTHER
            try:
                labels = (method, self._endpoint(scope), str(status))
                self._requests.labels(*labels).inc()
                self._durations.labels(*labels).observe(time.perf_counter() - started)
            except Exception:  # metrics must never break a request
                _logger.debug("could not record request metrics", exc_info=True)


def _metrics() -> tuple[Any, Any] | None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not folder or not os.access(folder, os.W_OK):
        _logger.warning("request metrics off: PROMETHEUS_MULTIPROC_DIR=%r is not a writable folder", folder)
        return None
    from prometheus_client import Counter, Histogram

    labels = ("method", "endpoint", "status")
    requests = Counter("mlflow_http_requests", "HTTP requests MLflow answered, by route and status.", labels)
    durations = Histogram(
        "mlflow_http_request_duration_seconds",
        "Time MLflow took to answer an HTTP request (to the last byte of the answer), by route and status.",
        labels,
        buckets=BUCKETS,
    )
    return requests, durations


def wrap(app: ASGIApp) -> ASGIApp:
    """The app with request metrics, or the app itself when metrics are off or cannot start."""
    try:
        metrics = _metrics()
    except Exception:  # metrics must never keep a worker from serving
        _logger.warning("request metrics off: they could not be set up", exc_info=True)
        return app
    return app if metrics is None else RequestMetrics(app, *metrics)


def install() -> logging.Filter:
    """Wrap ``uvicorn.config.Config.load`` once per process; returns a filter that passes everything."""
    global _INSTALLED
    if not _INSTALLED:
        try:
            from uvicorn.config import Config
        except ImportError:  # not a uvicorn process
            return logging.Filter()
        original = Config.load

        def load(self: Config) -> None:
            original(self)
            if not isinstance(self.loaded_app, RequestMetrics):
                self.loaded_app = wrap(self.loaded_app)

        Config.load = load  # type: ignore[method-assign]
        _INSTALLED = True
    return logging.Filter()
