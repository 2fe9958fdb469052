"""Trace files are read only from where the server put them.

A trace's spans and attachments live under ``<experiment artifact location>/traces/
<trace id>/``; the trace's tags ``mlflow.artifactLocation`` and (after archival)
``mlflow.trace.archiveLocation`` say where, and MLflow reads whatever they say.
Clients can reach those tags by more ways than one (set-trace-tag, the deprecated
end-trace call, ``mlflow.traceTag.*`` attributes of OTLP spans), and a user who
points their own trace at another user's folder, or at ``file:///``, would read
that through ``get-trace-artifact``. The kit's request policy refuses the obvious
writes; this module is the check that does not depend on finding every write:
MLflow's two resolvers of a trace's locations are wrapped so that a location other
than the trace's own folder is refused (403) before any file is opened.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

RESOLVERS = ("get_artifact_uri_for_trace", "get_archive_uri_for_trace")
_GUARDED = "__mlops_kit_guarded__"


def own_folder(trace_info: Any) -> str:
    """``<experiment artifact location>/traces/<trace id>``: where the server stores a trace's files."""
    from mlflow.server.handlers import _get_tracking_store
    from mlflow.utils.uri import append_to_uri_path

    experiment = _get_tracking_store().get_experiment(trace_info.experiment_id)
    return str(append_to_uri_path(experiment.artifact_location, "traces", trace_info.trace_id))


def is_inside(uri: str, folder: str) -> bool:
    """``uri`` is ``folder`` or below it, with no ``..`` segment to climb out."""
    if any(part == ".." for part in uri.replace("\\", "/").split("/")):
        return False
    return uri == folder or uri.startswith(folder.rstrip("/") + "/")


def guarded(resolve: Callable[[Any], str], folder_of: Callable[[Any], str] = own_folder) -> Callable[[Any], str]:
    """``resolve``, refusing a location outside the trace's own folder."""
    if getattr(resolve, _GUARDED, False):
        return resolve

    def resolve_checked(trace_info: Any) -> str:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

        uri = resolve(trace_info)
        if not is_inside(str(uri), folder_of(trace_info)):
            raise MlflowException(
                f"Trace '{trace_info.trace_id}' names a storage location outside its own folder; "
                "its files are not read from there.",
                error_code=PERMISSION_DENIED,
            )
        return uri

    setattr(resolve_checked, _GUARDED, True)
    resolve_checked.__wrapped__ = resolve  # type: ignore[attr-defined]
    return resolve_checked


def install() -> list[str]:
    """Wrap the resolvers where MLflow defined and imported them; returns what was wrapped."""
    from mlflow.server import handlers
    from mlflow.store.tracking import sqlalchemy_store
    from mlflow.tracing.utils import artifact_utils

    wrapped = []
    for module in (artifact_utils, handlers, sqlalchemy_store):
        for name in RESOLVERS:
            if hasattr(module, name):
                setattr(module, name, guarded(getattr(module, name)))
                wrapped.append(f"{module.__name__}.{name}")
    return wrapped
