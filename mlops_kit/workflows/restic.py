"""The stack's restic repository: where restic runs.

The host builds restic's argv here and runs it in a one-shot job of the backup image
(`docker compose run --rm backup restic ...`), where the repository is mounted at
/repository and the key at /run/secrets/restic_password (see compose.yaml's backup
service). The backup agent in that image (docker/backup/agent.py) never runs restic:
it dumps, hashes, verifies and loads; restic stores and restores.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_json
from mlops_kit.errors import BackupError, CommandError
from mlops_kit.services.backup import BACKUP

SNAPSHOT_TAG = "mlops-kit"
_WRONG_KEY = ("wrong password", "no key found")
# What `restic check` prints when the repository itself is damaged.
_DAMAGE = ("contains errors", "ciphertext verification failed", "does not match", "pack file", "invalid data returned")


class Repository:
    """The stack's restic repository, driven through `docker compose run backup restic ...`."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.config = project.config

    def restic(self, *args: str, mounts: tuple[str, ...] = (), check: bool = True) -> str:
        try:
            result = self.project.run_job(BACKUP.name, ["restic", *args], mounts=mounts, check=check)
        except CommandError as error:
            raise self._explain(error) from error
        return result.stdout

    def _explain(self, error: CommandError) -> BackupError:
        text = f"{error.stderr}\n{error.stdout}".lower()
        key = self.config.secrets_path / "restic_password"
        if any(marker in text for marker in _WRONG_KEY):
            return BackupError(
                f"the key {key} does not open the backup repository {self.config.backup_path / 'repository'}",
                hint="put back the key this repository was created with (it is never stored in the repository)",
            )
        if "unable to open config file" in text or "is there a repository at the following location" in text:
            return BackupError(
                f"there is no backup repository at {self.config.backup_path / 'repository'}",
                hint="make a backup first (mlops-kit backup), or set MLOPS_KIT_BACKUP_DIR to the folder that holds it",
            )
        if "already locked" in text:
            return BackupError(
                "the backup repository is locked by another restic process",
                hint="if no backup or restore is running (a killed one leaves its lock), remove the stale lock: "
                "docker compose run --rm backup restic unlock",
            )
        restic_line = _restic_message(error.stderr) or error.message
        return BackupError(f"restic failed: {restic_line}", hint="run again with -vv to see the full output")

    def exists(self) -> bool:
        return (self.config.backup_path / "repository" / "config").is_file()

    def ensure_initialized(self) -> bool:
        """Create the repository on first use; True if it was created."""
        if self.exists():
            return False
        self.restic("init")
        return True

    def snapshots(self) -> list[dict[str, Any]]:
        output = self.restic("snapshots", "--json", "--tag", SNAPSHOT_TAG)
        return list(json_answer(output, "["))

    def latest(self) -> dict[str, Any]:
        snapshots = self.snapshots()
        if not snapshots:
            raise BackupError("the backup repository holds no backup set yet", hint="make one: mlops-kit backup")
        return max(snapshots, key=lambda s: parse_time(str(s["time"])))

    def find(self, snapshot: str) -> dict[str, Any]:
        if snapshot in ("", "latest"):
            return self.latest()
        matches = [c for c in self.snapshots() if str(c["id"]).startswith(snapshot) or set_id_of(c) == snapshot]
        if len(matches) > 1:
            raise BackupError(f"{snapshot!r} matches {len(matches)} backup sets", hint="give more of the id")
        if matches:
            return matches[0]
        raise BackupError(f"no backup set {snapshot!r} in the repository", hint="list them: mlops-kit backup list")

    def check(self, *, read_data_subset: str | None = None) -> None:
        args = ["check"]
        if read_data_subset:
            args.append(f"--read-data-subset={read_data_subset}")
        try:
            self.restic(*args)
        except BackupError as error:
            # Only restic's own verdict means damage; a lock or a Docker error does not.
            cause = error.__cause__
            said = f"{cause.stderr}\n{cause.stdout}".lower() if isinstance(cause, CommandError) else ""
            if not any(marker in said for marker in _DAMAGE):
                raise
            raise BackupError(
                "the backup repository failed its integrity check (restic check)",
                hint="do not prune it; restore from the offsite copy, or run restic check to see the damage",
            ) from error

    def size_bytes(self) -> int:
        output = self.restic("stats", "--mode", "raw-data", "--json")
        return int(json_answer(output, "{").get("total_size", 0))


def _restic_message(stderr: str) -> str:
    """restic's own last error line (Fatal: ...), without Compose's noise."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith(("fatal:", "error:")):
            return line
    return lines[-1] if lines else ""


def json_answer(output: str, opener: str) -> Any:
    """restic's JSON result (its last JSON line), or BackupError when it printed none."""
    answer = last_json(output, opener)
    if answer is None:
        raise BackupError("restic printed no JSON result", hint="run again with -vv to see its output")
    return answer


def set_id_of(snapshot: dict[str, Any]) -> str:
    """The kit's set id of a snapshot (its `set:` tag), or ''."""
    for tag in snapshot.get("tags") or []:
        if str(tag).startswith("set:"):
            return str(tag)[4:]
    return ""


def parse_time(text: str) -> float:
    """restic's RFC 3339 time (nanoseconds; Python 3.10 parses microseconds at most)."""
    match = _RESTIC_TIME.match(text.strip())
    if not match:
        return time.time()
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}").timestamp()


_RESTIC_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")
