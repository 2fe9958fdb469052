"""One way to read what a job in a container answers: its last JSON line.

The kit's in-container programs (the backup agent, the S3 store check, the probes
sent to ``python -``) print progress as they like and end with one JSON line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mlops_kit.errors import CommandError, KitError, last_line

__all__ = ["PROGRESS_PREFIX", "json_answer", "last_json", "last_line", "run_json_job"]

#: How a job marks a line of its stderr as progress for the person waiting.
PROGRESS_PREFIX = "progress: "

if TYPE_CHECKING:
    from mlops_kit.engine.compose import ComposeProject
    from mlops_kit.runner import CommandResult


def last_json(output: str, opener: str = "{") -> Any | None:
    """The last line of ``output`` that starts with ``opener`` ('{' or '['), parsed; None if there is none.

    A line that starts like JSON but does not parse counts as no answer (the job was cut off).
    """
    for line in reversed(output.strip().splitlines()):
        if line.startswith(opener):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def run_json_job(
    project: ComposeProject,
    service: str,
    command: Sequence[str],
    *,
    what: str,
    mounts: Sequence[str] = (),
    error: type[KitError] = KitError,
    read_only: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`docker compose run` a one-shot job and return its JSON answer, or raise ``error`` saying why not.

    A job that fails says why in its JSON line (``error``, or a list of ``problems``);
    that sentence, not Compose's, is the message. ``on_progress`` gets what the job reports
    on stderr as ``progress: <message>`` lines, as they come.
    """
    return json_answer(
        lambda on_line: project.run_job(service, command, mounts=mounts, read_only=read_only, on_stderr_line=on_line),
        what=what,
        error=error,
        on_progress=on_progress,
    )


def json_answer(
    run: Callable[[Callable[[str], None] | None], CommandResult],
    *,
    what: str,
    error: type[KitError] = KitError,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The JSON answer of a job that ``run`` starts (given the stderr line handler), or ``error``."""
    on_line = None
    if on_progress is not None:
        report = on_progress

        def on_line(line: str) -> None:
            if line.startswith(PROGRESS_PREFIX):
                report(line[len(PROGRESS_PREFIX) :].strip())

    try:
        result = run(on_line)
    except CommandError as failure:
        said = last_json(failure.stdout)
        detail = _complaint(said) if isinstance(said, dict) else ""
        raise error(f"{what} failed: {detail or failure.message}", hint="see the job output with -vv") from failure
    answer = last_json(result.stdout)
    if not isinstance(answer, dict):
        raise error(f"{what} printed no JSON result", hint="run again with -vv to see its output")
    return answer


def _complaint(answer: dict[str, Any]) -> str:
    return str(answer.get("error") or "; ".join(answer.get("problems") or []))
