"""`mlops-kit gc`: retention, then garbage collection of what was deleted long enough ago.

The work is the ``mlflow-gc`` job in the MLflow image (docker/mlflow/gc.py), run with
the server's own settings: it reads the database over PostgreSQL's socket and deletes
artifacts straight from the store the server uses (volume, NFS or bucket), so it needs
no login, no tracking URI and no HTTP round trip per artifact. This module takes the
stack's lock (a gc never overlaps a backup, restore or migration), runs the job, and
keeps what it did in BACKUP_DIR/last-gc.json for `status`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import write_private_file
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import run_json_job
from mlops_kit.errors import GcError
from mlops_kit.services.mlflow import GC_JOB, MLFLOW
from mlops_kit.workflows import records
from mlops_kit.workflows.lifecycle import require_running
from mlops_kit.workflows.lock import backup_lock

__all__ = ["GcReport", "collect_garbage", "last_gc"]

LAST_GC = "last-gc.json"


@dataclass(frozen=True)
class GcReport:
    """What one gc did (or, in a dry run, would do): the job's answer, with the run's own facts."""

    dry_run: bool
    older_than_seconds: int
    retention_days: int
    started_at: float
    finished_at: float
    #: Finished runs retention soft-deleted (would soft-delete).
    retention_runs: int
    removed: dict[str, int]
    #: Up to 1,000 entries each; the counts above are complete.
    retention_listed: list[dict[str, Any]] = field(default_factory=list)
    retention_kept: list[dict[str, Any]] = field(default_factory=list)
    retention_ignored: list[dict[str, Any]] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)
    kept: list[dict[str, Any]] = field(default_factory=list)
    kept_count: int = 0
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_freed(self) -> int:
        return int(self.removed.get("bytes", 0))

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Items an error kept (not the ones restored or changed since the plan, which stay on purpose)."""
        return [s for s in self.skipped if s.get("failed")]

    def raise_if_incomplete(self) -> None:
        """GcError (exit 12) naming the first item an error kept, if any."""
        if self.failed:
            first = self.failed[0]
            raise GcError(
                f"gc could not remove {len(self.failed)} item(s), e.g. {first.get('kind')} {first.get('id')}: "
                f"{first.get('reason')}",
                hint="the rest was removed; see BACKUP_DIR/last-gc.json, fix the cause and run gc again",
            )

    @classmethod
    def from_answer(cls, answer: dict[str, Any], *, started: float, retention_days: int) -> GcReport:
        retention = answer.get("retention") or {}
        return cls(
            dry_run=bool(answer.get("dry_run")),
            older_than_seconds=int(answer.get("older_than_seconds", 0)),
            retention_days=retention_days if retention.get("enabled", True) else 0,
            started_at=started,
            finished_at=time.time(),
            retention_runs=int(retention.get("runs", 0)),
            removed={k: int(v) for k, v in (answer.get("removed") or {}).items()},
            retention_listed=list(retention.get("listed") or []),
            retention_kept=list(retention.get("kept") or []),
            retention_ignored=list(retention.get("ignored") or []),
            items=list(answer.get("items") or []),
            kept=list(answer.get("kept") or []),
            kept_count=int(answer.get("kept_count", 0)),
            skipped=list(answer.get("skipped") or []),
            notes=list(answer.get("notes") or []),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "older_than_seconds": self.older_than_seconds,
            "retention_days": self.retention_days,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": round(self.finished_at - self.started_at, 1),
            "retention": {
                "runs": self.retention_runs,
                "listed": self.retention_listed,
                "kept": self.retention_kept,
                "ignored": self.retention_ignored,
            },
            "removed": self.removed,
            "bytes_freed": self.bytes_freed,
            "items": self.items,
            "kept": self.kept,
            "kept_count": self.kept_count,
            "skipped": self.skipped,
            "notes": self.notes,
        }


def collect_garbage(
    project: ComposeProject,
    *,
    older_than_seconds: int,
    retention_days: int,
    retention: bool = True,
    dry_run: bool = False,
    on_step: Callable[[str], None] = lambda _s: None,
) -> GcReport:
    """Soft-delete runs past retention (unless ``retention`` is off), then remove what was deleted
    more than ``older_than_seconds`` ago, with its artifacts. ``dry_run`` changes nothing.

    Raises BackupLockedError (exit 8) while a backup, restore or migration runs. Items that
    failed are in the report (the others are removed): ``report.raise_if_incomplete()``.
    """
    config = project.config
    with (
        backup_lock(config, "collect garbage (dry run)" if dry_run else "collect garbage"),
        contextlib.nullcontext() if dry_run else records.failure_recorded(config, records.GC),
    ):
        started = time.time()
        on_step("Checking the stack")
        require_running(project)
        on_step("Listing what may go" if dry_run else "Applying retention and removing what was deleted")
        command = [GC_JOB, "--older-than-seconds", str(older_than_seconds), "--retention-days", str(retention_days)]
        if not retention:
            command.append("--no-retention")
        if dry_run:
            command.append("--dry-run")
        answer = run_json_job(
            project, MLFLOW.name, command, what="garbage collection", error=GcError, read_only=dry_run
        )
        report = GcReport.from_answer(answer, started=started, retention_days=retention_days)
        if not dry_run:
            _write_json(config.backup_path / LAST_GC, report.to_dict())
            records.write_record(config, records.GC, ok=not report.failed, bytes_freed=report.bytes_freed)
        return report


def last_gc(config: KitConfig) -> dict[str, Any] | None:
    """The report of the last gc that changed something (not a dry run), or None."""
    try:
        data = json.loads((config.backup_path / LAST_GC).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, json.dumps(data, indent=2))
