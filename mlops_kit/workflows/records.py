"""What the host's jobs did, kept for the metrics service: BACKUP_DIR/status/<kind>.json.

The metrics service mounts that folder read-only and turns each record into gauges
(``mlops_kit_backup_*``, ``mlops_kit_drill_*``, ``mlops_kit_gc_*``). A record holds only
times, outcomes and sizes (never a name, path or secret), so it is readable by the
service's unprivileged user: mode 0644 in a 0755 folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlops_kit.config.loader import KitConfig

logger = logging.getLogger(__name__)

STATUS_FOLDER = "status"
BACKUP = "backup"
DRILL = "drill"
GC = "gc"


def status_dir(config: KitConfig) -> Path:
    return config.backup_path / STATUS_FOLDER


def read_record(config: KitConfig, kind: str) -> dict[str, Any] | None:
    """The last record of ``kind``, or None."""
    try:
        data = json.loads((status_dir(config) / f"{kind}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(config: KitConfig, kind: str, *, ok: bool, keep: tuple[str, ...] = (), **values: Any) -> None:
    """Replace the record of ``kind`` (atomically); ``keep`` carries fields over from the last one.

    A record that cannot be written is logged, never raised: the job itself is done.
    """
    folder = status_dir(config)
    previous = read_record(config, kind) or {}
    record = {key: previous[key] for key in keep if key in previous}
    record.update(values, ok=ok, finished_at=round(time.time(), 3))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        with tempfile.NamedTemporaryFile("w", dir=folder, prefix=f".{kind}.", delete=False) as tmp:
            json.dump(record, tmp, indent=2)
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, folder / f"{kind}.json")
    except OSError as exc:
        logger.warning("could not write %s: %s", folder / f"{kind}.json", exc)


@contextlib.contextmanager
def failure_recorded(config: KitConfig, kind: str, keep: tuple[str, ...] = ()) -> Iterator[None]:
    """Record a failed ``kind`` when the block raises (the error's type only), then re-raise."""
    try:
        yield
    except Exception as exc:
        write_record(config, kind, ok=False, keep=keep, error=type(exc).__name__)
        raise
