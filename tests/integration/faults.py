"""Faults from the host, and how a test sees the stack recover from them.

Tests act on the host PIDs (`docker top`), the way an operator's `kill` or a hung kernel
call would, never through `docker kill`/`docker pause`, which Docker would know about.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from tests.harness import Stack


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    args: str


def processes(stack: Stack, service: str) -> tuple[int, list[Process]]:
    """(the container init's host PID, every other process of the service's container)."""
    info = stack.container(service)
    init = int(info["State"]["Pid"])
    out = subprocess.run(
        ["docker", "top", str(info["Id"]), "-eo", "pid,ppid,args"], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines()[1:]:
        pid, ppid, args = line.split(None, 2)
        if int(pid) != init:
            found.append(Process(int(pid), int(ppid), args))
    return init, found


def freeze(stack: Stack, service: str) -> list[int]:
    """SIGSTOP every process of the service's container but its init; returns their host PIDs.

    Needs root on the host (the processes belong to the services' users). If stopping one
    fails, the ones already stopped are let go before the error rises.
    """
    _, found = processes(stack, service)
    assert found, f"no process of {service} besides its init"
    stopped: list[int] = []
    try:
        for process in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGSTOP)
                stopped.append(process.pid)
    except BaseException:
        thaw(stopped)
        raise
    return stopped


def thaw(pids: list[int]) -> None:
    """SIGCONT whatever is left (a failed test must not leave frozen processes behind)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def kill(pid: int) -> None:
    """`kill -9` from the host."""
    os.kill(pid, signal.SIGKILL)


def serves(stack: Stack, run_id: str) -> bool:
    """The admin reads a run through the front door (False on any error or a 5 s silence)."""
    try:
        response = stack.session("admin").get(
            f"{stack.tracking_uri}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=5
        )
    except Exception:  # refused or reset while a service restarts, or no answer
        return False
    return response.status_code == 200


def service_statuses(stack: Stack) -> dict[str, dict[str, Any]]:
    """`mlops-kit status --json`, by service."""
    return {s["service"]: s for s in stack.status()["services"]}


def wait_until_serving(stack: Stack, run_id: str, *, since: float, limit: float) -> float | None:
    """Seconds from ``since`` (monotonic) until every service is healthy and ``run_id`` reads
    back; None if that did not happen within ``limit`` seconds of ``since``."""
    while time.monotonic() - since < limit:
        if all(s["health"] == "healthy" for s in service_statuses(stack).values()) and serves(stack, run_id):
            return time.monotonic() - since
        time.sleep(1)
    return None
