"""The healthcheck's watchdog (docker/common/watchdog.sh), run by bash with a stand-in `setpriv`.

The stand-in runs the liveness and healthcheck commands as they are, and records the
final `kill -KILL -1` instead of running it (as root here it would end every process of
the machine). The real thing, with real frozen services: tests/integration/test_self_heal.py.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docker" / "common" / "watchdog.sh"


@pytest.fixture
def watchdog(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    setpriv = bin_dir / "setpriv"
    setpriv.write_text(
        "#!/bin/bash\n"
        'while [[ "$1" == --* ]]; do shift; done\n'
        # Never run a kill here (as root it could end the machine's processes): record it.
        'if [[ "$1" == kill || "$*" == *"-c kill"* ]]; then echo "$*" >>"${KILLS}"; exit 0; fi\n'
        'exec "$@"\n'
    )
    setpriv.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KILLS": str(tmp_path / "kills"),
        "MLOPS_KIT_WATCHDOG_STATE": str(tmp_path / "state"),
        "MLOPS_KIT_WATCHDOG_LOG": str(tmp_path / "container.log"),
        "MLOPS_KIT_WATCHDOG_SECONDS": "45",
    }
    return tmp_path, env


def _run(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), "mlflow", *argv], env=env, capture_output=True, text=True, timeout=30)


def test_a_service_that_never_answered_is_left_alone(watchdog: tuple[Path, dict[str, str]]) -> None:
    tmp, env = watchdog
    result = _run(env, "false")
    assert result.returncode == 1 and result.stderr.startswith("unhealthy:")
    assert not (tmp / "state" / "silent-since").exists() and not (tmp / "kills").exists()


def test_an_answering_service_gets_the_full_healthcheck(watchdog: tuple[Path, dict[str, str]]) -> None:
    tmp, env = watchdog
    assert _run(env, "true", "--", "sh", "-c", "echo full; exit 0").stdout == "full\n"
    assert _run(env, "true", "--", "sh", "-c", "exit 3").returncode == 3  # the full check decides health
    assert _run(env, "true").returncode == 0  # no full check: alive is healthy
    assert (tmp / "state" / "answered").exists()


def test_silence_is_counted_from_its_start_and_ends_the_service_after_the_limit(
    watchdog: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = watchdog
    _run(env, "true")
    first = _run(env, "sh", "-c", "echo 'GET /health: timed out'; exit 1")
    assert first.returncode == 1 and "unhealthy for 0 s" in first.stderr and "GET /health: timed out" in first.stderr
    assert not (tmp / "kills").exists()
    # 100 s of silence: the service's processes are ended and the reason logged.
    uptime = int(float(Path("/proc/uptime").read_text().split()[0]))
    (tmp / "state" / "silent-since").write_text(f"{uptime - 100}\n")
    ended = _run(env, "false")
    assert ended.returncode == 1
    assert (tmp / "kills").read_text().strip() == "bash -c kill -KILL -1"
    logged = (tmp / "container.log").read_text()
    assert logged.startswith("mlops-kit watchdog: mlflow processes did not answer for 10")
    assert "Docker restarts" in logged
    # An answer ends the silence.
    _run(env, "true")
    assert not (tmp / "state" / "silent-since").exists()


def test_a_command_that_hangs_counts_as_silence(watchdog: tuple[Path, dict[str, str]]) -> None:
    tmp, env = watchdog
    _run(env, "true")
    started = time.monotonic()
    hung = _run(env, "sleep", "20")
    assert hung.returncode == 1 and time.monotonic() - started < 10
    assert (tmp / "state" / "silent-since").exists()


def test_zero_seconds_turns_the_watchdog_off(watchdog: tuple[Path, dict[str, str]]) -> None:
    tmp, env = watchdog
    env = {**env, "MLOPS_KIT_WATCHDOG_SECONDS": "0"}
    _run(env, "true")
    (tmp / "state" / "silent-since").write_text("0\n")
    assert _run(env, "false").returncode == 1
    assert not (tmp / "kills").exists()


def test_busy_on_purpose_is_not_silence(watchdog: tuple[Path, dict[str, str]]) -> None:
    """Exit 75 from the liveness command (PostgreSQL starting or stopping): unhealthy, never ended."""
    tmp, env = watchdog
    _run(env, "true")
    (tmp / "state" / "silent-since").write_text("1\n")
    busy = _run(env, "sh", "-c", "echo 'busy: PostgreSQL is stopping'; exit 75")
    assert busy.returncode == 1 and "busy: PostgreSQL is stopping" in busy.stderr
    assert not (tmp / "state" / "silent-since").exists() and not (tmp / "kills").exists()


def test_the_service_user_cannot_feed_it_state(watchdog: tuple[Path, dict[str, str]]) -> None:
    """A state folder that is not this user's private one turns the watchdog off; values are numbers only."""
    tmp, env = watchdog
    (tmp / "state").mkdir(mode=0o777)
    (tmp / "state").chmod(0o777)  # what another user on a shared /tmp could have made first
    (tmp / "state" / "answered").touch()
    (tmp / "state" / "silent-since").write_text("now[$(touch " + str(tmp / "pwned") + ")0]\n")
    taken = _run(env, "false")
    assert taken.returncode == 1 and "the watchdog is off" in taken.stderr
    assert not (tmp / "kills").exists() and not (tmp / "pwned").exists()
    # A private folder with a value that is not a number: read as the start of the silence, never run.
    (tmp / "state").chmod(0o700)
    silent = _run(env, "false")
    assert "unhealthy for 0 s" in silent.stderr and not (tmp / "pwned").exists()


def test_a_malformed_limit_falls_back_to_the_default(watchdog: tuple[Path, dict[str, str]]) -> None:
    tmp, env = watchdog
    env = {**env, "MLOPS_KIT_WATCHDOG_SECONDS": "45s"}
    _run(env, "true")
    first = _run(env, "false")
    assert "restarts it after 45 s" in first.stderr and not (tmp / "kills").exists()
