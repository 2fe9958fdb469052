"""The kit's error hierarchy. Only the CLI turns these into messages and exit codes."""

from __future__ import annotations


class KitError(Exception):
    """Base class: a problem the user can act on, described in one line.

    ``hint`` says what to do about it; ``exit_code`` is what the CLI exits with.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(KitError):
    """A setting is missing or malformed; the message names the variable and its source."""

    exit_code = 2


class PreflightError(KitError):
    """The host is not ready: no engine, port taken, too little disk, ..."""

    exit_code = 3


class EngineUnavailableError(PreflightError):
    """The Docker engine does not answer."""


class CommandError(KitError):
    """An external command failed. Carries the (masked) command, exit code and output."""

    exit_code = 4

    def __init__(
        self,
        command: list[str],
        returncode: int,
        stdout: str,
        stderr: str,
        *,
        hint: str | None = None,
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        said = last_line(stderr) or last_line(stdout) or "no output"
        super().__init__(f"`{' '.join(command)}` failed with exit code {returncode}: {said}", hint=hint)


class StackError(KitError):
    """The stack did not become healthy, or is not running."""

    exit_code = 5


class SmokeCheckError(KitError):
    """`mlops-kit check` failed at a named step."""

    exit_code = 6

    def __init__(self, step: str, detail: str, *, hint: str | None = None) -> None:
        self.step = step
        super().__init__(f"check failed at step '{step}': {detail}", hint=hint)


class BackupError(KitError):
    """A backup, restore or verification failed or was refused; the stack is as it was."""

    exit_code = 7


class BackupLockedError(BackupError):
    """Another backup, restore or verification of the same stack holds the lock."""

    exit_code = 8


class AuthError(KitError):
    """A user or permission change failed: MLflow refused it, or the admin login did not work."""

    exit_code = 9


class AbortedError(KitError):
    """The user declined a confirmation."""

    exit_code = 1


def last_line(text: str) -> str:
    """The last non-empty line of ``text``, stripped (what a failing command said last)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class UpgradeError(KitError):
    """An upgrade was refused or failed; after a failure the previous version serves again."""

    exit_code = 11


class GcError(KitError):
    """Garbage collection could not finish: some items stayed (the report says which and why)."""

    exit_code = 12


class BenchError(KitError):
    """A benchmark could not run (no room for its files, the server refused a call)."""

    exit_code = 10


class ImportDataError(KitError):
    """An import could not start or finish; the kit's data is as it was (rows go in one transaction)."""

    exit_code = 13
