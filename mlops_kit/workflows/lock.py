"""One lock per stack for the workflows that must not overlap: backup, restore, verify, migrate.

An flock on BACKUP_DIR/.lock: the kernel releases it when the holder dies, so a
killed backup never leaves the stack locked. The file names the holder for the error.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlops_kit.config.loader import KitConfig
from mlops_kit.errors import BackupLockedError


@contextmanager
def backup_lock(config: KitConfig, purpose: str) -> Iterator[None]:
    """Exclusive per-stack lock for backup, restore and verify (released if the process dies)."""
    config.backup_path.mkdir(parents=True, exist_ok=True)
    path = config.backup_path / ".lock"
    handle = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise BackupLockedError(
                f"cannot {purpose}: {holder} holds the backup lock of stack {config.project_name} ({path})",
                hint="wait for it to finish and try again",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{purpose} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        yield
    finally:
        handle.close()
