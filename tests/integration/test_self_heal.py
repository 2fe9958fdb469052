"""A service that hangs is restarted, with no Docker socket in any container.

Each service in turn has every one of its processes frozen from the host (SIGSTOP on the
host PIDs, the container's init aside: the way a deadlocked server or a stuck NFS mount
looks; Docker itself restarts a container only when its main process exits). The kit's
watchdog (docker/common/watchdog.sh, run by the healthcheck) ends it after
MLOPS_KIT_WATCHDOG_SECONDS without an answer and Docker's restart policy starts it again:

- it serves again within 120 s of the freeze, with the data written before;
- only the frozen service restarts (the proxy, whose full healthcheck goes through MLflow,
  and MLflow, whose full healthcheck queries PostgreSQL, are not restarted with it);
- `mlops-kit status` names the restart and the watchdog's reason.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Stack, running_stack
from tests.integration.faults import freeze, serves, service_statuses, thaw, wait_until_serving

#: The issue's bound: a frozen service serves again within this many seconds.
RECOVERY_BOUND = 120
#: How long the test waits at most (bounded: a broken watchdog fails, never hangs the suite).
WAIT = 240


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("heal"), "mlkt-heal") as running:
        yield running


@pytest.mark.parametrize("service", ["mlflow", "postgres", "proxy"])
def test_a_frozen_service_is_restarted_and_serves_again(stack: Stack, service: str) -> None:
    session = stack.session("admin")
    experiment = session.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/create", json={"name": f"heal-{service}"}, timeout=30
    )
    assert experiment.status_code == 200, experiment.text
    run = session.post(
        f"{stack.tracking_uri}/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment.json()["experiment_id"]},
        timeout=30,
    ).json()["run"]["info"]["run_id"]
    restarts_before = {name: int(s["restarts"]) for name, s in service_statuses(stack).items()}

    pids: list[int] = []
    try:
        pids = freeze(stack, service)
        frozen_at = time.monotonic()
        assert not serves(stack, run), f"{service} frozen, yet the request was served"
        recovered = wait_until_serving(stack, run, since=frozen_at, limit=WAIT)
    finally:
        thaw(pids)
    assert recovered is not None, f"{service} did not serve again within {WAIT} s of the freeze"
    assert recovered <= RECOVERY_BOUND, f"{service} served again only after {recovered:.0f} s"
    print(f"\n{service}: frozen -> serving again in {recovered:.0f} s")

    statuses = service_statuses(stack)
    restarted = {name for name, s in statuses.items() if int(s["restarts"]) > restarts_before[name]}
    assert restarted == {service}, statuses
    assert "did not answer" in str(statuses[service]["restart_reason"]), statuses[service]
    shown = " ".join(stack.kit("status").stdout.split())
    assert f"{service} was restarted" in shown and "did not answer" in shown, shown


def test_no_container_has_the_docker_socket(stack: Stack) -> None:
    """Self-healing needs no Docker socket: none of the stack's containers mounts one."""
    for container in stack.containers():
        info = json.loads(
            subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        )[0]
        sources = [str(m.get("Source", "")) for m in info.get("Mounts", [])]
        assert not any(Path(s).name in ("docker.sock", "docker.socket") for s in sources), (info["Name"], sources)
        assert "/var/run/docker.sock" not in json.dumps(info["HostConfig"].get("Binds") or [])
