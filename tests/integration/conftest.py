"""Integration harness: real Docker engine, real images, one stack per fixture.

Every stack gets a unique project name and a free port, so stacks never
collide (with each other or with a stack the operator runs on this host).
Nothing here mocks Docker, MLflow or PostgreSQL.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mlops_kit.services.mlflow import ServerAccess, as_mlflow_client
from tests.conftest import copy_kit

if TYPE_CHECKING:
    import requests

CLI_TIMEOUT = 1800

# testcontainers starts its reaper (Ryuk) from an image on a registry, and no registry
# can be reached here: the helper containers are removed by their fixtures instead
# (context managers, also when a test fails).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without kit settings, so a developer's shell cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_KIT_", "COMPOSE_", "MLFLOW_"))}
    env.update(extra or {})
    return env


@dataclass
class Stack:
    """A kit folder with its own project name and port, driven through the real CLI."""

    directory: Path
    project: str
    port: int

    def kit(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = CLI_TIMEOUT,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mlops_kit", *args],
            input=input,
            cwd=self.directory,
            capture_output=True,
            text=True,
            env=clean_env(env),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"mlops-kit {' '.join(args)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    @property
    def tracking_uri(self) -> str:
        """What a data scientist on this host uses: HTTPS through the proxy."""
        return f"https://localhost:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The kit's CA as `init` publishes it for clients."""
        return self.directory / "tls" / "mlops-kit-ca.crt"

    def client_variables(self, user: str = "admin") -> dict[str, str]:
        """The MLflow client's variables for ``user``, as `client-env --user` prints them."""
        result = self.kit("client-env", "--user", user, "--shell", "json")
        return dict(json.loads(result.stdout))

    def password(self, user: str = "admin") -> str:
        return self.client_variables(user)["MLFLOW_TRACKING_PASSWORD"]

    @contextmanager
    def as_user(self, user: str = "admin") -> Iterator[dict[str, str]]:
        """Point this process's MLflow client at the stack, logged in as ``user``."""
        variables = self.client_variables(user)
        access = ServerAccess(
            base_url=variables["MLFLOW_TRACKING_URI"],
            verify=variables["MLFLOW_TRACKING_SERVER_CERT_PATH"],
            username=user,
            password=variables["MLFLOW_TRACKING_PASSWORD"],
        )
        with as_mlflow_client(access):
            yield variables

    def containers(self) -> list[str]:
        """Ids of every container of the project (running or not)."""
        return project_containers(self.project)

    def container(self, service: str) -> dict[str, Any]:
        """`docker inspect` of the service's container."""
        for cid in self.containers():
            out = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=True).stdout
            info = json.loads(out)[0]
            if info["Config"]["Labels"]["com.docker.compose.service"] == service:
                return dict(info)
        raise AssertionError(f"no {service} container in {self.project}")

    def logs(self, service: str) -> str:
        """The service container's whole log, stdout then stderr."""
        result = subprocess.run(
            ["docker", "logs", self.container(service)["Id"]], capture_output=True, text=True, check=True
        )
        return result.stdout + result.stderr

    def session(self, user: str | None = "admin") -> requests.Session:
        """A requests session that trusts the stack's CA, logged in as ``user`` (None: anonymous)."""
        import requests

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the stack's CA
        session.verify = str(self.ca_file)
        if user:
            session.auth = (user, self.password(user))
        return session

    def init(self, *extra: str, env: dict[str, str] | None = None) -> None:
        self.kit("init", "--project-name", self.project, "--port", str(self.port), *extra, env=env)

    def volumes(self) -> list[str]:
        out = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted(out.split())

    def status(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.kit("status", "--json", check=False).stdout)

    def destroy(self) -> None:
        """Remove containers, networks and volumes whatever state the test left."""
        if (self.directory / ".env").exists():
            self.kit("down", "--volumes", "--yes", check=False)
        # Safety net for a test that changed .env: Compose v2 finds a project by its labels.
        subprocess.run(
            ["docker", "compose", "--project-name", self.project, "down", "--volumes", "--remove-orphans"],
            cwd=self.directory,
            capture_output=True,
            check=False,
        )


def project_containers(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def new_stack(base: Path, prefix: str = "mlkt") -> Stack:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return Stack(directory=copy_kit(base / name), project=name, port=free_port())


@pytest.fixture(scope="session")
def docker_engine() -> None:
    """The suite needs a real engine: fail loudly (never skip) when there is none."""
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is not installed: run scripts/bootstrap-host.sh first")
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"no Docker engine answers ({result.stderr.strip()}): run scripts/bootstrap-host.sh first")


@pytest.fixture(scope="session")
def kit_images(docker_engine: None, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Build the images from this checkout's Dockerfiles once per session (cached layers: fast)."""
    builder = new_stack(tmp_path_factory.mktemp("build"), prefix="mlkt-build")
    builder.init()
    builder.kit("build")


@pytest.fixture
def stack_factory(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[callable]:  # type: ignore[valid-type]
    """Make fresh stacks; every one is torn down (with its volumes) at the end of the test."""
    made: list[Stack] = []

    def make(prefix: str = "mlkt") -> Stack:
        stack = new_stack(tmp_path_factory.mktemp("stack"), prefix)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.destroy()


@pytest.fixture
def fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """The MLflow client in this process gives up at once instead of retrying for minutes."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def tcp_listeners(container_id: str) -> list[str]:
    """The listening TCP sockets (state 0A) in a container's network namespace, as /proc lists them."""
    tcp = subprocess.run(
        ["docker", "exec", container_id, "cat", "/proc/net/tcp", "/proc/net/tcp6"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in tcp.splitlines() if line.split()[3:4] == ["0A"]]


@dataclass
class RemoteHost:
    """A host of the test's own on another network: a network namespace joined to this one by a veth pair.

    To this host's services it is a remote client with its own address (never
    rewritten by Docker's userland proxy, which every local client goes through).
    """

    namespace: str
    address: str  # the remote host's address
    host_address: str  # this host's end of the link (bind a stack here to serve the remote host)

    def run(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command on the remote host (in its namespace)."""
        return subprocess.run(["ip", "netns", "exec", self.namespace, *argv], text=True, **kwargs)

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], text=True, **kwargs)


def _free_link() -> tuple[str, str]:
    """A /30 in 10.250.0.0/16 that no route of this host uses: (this host's end, the remote end)."""
    used = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    for _ in range(50):
        subnet = ipaddress.ip_network(f"10.250.{random.randrange(256)}.{4 * random.randrange(64)}/30")
        if f"{subnet.network_address}/" not in used and str(subnet.network_address) not in used:
            first, second = subnet.hosts()
            return str(first), str(second)
    raise AssertionError("no free /30 in 10.250.0.0/16")


@pytest.fixture(scope="module")
def remote_host() -> Iterator[RemoteHost]:
    """A remote host for this test module; removed (with its link) afterwards."""
    suffix = uuid.uuid4().hex[:6]
    namespace, host_if, remote_if = f"mlkt-remote-{suffix}", f"mlkt-h{suffix}", f"mlkt-r{suffix}"
    host_address, address = _free_link()

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", namespace)
        ip("link", "add", host_if, "type", "veth", "peer", "name", remote_if)
        ip("link", "set", remote_if, "netns", namespace)
        ip("addr", "add", f"{host_address}/30", "dev", host_if)
        ip("link", "set", host_if, "up")
        ip("netns", "exec", namespace, "ip", "addr", "add", f"{address}/30", "dev", remote_if)
        ip("netns", "exec", namespace, "ip", "link", "set", remote_if, "up")
        ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield RemoteHost(namespace, address, host_address)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], check=False, capture_output=True)


def psql(stack: Stack, query: str, database: str = "mlflow") -> str:
    """Run one query in the stack's PostgreSQL as its superuser (over its socket); the unaligned output."""
    labels = ("--filter", f"label=com.docker.compose.project={stack.project}")
    labels += ("--filter", "label=com.docker.compose.service=postgres")
    postgres = subprocess.run(
        ["docker", "ps", "-q", *labels], capture_output=True, text=True, check=True
    ).stdout.split()
    assert postgres, f"no running postgres container in {stack.project}"
    return subprocess.run(
        ["docker", "exec", "-u", "postgres", postgres[0], "psql", "-d", database, "-Atc", query],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
