"""`backup schedule` and `gc schedule`: nightly jobs of a stack in the host's cron.

cron runs jobs with a bare environment: no virtualenv, no working folder, a short
PATH. The installed line therefore names the Python interpreter of this
installation, the kit's folder and its `.env` by absolute path, sets PATH itself,
and appends to a log file. The backup lock makes an overlapping run exit 8. Each kind
of job has its own file in cron.d, so one can be removed without the other.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import write_private_file
from mlops_kit.errors import ConfigError

DEFAULT_CRON_DIR = Path("/etc/cron.d")
CRON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class Schedule:
    path: Path
    text: str
    log_file: Path

    def commands(self) -> list[str]:
        """The command part of every job line (what cron hands to /bin/sh)."""
        jobs = [line for line in self.text.splitlines() if line and line[0].isdigit()]
        return [line.split(None, 6)[6] for line in jobs]


def parse_time(value: str) -> tuple[int, int]:
    match = _TIME.match(value)
    if not match:
        raise ConfigError(f"--at {value!r} is not a time of day", hint="use HH:MM in 24-hour form, e.g. --at 02:30")
    return int(match.group(1)), int(match.group(2))


def cron_file_name(config: KitConfig, kind: str = "") -> str:
    """The cron.d file of this stack's backup jobs ("") or of another ``kind`` of job ("gc")."""
    # cron ignores files in cron.d whose names contain dots. Another kind starts differently
    # ("mlops-kit_gc_"), so no project's backup file can have the name of another's gc file.
    name = f"mlops-kit_{kind}_{config.project_name}" if kind else f"mlops-kit-{config.project_name}"
    return name.replace(".", "-")


def _job_line(config: KitConfig, log_file: Path) -> Callable[[str], str]:
    """A function making the shell command of one cron job: the kit's ``command``, logged to ``log_file``."""
    kit = " ".join(
        shlex.quote(part)
        for part in (
            sys.executable,
            "-m",
            "mlops_kit",
            "--project-dir",
            str(config.project_dir),
            "--env-file",
            str(config.env_file),
        )
    )
    log = shlex.quote(str(log_file))

    def job(command: str) -> str:
        # cron turns a bare '%' into a newline (`date -Is` needs none; paths are escaped);
        # the subshell exits with the kit's own exit code, so cron and monitoring see failures.
        run = f'echo "== $(date -Is) {command}"; {kit} {command}; rc=$?; echo "== exit $rc"; exit $rc'
        return f"( {run} ) >> {log} 2>&1".replace("%", "\\%")

    return job


def _header(config: KitConfig, what: str, command: str) -> list[str]:
    """The first lines of a cron.d file: what it is, how to remove it, the shell and PATH its jobs get."""
    return [
        f"# mlops-kit: {what} of stack {config.project_name}.",
        f"# Installed by `mlops-kit {command}`; remove with `mlops-kit {command} --remove`.",
        "SHELL=/bin/sh",
        f"PATH={CRON_PATH}",
    ]


def render_schedule(config: KitConfig, at: str, *, verify_day: str | None, cron_dir: Path) -> Schedule:
    """The cron.d file for this stack: one nightly backup line, optionally a weekly drill line."""
    hour, minute = parse_time(at)
    log_file = config.backup_path / "logs" / "backup.log"
    job = _job_line(config, log_file)
    lines = [*_header(config, "scheduled backups", "backup schedule"), f"{minute} {hour} * * * root {job('backup')}"]
    if verify_day:
        day = verify_day.lower()[:3]
        if day not in WEEKDAYS:
            raise ConfigError(f"--verify-weekly {verify_day!r} is not a weekday", hint="use sun, mon, ..., sat")
        # An hour after the backup, so the drill checks the newest set.
        lines.append(f"{minute} {(hour + 1) % 24} * * {WEEKDAYS.index(day)} root {job('backup verify')}")
    return Schedule(path=cron_dir / cron_file_name(config), text="\n".join(lines) + "\n", log_file=log_file)


def render_gc_schedule(config: KitConfig, at: str, *, cron_dir: Path) -> Schedule:
    """The cron.d file of this stack's nightly garbage collection (retention first, when configured)."""
    hour, minute = parse_time(at)
    log_file = config.backup_path / "logs" / "gc.log"
    job = _job_line(config, log_file)
    # Its settings (grace period, retention) come from .env at each run.
    header = _header(config, "nightly garbage collection", "gc schedule")
    lines = [*header, f"{minute} {hour} * * * root {job('gc --yes')}"]
    return Schedule(path=cron_dir / cron_file_name(config, "gc"), text="\n".join(lines) + "\n", log_file=log_file)


def install_schedule(schedule: Schedule) -> None:
    if not schedule.path.parent.is_dir():
        raise ConfigError(
            f"{schedule.path.parent} does not exist: cron is not installed",
            hint="install it (apt-get install cron) or pass --cron-dir",
        )
    schedule.log_file.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(schedule.path, schedule.text)
    # cron.d files must not be group- or world-writable; 0644 is the convention.
    schedule.path.chmod(0o644)


def remove_schedule(config: KitConfig, cron_dir: Path, kind: str = "") -> Path | None:
    """Delete the cron.d file of this stack's ``kind`` of job; its path, or None if there was none."""
    path = cron_dir / cron_file_name(config, kind)
    if path.exists():
        path.unlink()
        return path
    return None
