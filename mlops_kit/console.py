"""The themed console for people, and logging for diagnostics (both secret-masked)."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler
from rich.theme import Theme

from mlops_kit.masking import mask

THEME = Theme(
    {
        "info": "cyan",
        "success": "bold green",
        "warning": "yellow",
        "error": "bold red",
        "hint": "italic",
        "step": "bold",
        "muted": "dim",
        "ok": "green",
        "fail": "red",
        "warn": "yellow",
        "skip": "dim",
    }
)

# Human output goes to stdout; errors, warnings and logs to stderr, so that
# `mlops-kit client-env` and `--json` output can be piped.
out = Console(theme=THEME, highlight=False)
err = Console(theme=THEME, stderr=True, highlight=False)


def success(message: str) -> None:
    out.print(f"[success]✓[/] {message}")


def info(message: str) -> None:
    out.print(f"[info]•[/] {message}")


def warning(message: str) -> None:
    err.print(f"[warning]![/] {message}")


def error_line(message: str, hint: str | None = None) -> None:
    """One line: what is wrong and what to do about it."""
    text = mask(message) + (f"; {mask(hint)}" if hint else "")
    err.print(f"[error]error:[/] {text}", soft_wrap=True)


class _MaskingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage())
        record.args = None
        return True


def setup_logging(verbosity: int) -> None:
    """-v: info, -vv: debug (every command the runner runs, secrets masked)."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = RichHandler(console=err, show_time=verbosity >= 2, show_path=False, markup=False, rich_tracebacks=False)
    handler.addFilter(_MaskingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("mlops_kit").setLevel(level)
    if not sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def human_bytes(count: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def human_age(seconds: float) -> str:
    """Seconds as the largest sensible unit: "42 s", "17 min", "3.5 h", "2.0 days"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
