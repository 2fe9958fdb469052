"""The command runner: argv, masking, dry-run, typed errors."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from mlops_kit.errors import CommandError
from mlops_kit.masking import MASK, mask, register_secret
from mlops_kit.runner import CommandRunner

PASSWORD = "Known-Password-For-Tests-42"


def test_runs_and_captures_output() -> None:
    result = CommandRunner().run([sys.executable, "-c", "print('hello')"], changes_state=False)
    assert result.ok
    assert result.stdout.strip() == "hello"


def test_path_arguments_are_stringified(tmp_path: Path) -> None:
    result = CommandRunner().run([sys.executable, "-c", "import sys; print(sys.argv[1])", tmp_path])
    assert result.stdout.strip() == str(tmp_path)


def test_failure_raises_typed_error_with_command_exit_code_and_output() -> None:
    with pytest.raises(CommandError) as caught:
        CommandRunner().run([sys.executable, "-c", "import sys; print('out'); sys.exit('boom')"])
    error = caught.value
    assert error.returncode == 1
    assert "boom" in error.stderr
    assert "out" in error.stdout
    assert sys.executable in error.command[0]
    assert "boom" in error.message


def test_missing_program_is_a_command_error_with_a_hint() -> None:
    with pytest.raises(CommandError) as caught:
        CommandRunner().run(["definitely-not-a-program-xyz"])
    assert caught.value.returncode == 127
    assert caught.value.hint


def test_password_never_appears_in_error_or_log(caplog: pytest.LogCaptureFixture) -> None:
    register_secret(PASSWORD)
    caplog.set_level(logging.DEBUG, logger="mlops_kit")
    code = "import sys; print(sys.argv[1]); sys.stderr.write('bad password ' + sys.argv[1]); sys.exit(3)"
    with pytest.raises(CommandError) as caught:
        CommandRunner().run([sys.executable, "-c", code, PASSWORD])
    error = caught.value
    everything = " ".join([error.message, " ".join(error.command), error.stdout, error.stderr, str(error), caplog.text])
    assert PASSWORD not in everything
    assert MASK in error.stderr


def test_dry_run_skips_changing_commands_but_runs_queries(tmp_path: Path) -> None:
    marker = tmp_path / "touched"
    runner = CommandRunner(dry_run=True)
    runner.run([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert not marker.exists()
    assert runner.dry_run_log and "touched" in runner.dry_run_log[0]
    query = runner.run([sys.executable, "-c", "print(42)"], changes_state=False)
    assert query.stdout.strip() == "42"


def test_runner_env_reaches_the_command() -> None:
    runner = CommandRunner(env={"KIT_TEST_VALUE": "x1"})
    result = runner.run([sys.executable, "-c", "import os; print(os.environ['KIT_TEST_VALUE'])"], changes_state=False)
    assert result.stdout.strip() == "x1"


def test_short_values_are_not_treated_as_secrets() -> None:
    register_secret("1")
    assert mask("version 1.2") == "version 1.2"


def test_stderr_lines_reach_the_caller_as_they_come_and_both_streams_are_kept() -> None:
    seen: list[str] = []
    script = (
        "import sys\nfor i in range(3):\n    print(f'step {i}', file=sys.stderr, flush=True)\nprint('x' * 200000)\n"
    )
    result = CommandRunner().run([sys.executable, "-c", script], on_stderr_line=seen.append, changes_state=False)
    assert seen == ["step 0", "step 1", "step 2"]
    assert result.stderr.splitlines() == seen and len(result.stdout.strip()) == 200000


def test_a_streamed_command_that_fails_or_hangs_raises_the_usual_errors() -> None:
    with pytest.raises(CommandError) as failed:
        CommandRunner().run([sys.executable, "-c", "import sys; sys.exit('broken')"], on_stderr_line=lambda _l: None)
    assert failed.value.returncode == 1 and "broken" in failed.value.stderr
    with pytest.raises(CommandError, match="timed out"):
        CommandRunner().run([sys.executable, "-c", "import time; time.sleep(30)"], on_stderr_line=print, timeout=1)
