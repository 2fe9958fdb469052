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

_INSTALLED = False


class RouteNames:
    """Maps a request path to the template of the route that serves it."""

    def __init__(self, app: Any) -> None:
        self._starlette_routes: list[Any] = []
        self._flask_adapter: Any = None
        router_owner = _unwrap(app)
        for route in getattr(router_owner, "routes", ()):
            inner = getattr(route, "app", None)
            flask_app = getattr(inner, "app", None)
            if getattr(route, "path", None) == "" and hasattr(flask_app, "url_map"):
                # The catch-all mount of MLflow's Flask app.
                self._flask_adapter = flask_app.url_map.bind("localhost")
            elif hasattr(route, "matches") and hasattr(route, "path"):
                self._starlette_routes.append(route)
        self.name = lru_cache(maxsize=4096)(self._name)

    def _name(self, method: str, path: str) -> str:
        from starlette.routing import Match

        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        partial = None
        for route in self._starlette_routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                return str(route.path)
            if match == Match.PARTIAL and partial is None:
                partial = str(route.path)  # the path exists, with another method
        if partial is not None:
            return partial
        if self._flask_adapter is not None:
            try:
                rule, _args = self._flask_adapter.match(path, method=method, return_rule=True)
                return str(rule.rule)
            except Exception as exc:  # werkzeug's NotFound, MethodNotAllowed, RequestRedirect
                allowed = getattr(exc, "valid_methods", None)
                if allowed:
                    try:
                        rule, _args = self._flask_adapter.match(path, method=allowed[0], return_rule=True)
                        return str(rule.rule)
                    except Exception:
                        return OTHER
        return OTHER


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

    def _endpoint(self, method: str, path: str) -> str:
        if self._routes is None:
            self._routes = RouteNames(self.app)
        return self._routes.name(method, path)

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
            try:
                labels = (method, self._endpoint(method, str(scope.get("path", ""))), str(status))
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
    """The app with request metrics, or the app itself when metrics are off."""
    metrics = _metrics()
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
