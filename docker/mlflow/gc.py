#!/opt/mlflow/bin/python
"""mlflow-gc: retention and garbage collection of the kit's MLflow, as a one-shot job.

    mlflow-gc --older-than-seconds N [--retention-days D] [--no-retention] [--dry-run]

Runs in the MLflow image with the server's own settings (the backend store on the
PostgreSQL socket, MLFLOW_ARTIFACTS_DESTINATION: the artifacts volume or the bucket)
and ends with one JSON line: what retention soft-deleted, what gc removed, what it
kept and why, and the bytes freed.

Why not `mlflow gc`: it resolves each run's ``mlflow-artifacts:/`` URI through the
tracking server's HTTP API (it needs a tracking URI and, with auth, a login), hangs
on a missing artifact folder (mlflow#15461), leaves the artifacts of logged models and
deleted traces behind (mlflow#17240), and removes runs that back a registered model
version. This reads the same rows, deletes the artifacts straight from the store the
server uses, and removes the rows with MLflow's own store code.

Retention (step 1) soft-deletes finished runs older than their experiment's
``mlops-kit.retention-days`` tag (or --retention-days): never running runs, never a run
tagged ``mlops-kit.keep`` (or under one), never a run a model version needs. They then
wait --older-than-seconds in the deleted stage, like any deleted run, before step 2
removes them.

Order per item, in one transaction: lock its rows (and its experiment's), check it is
still due, delete its rows, delete its files, commit. A failure before the files go
changes nothing; a failure after them leaves a deleted item with fewer files (the next
gc finishes it); never files without the rows that name them, nor a restored item
without its files.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

KEEP_TAG = "mlops-kit.keep"
RETENTION_TAG = "mlops-kit.retention-days"
PARENT_TAG = "mlflow.parentRunId"
FINISHED = ("FINISHED", "FAILED", "KILLED")
SCHEME = "mlflow-artifacts:"
#: How many ids of each kind the JSON lists (the counts are always complete).
LISTED = 1000
DAY_MS = 86_400_000

logger = logging.getLogger("mlflow-gc")


# ---- where artifacts are ------------------------------------------------------------


def store_path(uri: str | None) -> str | None:
    """The path of an ``mlflow-artifacts:`` URI inside the kit's artifact store (None: elsewhere)."""
    if not uri or not uri.startswith(SCHEME):
        return None
    rest = uri[len(SCHEME) :]
    if rest.startswith("//"):
        # mlflow-artifacts://host:port/path: the host part names the server, not the path.
        rest = rest[2:].partition("/")[2]
    parts = [p for p in rest.split("/") if p and p != "."]
    if ".." in parts:
        return None
    return "/".join(parts)


def under(path: str, root: str) -> bool:
    """``path`` is ``root`` or inside it."""
    return path == root or path.startswith(root + "/") or root == ""


class LiveSet:
    """Paths something live needs: a deletion of P is unsafe when one of them is P or inside P."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(set(paths))

    def inside(self, path: str) -> str | None:
        """A live path equal to or inside ``path``, if any."""
        if path == "":
            return self.paths[0] if self.paths else None
        for probe in (path, path + "/"):
            i = bisect.bisect_left(self.paths, probe)
            if i < len(self.paths) and (self.paths[i] == path or self.paths[i].startswith(path + "/")):
                return self.paths[i]
        return None


@dataclass
class Usage:
    files: int = 0
    bytes: int = 0

    def add(self, other: Usage) -> None:
        self.files += other.files
        self.bytes += other.bytes


class LocalArtifacts:
    """The artifacts volume (or NFS export) mounted at MLFLOW_ARTIFACTS_DESTINATION."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def _abs(self, path: str) -> str:
        """The path on disk; its folders are resolved, its last part never (a link is removed, not followed)."""
        parts = [p for p in path.split("/") if p]
        parent = os.path.realpath(os.path.join(self.root, *parts[:-1]))
        if not under(parent, self.root) or ".." in parts:
            raise ValueError(f"{path} leaves the artifact store")
        return os.path.join(parent, parts[-1]) if parts else parent

    def usage(self, path: str) -> Usage:
        usage = Usage()
        full = self._abs(path)
        if os.path.islink(full) or os.path.isfile(full):
            return Usage(1, os.lstat(full).st_size)
        # A folder that does not exist is nothing to free (mlflow#15461 hangs here).
        for folder, _dirs, files in os.walk(full):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    usage.add(Usage(1, os.lstat(os.path.join(folder, name)).st_size))
        return usage

    def delete(self, path: str) -> Usage:
        if not path.strip("/"):
            raise ValueError("refusing to delete the whole artifact store")
        usage = self.usage(path)
        full = self._abs(path)
        if os.path.isdir(full) and not os.path.islink(full):
            # rmtree never follows links inside the folder; it removes the links themselves.
            shutil.rmtree(full, ignore_errors=False, onerror=_missing_is_fine)
        elif os.path.lexists(full):
            os.unlink(full)
        return usage

    def children(self, path: str) -> dict[str, float]:
        """Names in folder ``path`` and the newest modification time (s) of anything below each."""
        full = self._abs(path)
        result: dict[str, float] = {}
        try:
            entries = list(os.scandir(full))
        except (FileNotFoundError, NotADirectoryError):
            return result
        for entry in entries:
            newest = entry.stat(follow_symlinks=False).st_mtime
            if not entry.is_dir(follow_symlinks=False):
                result[entry.name] = newest
                continue
            for folder, dirs, files in os.walk(entry.path):
                for name in (*dirs, *files):
                    with contextlib.suppress(FileNotFoundError):
                        newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
            result[entry.name] = newest
        return result


def _missing_is_fine(function: Any, path: str, excinfo: Any) -> None:
    if not isinstance(excinfo[1], FileNotFoundError):
        raise excinfo[1]


class BucketArtifacts:
    """The bucket (s3, minio modes), through the S3 client MLflow's own repository builds."""

    def __init__(self, destination: str) -> None:
        from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

        uri = "s3://" + destination.split("://", 1)[1]
        repository = S3ArtifactRepository(uri)
        self.client = repository._get_s3_client()
        self.bucket, self.prefix = repository.parse_s3_compliant_uri(uri)
        self.prefix = self.prefix.strip("/")

    def _key(self, path: str) -> str:
        return "/".join(p for p in (self.prefix, path) if p)

    def _objects(self, path: str) -> Iterator[dict[str, Any]]:
        key = self._key(path)
        # A folder is everything under "key/" (never "key2/..."); the key itself may be an object.
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=key + "/" if key else ""):
            yield from page.get("Contents", [])
        if key:
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=key)
            except Exception as error:  # botocore's ClientError: 404 means no such object
                if getattr(error, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                    raise
            else:
                yield {"Key": key, "Size": head.get("ContentLength", 0), "LastModified": head["LastModified"]}

    def usage(self, path: str) -> Usage:
        usage = Usage()
        for item in self._objects(path):
            usage.add(Usage(1, int(item.get("Size", 0))))
        return usage

    def delete(self, path: str) -> Usage:
        if not path.strip("/"):
            raise ValueError("refusing to delete the whole artifact store")
        usage = Usage()
        batch: list[dict[str, str]] = []
        for item in list(self._objects(path)):
            usage.add(Usage(1, int(item.get("Size", 0))))
            batch.append({"Key": item["Key"]})
            if len(batch) == 1000:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)
        return usage

    def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise RuntimeError(
                f"the bucket refused to delete {first.get('Key')}: {first.get('Code')} {first.get('Message')}"
            )

    def children(self, path: str) -> dict[str, float]:
        base = self._key(path) + "/"
        result: dict[str, float] = {}
        for item in self._objects(path):
            name = item["Key"][len(base) :].split("/", 1)[0]
            stamp = item["LastModified"].timestamp()
            result[name] = max(result.get(name, 0.0), stamp)
        return result


def artifact_store(destination: str) -> LocalArtifacts | BucketArtifacts:
    if destination.startswith("/"):
        return LocalArtifacts(destination)
    if destination.startswith(("s3://", "kit-s3://")):
        return BucketArtifacts(destination)
    raise SystemExit(_fail(f"unsupported artifact destination {destination!r}"))


def entity_folder(path: str, entity_id: str) -> str:
    """The folder an item owns: ``1/<run>`` for ``1/<run>/artifacts`` (MLflow's layout), else the path."""
    head, _, tail = path.rpartition("/")
    if tail == "artifacts" and head.rpartition("/")[2] == entity_id:
        return head
    return path


# ---- the plan -------------------------------------------------------------------------


@dataclass
class Item:
    kind: str
    id: str
    experiment_id: str
    path: str | None
    bytes: int = 0
    files: int = 0
    traces: int = 0
    note: str = ""
    #: Deleted long enough ago itself (not only with its experiment).
    old: bool = True

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "id": self.id, "experiment_id": self.experiment_id, "bytes": self.bytes}
        if self.note:
            data["note"] = self.note
        return data


@dataclass
class Plan:
    now_ms: int
    cutoff_ms: int
    retention_default_days: int
    retention: list[dict[str, Any]] = field(default_factory=list)
    retention_kept: list[dict[str, Any]] = field(default_factory=list)
    retention_ignored: list[dict[str, Any]] = field(default_factory=list)
    remove: list[Item] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)


class Database:
    def __init__(self, store: Any) -> None:
        from sqlalchemy import text

        self.store = store
        self.text = text

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.store.engine.connect() as connection:
            return list(connection.execute(self.text(sql), params))


@dataclass
class Needs:
    """What registered model versions need, each with the version that needs it (for the reason)."""

    runs: dict[str, str] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)


def direct_path(uri: str | None, destination: str) -> str | None:
    """The store path of a URI written in the store's own form (a file path, s3:// or kit-s3://), or None."""
    if not uri:
        return None
    if destination.startswith("/"):
        root = destination.rstrip("/")
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        if local == root or local.startswith(root + "/"):
            return store_path(SCHEME + local[len(root) :])
        return None
    base = destination.split("://", 1)[1].rstrip("/")
    for scheme in ("s3://", "kit-s3://", "s3a://"):
        if uri.startswith(scheme):
            rest = uri[len(scheme) :]
            if rest == base or rest.startswith(base + "/"):
                return store_path(SCHEME + rest[len(base) :])
    return None


def model_version_needs(db: Database, destination: str) -> Needs:
    """Runs, logged models and store paths that registered model versions (not deleted ones) need."""
    needs = Needs()
    via_runs_uri: dict[str, str] = {}
    for name, version, source, run_id, storage in db.rows(
        "SELECT name, version, source, run_id, storage_location FROM model_versions "
        "WHERE COALESCE(current_stage, '') <> 'Deleted_Internal'"
    ):
        label = f"model version {name}/{version}"
        if run_id:
            needs.runs.setdefault(run_id, label)
        for uri in (source, storage):
            if not uri:
                continue
            if uri.startswith("runs:/"):
                run = uri[len("runs:/") :].strip("/").split("/")[0]
                needs.runs.setdefault(run, label)
                via_runs_uri.setdefault(run, label)
            elif uri.startswith("models:/"):
                model = uri[len("models:/") :].strip("/").split("/")[0]
                if model.startswith("m-"):
                    needs.models.setdefault(model, label)
            path = store_path(uri)
            if path is None:
                path = direct_path(uri, destination)
            if path is not None:
                needs.paths.setdefault(path, label)
    # A needed logged model's metrics live on its training run (ON DELETE CASCADE): keep the run.
    models = sorted(needs.models)
    for i in range(0, len(models), 1000):
        for model_id, run_id in db.rows(
            "SELECT model_id, source_run_id FROM logged_models WHERE model_id IN :ids AND source_run_id IS NOT NULL",
            ids=tuple(models[i : i + 1000]),
        ):
            needs.runs.setdefault(run_id, needs.models[model_id])
    # MLflow 3 resolves runs:/<run>/<name> to the logged model that run produced under that name.
    runs = sorted(via_runs_uri)
    for i in range(0, len(runs), 1000):
        for model_id, run_id in db.rows(
            "SELECT model_id, source_run_id FROM logged_models WHERE source_run_id IN :runs",
            runs=tuple(runs[i : i + 1000]),
        ):
            needs.models.setdefault(model_id, via_runs_uri[run_id])
    return needs


def _keep_value(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("false", "0", "no", "off")


def _reason(why: str) -> str:
    """Why an item stays, for people: what needs it."""
    if why.startswith("model version"):
        return f"backs {why}"
    return why if why.startswith(("its ", "restored")) else f"its folder holds {why}"


def _days(raw: str) -> int | None:
    """Days in a retention tag: a whole number, or 0 for off/never/none; None when it is neither."""
    text = raw.strip().lower()
    if text in ("off", "never", "none"):
        return 0
    return int(text) if text.isascii() and text.isdigit() else None


def keep_holders(db: Database) -> Callable[[str], str | None]:
    """A function giving the run whose ``mlops-kit.keep`` tag keeps a run (itself or a parent), or None."""
    keep = {r for r, v in db.rows("SELECT run_uuid, value FROM tags WHERE key = :k", k=KEEP_TAG) if _keep_value(v)}
    parents = dict(db.rows("SELECT run_uuid, value FROM tags WHERE key = :k", k=PARENT_TAG))

    def kept_by(run_id: str) -> str | None:
        seen: set[str] = set()
        current: str | None = run_id
        while current and current not in seen:
            if current in keep:
                return current
            seen.add(current)
            current = parents.get(current)
        return None

    return kept_by


def plan_retention(db: Database, plan: Plan, needs: Needs) -> None:
    """Finished runs past their experiment's retention, except kept and needed ones."""
    days_by_experiment: dict[str, int] = {}
    tags = {
        str(e): v
        for e, v in db.rows("SELECT experiment_id, value FROM experiment_tags WHERE key = :k", k=RETENTION_TAG)
    }
    for (experiment_id,) in db.rows("SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active'"):
        experiment_id = str(experiment_id)
        days: int | None = plan.retention_default_days
        if experiment_id in tags:
            days = _days(tags[experiment_id] or "")
            if days is None:
                # A typo must never delete more: this experiment gets no retention at all.
                plan.retention_ignored.append(
                    {
                        "experiment_id": experiment_id,
                        "value": tags[experiment_id],
                        "reason": f"{RETENTION_TAG} is not a number of days",
                    }
                )
        if days:
            days_by_experiment[experiment_id] = days
    if not days_by_experiment:
        return
    kept_by = keep_holders(db)
    needed_paths = LiveSet(needs.paths)

    for experiment_id, days in sorted(days_by_experiment.items(), key=lambda kv: int(kv[0])):
        cutoff = plan.now_ms - days * DAY_MS
        for run_id, end_time, start_time, artifact_uri in db.rows(
            "SELECT run_uuid, end_time, start_time, artifact_uri FROM runs "
            "WHERE experiment_id = :e AND lifecycle_stage = 'active' AND status IN :finished "
            "AND COALESCE(end_time, start_time) < :cutoff ORDER BY COALESCE(end_time, start_time)",
            e=int(experiment_id),
            finished=FINISHED,
            cutoff=cutoff,
        ):
            entry = {"run_id": run_id, "experiment_id": experiment_id, "days": days, "ended_ms": end_time or start_time}
            holder = kept_by(run_id)
            path = store_path(artifact_uri)
            hit = needed_paths.inside(entity_folder(path, run_id)) if path is not None else None
            needed = needs.runs.get(run_id) or (needs.paths[hit] if hit is not None else None)
            if holder:
                entry["reason"] = f"tagged {KEEP_TAG}" + ("" if holder == run_id else f" (on its parent run {holder})")
                plan.retention_kept.append(entry)
            elif needed:
                entry["reason"] = _reason(needed)
                plan.retention_kept.append(entry)
            else:
                plan.retention.append(entry)


def plan_gc(db: Database, plan: Plan, artifacts: LocalArtifacts | BucketArtifacts, needs: Needs) -> None:
    """Deleted experiments, runs and logged models past the cutoff, and the artifacts of deleted traces."""
    cutoff = plan.cutoff_ms
    experiments = {
        str(e): (loc, stage, updated)
        for e, loc, stage, updated in db.rows(
            "SELECT experiment_id, artifact_location, lifecycle_stage, last_update_time FROM experiments"
        )
    }
    doomed_experiments = {
        e
        for e, (_loc, stage, updated) in experiments.items()
        if stage == "deleted" and (updated or 0) <= cutoff and e != "0"
    }
    # Locations of experiments that stay: a shared or nested location is never removed with another.
    live_locations = {
        path: f"the location of experiment {e}"
        for e, (loc, _s, _u) in experiments.items()
        if e not in doomed_experiments
        for path in [store_path(loc)]
        if path is not None
    }
    live = LiveSet([*needs.paths, *live_locations])
    reasons = {**live_locations, **needs.paths}

    def blocked(path: str | None) -> str | None:
        if path is None:
            return None
        hit = live.inside(path)
        return reasons.get(hit, "something live") if hit is not None else None

    def keep(kind: str, item_id: str, experiment_id: str, why: str, folder: str | None = None) -> None:
        plan.kept.append({"kind": kind, "id": item_id, "experiment_id": experiment_id, "reason": _reason(why)})
        if folder is not None:
            staying[folder] = f"the {kind.replace('_', ' ')} {item_id}, which stays"
        if experiment_id in doomed_experiments and kind != "experiment":
            kept_experiments.setdefault(experiment_id, f"its {kind.replace('_', ' ')} {item_id} is kept")

    kept_experiments: dict[str, str] = {}
    #: Folders of what stays although it is deleted: no other folder that holds one may go.
    staying: dict[str, str] = {}
    doomed_ids = tuple(int(e) for e in doomed_experiments) or (-1,)
    runs: list[Item] = []
    for run_id, experiment_id, artifact_uri, stage, deleted_time, end_time, start_time in db.rows(
        "SELECT run_uuid, experiment_id, artifact_uri, lifecycle_stage, deleted_time, end_time, start_time "
        "FROM runs WHERE (lifecycle_stage = 'deleted' AND COALESCE(deleted_time, end_time, start_time, 0) <= :cutoff) "
        "OR experiment_id IN :doomed",
        cutoff=cutoff,
        doomed=doomed_ids,
    ):
        experiment_id = str(experiment_id)
        path = store_path(artifact_uri)
        folder = entity_folder(path, run_id) if path is not None else None
        if stage != "deleted":
            # Restored inside a deleted experiment (MLflow allows it): someone wants it.
            keep("run", run_id, experiment_id, "restored: active in a deleted experiment", folder)
            continue
        why = needs.runs.get(run_id) or blocked(folder)
        if why:
            keep("run", run_id, experiment_id, why, folder)
            continue
        old = (deleted_time or end_time or start_time or 0) <= cutoff
        note = "" if path is not None else _elsewhere(artifact_uri)
        runs.append(Item("run", run_id, experiment_id, folder, note=note, old=old))

    models: list[Item] = []
    for model_id, experiment_id, location, stage, updated in db.rows(
        "SELECT model_id, experiment_id, artifact_location, lifecycle_stage, last_updated_timestamp_ms "
        "FROM logged_models WHERE (lifecycle_stage = 'deleted' AND last_updated_timestamp_ms <= :cutoff) "
        "OR experiment_id IN :doomed",
        cutoff=cutoff,
        doomed=doomed_ids,
    ):
        experiment_id = str(experiment_id)
        path = store_path(location)
        folder = entity_folder(path, model_id) if path is not None else None
        why = needs.models.get(model_id) or blocked(folder)
        if why:
            keep("logged_model", model_id, experiment_id, why, folder)
            continue
        old = stage == "deleted" and (updated or 0) <= cutoff
        note = "" if path is not None else _elsewhere(location)
        models.append(Item("logged_model", model_id, experiment_id, folder, note=note, old=old))

    seen_folders: dict[str, str] = {}
    for experiment_id in sorted(doomed_experiments, key=int):
        location = experiments[experiment_id][0]
        path = store_path(location)
        why = kept_experiments.get(experiment_id) or (blocked(path) if path is not None else None)
        if why:
            keep("experiment", experiment_id, experiment_id, why, path)
            continue
        traces = db.rows("SELECT count(*) FROM trace_info WHERE experiment_id = :e", e=int(experiment_id))[0][0]
        note = "" if path is not None else _elsewhere(location)
        if path is not None and path in seen_folders:
            # Two deleted experiments sharing one folder: it goes (and is counted) once.
            note, path = f"its folder goes with experiment {seen_folders[path]}", None
        elif path is not None:
            seen_folders[path] = experiment_id
        plan.remove.append(Item("experiment", experiment_id, experiment_id, path, traces=traces, note=note))
    doomed_now = {i.id for i in plan.remove if i.kind == "experiment"}
    # In a deleted experiment that stays, only what is deleted and old itself goes.
    plan.remove[:0] = [
        i
        for i in (*runs, *models)
        if i.experiment_id in doomed_now or i.old or i.experiment_id not in doomed_experiments
    ]

    # Artifacts of traces that are gone (MLflow deletes trace rows at once, never their files).
    for experiment_id, (location, _stage, _u) in sorted(experiments.items(), key=lambda kv: int(kv[0])):
        base = store_path(location)
        if base is None or experiment_id in doomed_now:
            continue  # not the kit's store, or the whole folder goes
        folder = f"{base}/traces" if base else "traces"
        try:
            found = artifacts.children(folder)
        except Exception:  # a link out of the store, an unreadable folder, a bucket error
            logger.warning("could not list %s; its deleted traces' files stay", folder, exc_info=True)
            continue
        names = sorted(found)
        existing = {
            r
            for i in range(0, len(names), 1000)
            for (r,) in db.rows(
                "SELECT request_id FROM trace_info WHERE request_id IN :ids", ids=tuple(names[i : i + 1000])
            )
        }
        for trace_id in names:
            path = f"{folder}/{trace_id}"
            if trace_id in existing or found[trace_id] * 1000 > cutoff or blocked(path):
                continue
            plan.remove.append(Item("trace_artifacts", trace_id, experiment_id, path))

    measured: list[Item] = []
    for item in plan.remove:
        if item.path is not None:
            try:
                usage = artifacts.usage(item.path)
            except Exception as error:  # a link out of the store, a file it may not read, a bucket error
                keep(item.kind, item.id, item.experiment_id, f"its folder could not be read ({error})"[:300], item.path)
                continue
            item.files, item.bytes = usage.files, usage.bytes
        measured.append(item)
    plan.remove = measured
    # Settle which deleted experiments go: not one that holds something kept (its own run, or
    # another experiment's kept item in a shared or nested folder), until nothing changes.
    while True:
        holding = LiveSet(staying)
        dropped = [
            i
            for i in plan.remove
            if i.kind == "experiment"
            and (i.id in kept_experiments or (i.path is not None and holding.inside(i.path) is not None))
        ]
        if not dropped:
            break
        for item in dropped:
            hit = holding.inside(item.path) if item.path is not None else None
            why = kept_experiments.get(item.id) or f"its folder holds {staying.get(hit or '', 'something kept')}"
            plan.kept.append({"kind": "experiment", "id": item.id, "experiment_id": item.id, "reason": why})
            kept_experiments.setdefault(item.id, why)
            if item.path is not None:
                staying[item.path] = f"the location of experiment {item.id}, which stays"
        plan.remove = [i for i in plan.remove if i not in dropped]
    final = {i.id for i in plan.remove if i.kind == "experiment"}
    # In a deleted experiment that stays, only what is deleted and old itself goes.
    plan.remove = [
        i
        for i in plan.remove
        if i.kind in ("experiment", "trace_artifacts")
        or i.experiment_id in final
        or i.old
        or i.experiment_id not in doomed_experiments
    ]
    # A folder inside another planned folder is counted by the innermost one only. Only an
    # experiment's folder holds others (runs, logged models, traces, nested experiments).
    holders = [i for i in plan.remove if i.kind == "experiment" and i.path is not None]
    for item in plan.remove:
        if item.path is None:
            continue
        enclosing = [h for h in holders if h is not item and h.path != item.path and under(item.path, h.path or "")]
        if enclosing:
            nearest = max(enclosing, key=lambda holder: len(holder.path or ""))
            nearest.files -= item.files
            nearest.bytes -= item.bytes


def _elsewhere(uri: str | None) -> str:
    return f"artifacts at {uri} are outside the kit's store and stay"


# ---- doing it ---------------------------------------------------------------------------


def soft_delete(store: Any, db: Database, run_ids: list[str], needs: Needs) -> int:
    """Retention's step: MLflow's own delete_run, for runs that still qualify at this moment
    (``needs``: what model versions need now, read after the plan)."""
    kept_by = keep_holders(db)
    done = 0
    for run_id in run_ids:
        if run_id in needs.runs or kept_by(run_id):
            continue  # registered or tagged (itself or a parent) since the plan
        # Still active and finished: a run restarted since the plan stays.
        if db.rows(
            "SELECT 1 FROM runs WHERE run_uuid = :i AND lifecycle_stage = 'active' AND status IN :f",
            i=run_id,
            f=FINISHED,
        ):
            store.delete_run(run_id)
            done += 1
    return done


#: Still deleted, and deleted (itself or with its experiment) before the cutoff, locking the
#: rows: a restore since the plan keeps the item, and a restore now waits until it is gone.
_STILL_DUE = {
    "run": "SELECT r.lifecycle_stage = 'deleted' AND (COALESCE(r.deleted_time, r.end_time, r.start_time, 0) <= :c"
    " OR (e.lifecycle_stage = 'deleted' AND COALESCE(e.last_update_time, 0) <= :c)) FROM runs r"
    " JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = :i FOR UPDATE OF r, e",
    "logged_model": "SELECT (m.lifecycle_stage = 'deleted' AND m.last_updated_timestamp_ms <= :c) OR"
    " (e.lifecycle_stage = 'deleted' AND COALESCE(e.last_update_time, 0) <= :c) FROM logged_models m"
    " JOIN experiments e ON e.experiment_id = m.experiment_id WHERE m.model_id = :i FOR UPDATE OF m, e",
    "experiment": "SELECT lifecycle_stage = 'deleted' AND COALESCE(last_update_time, 0) <= :c"
    " FROM experiments WHERE experiment_id = :i FOR UPDATE",
}


def remove(store: Any, artifacts: LocalArtifacts | BucketArtifacts, item: Item, cutoff: int, destination: str) -> str:
    """Delete one item in one transaction: lock and re-check, delete its rows, its artifacts, commit.

    Returns "" when it is gone, or why it stayed. The rows go first (inside the transaction)
    so a failure there leaves the artifacts; a failure after the artifacts went leaves a
    deleted item with fewer files, which the next gc finishes.
    """
    from sqlalchemy import text

    if item.kind == "trace_artifacts":
        if item.path is not None:
            freed = artifacts.delete(item.path)
            item.files, item.bytes = freed.files, freed.bytes
        return ""
    with store.ManagedSessionMaker(read_only=False) as session:
        key: Any = int(item.id) if item.kind == "experiment" else item.id
        if not session.execute(text(_STILL_DUE[item.kind]), {"i": key, "c": cutoff}).scalar():
            return "restored or changed since the plan"
        if item.kind == "run":
            _delete_run_rows(session, item.id)
        elif item.kind == "logged_model":
            _delete_logged_model_rows(session, item.id)
        else:
            left = session.execute(
                text(
                    "SELECT (SELECT count(*) FROM runs WHERE experiment_id = :i)"
                    " + (SELECT count(*) FROM logged_models WHERE experiment_id = :i)"
                ),
                {"i": key},
            ).scalar()
            if left:
                return f"{left} of its runs or logged models stay"
            if item.path is not None:
                needs = model_version_needs(Database(store), destination)
                others = [
                    path
                    for (location,) in session.execute(
                        text("SELECT artifact_location FROM experiments WHERE experiment_id <> :i"), {"i": key}
                    )
                    for path in [store_path(location)]
                    if path is not None
                ]
                if LiveSet([*needs.paths, *others]).inside(item.path) is not None:
                    # Its rows go; its folder holds another experiment's location or a version's
                    # source (created since the plan): the folder stays.
                    item.note = "its folder stays: it holds another experiment's location or a model version's source"
                    item.path = None
            _delete_experiment_rows(session, key)
        if item.path is not None:
            freed = artifacts.delete(item.path)
            item.files, item.bytes = freed.files, freed.bytes
    return ""


def _delete_run_rows(session: Any, run_id: str) -> None:
    from mlflow.store.tracking import sqlalchemy_store as module

    # MLflow's own list of a run's child tables (bulk deletes: memory independent of history).
    for model in module._RUN_DELETE_CASCADE_MODELS:
        session.query(model).filter(model.run_uuid == run_id).delete(synchronize_session=False)
    session.query(module.SqlRun).filter(module.SqlRun.run_uuid == run_id).delete(synchronize_session=False)


def _delete_logged_model_rows(session: Any, model_id: str) -> None:
    from mlflow.store.tracking.dbmodels.models import SqlLoggedModel

    logged_model = session.get(SqlLoggedModel, model_id)
    if logged_model is not None:
        session.delete(logged_model)  # its tags, params and metrics go with it (ORM cascade)


def _delete_experiment_rows(session: Any, experiment_id: int) -> None:
    """What MLflow's _hard_delete_experiment does, in this transaction (it would open its own)."""
    from mlflow.store.tracking import sqlalchemy_store as module
    from mlflow.store.tracking.dbmodels.models import SqlExperiment

    # Rollups have no foreign key to the experiment. Traces and tags go in bulk first (every
    # child of a trace cascades in the database): the ORM cascade would load them all.
    names = ("SqlTraceRollupRebuild", "SqlTraceMetricDailyRollup", "SqlSpanCostDailyRollup", "SqlAssessmentDailyRollup")
    for model in (*(getattr(module, name) for name in names), module.SqlTraceInfo, module.SqlExperimentTag):
        session.query(model).filter(model.experiment_id == experiment_id).delete(synchronize_session=False)
    experiment = session.get(SqlExperiment, experiment_id)
    if experiment is not None:
        session.delete(experiment)


# ---- main --------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(json.dumps({"ok": False, "error": message}))
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-gc")
    parser.add_argument("--older-than-seconds", type=int, required=True)
    parser.add_argument("--retention-days", type=int, default=0)
    parser.add_argument("--no-retention", action="store_true")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    uri = os.environ.get("MLFLOW_BACKEND_STORE_URI", "")
    destination = os.environ.get("MLFLOW_ARTIFACTS_DESTINATION", "")
    if not uri or not destination:
        return _fail("MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION must be set (the kit's mlflow job)")
    started = time.time()
    soft_deleted = 0
    removed: list[Item] = []
    skipped: list[dict[str, Any]] = []
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        store = SqlAlchemyStore(uri, destination)
        db = Database(store)
        artifacts = artifact_store(destination)
        now_ms = int(started * 1000)
        plan = Plan(
            now_ms=now_ms,
            cutoff_ms=now_ms - args.older_than_seconds * 1000,
            retention_default_days=args.retention_days,
        )
        needs = model_version_needs(db, destination)
        if not args.no_retention:
            plan_retention(db, plan, needs)
        plan_gc(db, plan, artifacts, needs)
        if not args.dry_run:
            # Versions registered while this planned protect their runs and models too.
            needs = model_version_needs(db, destination)
            soft_deleted = soft_delete(store, db, [r["run_id"] for r in plan.retention], needs)
            for item in plan.remove:
                needed = (item.kind == "run" and needs.runs.get(item.id)) or (
                    item.kind == "logged_model" and needs.models.get(item.id)
                )
                if needed:
                    skipped.append({**item.to_dict(), "reason": _reason(needed), "failed": False})
                    continue
                try:
                    why = remove(store, artifacts, item, plan.cutoff_ms, destination)
                except Exception as error:
                    # One item that fails must not stop the rest; the answer says which and why.
                    logger.exception("could not remove %s %s", item.kind, item.id)
                    reason = f"{type(error).__name__}: {error}"[:300]
                    skipped.append({**item.to_dict(), "reason": reason, "failed": True})
                    continue
                if why:
                    skipped.append({**item.to_dict(), "reason": why, "failed": False})
                else:
                    removed.append(item)
    except Exception as error:
        # Whatever stopped it, the kit gets an answer: what went before, and why it stopped.
        logger.exception("gc stopped")
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": f"{type(error).__name__}: {error}"[:500],
                    "retention": {"soft_deleted": soft_deleted},
                    "removed_before_the_error": len(removed),
                }
            )
        )
        return 1
    done = plan.remove if args.dry_run else removed
    counts: dict[str, int] = {}
    for item in done:
        counts[item.kind] = counts.get(item.kind, 0) + 1
    answer = {
        "ok": not any(s["failed"] for s in skipped),
        "dry_run": args.dry_run,
        "older_than_seconds": args.older_than_seconds,
        "cutoff_ms": plan.cutoff_ms,
        "retention": {
            "default_days": 0 if args.no_retention else args.retention_days,
            "enabled": not args.no_retention,
            "runs": len(plan.retention) if args.dry_run else soft_deleted,
            "listed": plan.retention[:LISTED],
            "kept": plan.retention_kept[:LISTED],
            "kept_count": len(plan.retention_kept),
            "ignored": plan.retention_ignored,
        },
        "removed": {
            "experiments": counts.get("experiment", 0),
            "runs": counts.get("run", 0),
            "logged_models": counts.get("logged_model", 0),
            "traces": sum(i.traces for i in done),
            "trace_artifact_folders": counts.get("trace_artifacts", 0),
            "files": sum(i.files for i in done),
            "bytes": sum(i.bytes for i in done),
        },
        "items": [i.to_dict() for i in done[:LISTED]],
        "notes": sorted({i.note for i in done if i.note})[:50],
        "kept": plan.kept[:LISTED],
        "kept_count": len(plan.kept),
        "skipped": skipped[:LISTED],
        "seconds": round(time.time() - started, 2),
    }
    print(json.dumps(answer))
    # The answer says what stayed and why: the kit keeps it and decides the exit code.
    return 0


if __name__ == "__main__":
    sys.exit(main())
