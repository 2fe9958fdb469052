"""The one place where mlops-kit runs a subprocess.

Every external command (docker, docker compose, ...) goes through
:meth:`CommandRunner.run`: it logs the command with secrets masked, honours
dry-run for commands that change something, and raises :class:`CommandError`
carrying command, exit code and output when the command fails.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlops_kit.errors import CommandError
from mlops_kit.masking import mask

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned. Output is masked."""

    argv: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class CommandRunner:
    """Runs commands; ``dry_run`` prints changing commands instead of running them.

    ``env`` is merged over the current environment for every command (the
    compose layer passes the resolved configuration this way, never via argv).
    """

    dry_run: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    dry_run_log: list[str] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str | os.PathLike[str]],
        *,
        check: bool = True,
        capture: bool = True,
        changes_state: bool = True,
        input_text: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` and return its result.

        ``capture=False`` lets output go straight to the terminal (``logs -f``).
        ``on_stderr_line`` sees each line of stderr (masked) as it comes: a long job's progress.
        ``changes_state=False`` marks read-only queries, which still run in dry-run mode.
        Raises :class:`CommandError` if ``check`` and the command exits non-zero,
        or if the program is not installed.
        """
        args = [os.fspath(a) for a in argv]
        shown = mask(" ".join(args))
        if self.dry_run and changes_state:
            logger.info("dry-run: %s", shown)
            self.dry_run_log.append(shown)
            return CommandResult(argv=args, returncode=0)
        logger.debug("run: %s", shown)
        full_env = {**os.environ, **self.env, **(env or {})}
        try:
            if on_stderr_line is not None:
                completed = _run_streaming(args, full_env, self.cwd, timeout, on_stderr_line)
            else:
                completed = subprocess.run(
                    args,
                    input=input_text,
                    capture_output=capture,
                    text=True,
                    env=full_env,
                    cwd=self.cwd,
                    timeout=timeout,
                    check=False,
                )
        except FileNotFoundError as exc:
            raise CommandError(
                [shown],
                127,
                "",
                f"{args[0]}: command not found",
                hint=f"install {args[0]} (on Debian: sudo scripts/bootstrap-host.sh)",
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandError(
                [shown],
                124,
                "",
                f"timed out after {timeout:.0f} s",
            ) from exc
        result = CommandResult(
            argv=args,
            returncode=completed.returncode,
            stdout=mask(completed.stdout or ""),
            stderr=mask(completed.stderr or ""),
        )
        logger.debug("exit %d: %s", result.returncode, shown)
        if check and not result.ok:
            if result.stderr:
                logger.debug("stderr: %s", result.stderr.strip())
            raise CommandError([shown], result.returncode, result.stdout, result.stderr)
        return result


def _run_streaming(
    args: list[str],
    env: Mapping[str, str],
    cwd: Path | None,
    timeout: float | None,
    on_stderr_line: Callable[[str], None],
) -> subprocess.CompletedProcess[str]:
    """subprocess.run with both streams captured, handing each stderr line to ``on_stderr_line`` meanwhile."""
    with subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        stdout: list[str] = []
        # stdout is drained alongside, so that a full pipe never stalls the command.
        reader = threading.Thread(target=lambda: stdout.append(process.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, stop) if timeout else None
        if timer:
            timer.start()
        stderr: list[str] = []
        try:
            for line in process.stderr:
                stderr.append(line)
                on_stderr_line(mask(line.rstrip("\n")))
            process.wait()
            reader.join()
        finally:
            if timer:
                timer.cancel()
        if timed_out.is_set() and timeout:
            raise subprocess.TimeoutExpired(args, timeout)
        return subprocess.CompletedProcess(args, process.returncode, "".join(stdout), "".join(stderr))
