"""The harness the integration tests and the benchmarks share: kit folders, the CLI, stacks.

A plain module, not a conftest: the benchmarks import it without pytest. Every stack
made here gets its own folder, project name and free port, and is driven through the
real CLI (`python -m mlops_kit`) in an environment without the caller's kit settings.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What a deployment needs: the compose file, the example config, the image sources.
KIT_FILES = ("compose.yaml", ".env.example", "docker")
CLI_TIMEOUT = 1800
#: Variables of a developer's shell that would change what the kit or Compose does.
KIT_VARIABLE_PREFIXES = ("MLOPS_KIT_", "COMPOSE_", "MLFLOW_")

# testcontainers starts its reaper (Ryuk) from an image on a registry, and no registry
# can be reached here: the helper containers are removed by their fixtures instead
# (context managers, also when a test fails or pytest is interrupted).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def copy_kit(target: Path) -> Path:
    """Copy what a deployment needs into ``target``, as an operator would have it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in KIT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target / name)
    return target


def free_port() -> int:
    """A TCP port nothing listens on at this moment (on loopback)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without kit settings, so a developer's shell cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(KIT_VARIABLE_PREFIXES)}
    env.update(extra or {})
    return env


def cli_argv(*args: str) -> list[str]:
    """The argv of the kit's CLI in this interpreter (the checkout's code)."""
    return [sys.executable, "-m", "mlops_kit", *args]


def run_cli(
    directory: Path,
    *args: str,
    env: dict[str, str] | None = None,
    input: str | None = None,
    timeout: float = CLI_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in ``directory`` with a clean environment (plus ``env``); never raises on its exit code."""
    return subprocess.run(
        cli_argv(*args),
        input=input,
        cwd=directory,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=timeout,
        check=False,
    )


@dataclass
class Stack:
    """A kit folder with its own project name and port, driven through the real CLI."""

    directory: Path
    project: str
    port: int
    #: Default time limit of one CLI call (a benchmark's backup may take hours).
    cli_timeout: float = CLI_TIMEOUT

    def kit(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `mlops-kit ARGS` in the stack's folder; with ``check``, a non-zero exit fails with both streams."""
        result = run_cli(self.directory, *args, env=env, input=input, timeout=timeout or self.cli_timeout)
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
        from mlops_kit.services.mlflow import ServerAccess, as_mlflow_client

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

    def diagnostics(self, log_lines: int = 25) -> str:
        """What a failed test needs to say about the stack: each container's state, restarts,
        exit code and health, who listens on the published port, and the last log lines."""
        lines: list[str] = []
        for cid in self.containers():
            result = subprocess.run(["docker", "inspect", cid], capture_output=True, text=True, check=False)
            if result.returncode != 0:
                continue
            info = json.loads(result.stdout)[0]
            state = info["State"]
            health = state.get("Health") or {}
            lines.append(
                f"{info['Name'].lstrip('/')}: {state['Status']} restarts={info.get('RestartCount')} "
                f"exit={state.get('ExitCode')} oom={state.get('OOMKilled')} error={state.get('Error')!r} "
                f"started={state.get('StartedAt')} finished={state.get('FinishedAt')} "
                f"health={health.get('Status')}"
            )
            for probe in (health.get("Log") or [])[-2:]:
                lines.append(f"    healthcheck {probe.get('ExitCode')}: {probe.get('Output', '').strip()[:300]}")
            logs = subprocess.run(
                ["docker", "logs", "--timestamps", "--tail", str(log_lines), cid],
                capture_output=True,
                text=True,
                check=False,
            )
            lines.extend(f"    | {line}" for line in (logs.stdout + logs.stderr).splitlines())
        listeners = subprocess.run(
            ["ss", "-Htanp", f"sport = :{self.port}"], capture_output=True, text=True, check=False
        )
        lines.append(f"sockets on port {self.port}:")
        lines.extend(f"    {line}" for line in listeners.stdout.splitlines())
        events = subprocess.run(
            [
                *("docker", "events", "--since", "30m", "--until", "0s"),
                *("--filter", f"label=com.docker.compose.project={self.project}", "--filter", "type=container"),
                *("--format", "{{.TimeNano}} {{.Action}} {{.Actor.Attributes.name}}"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        lines.append("container events (the engine keeps the last 256):")
        lines.extend(f"    {line}" for line in events.stdout.splitlines() if not line.split()[1].startswith("exec_"))
        return "\n".join(lines)

    def session(self, user: str | None = "admin") -> requests.Session:
        """A requests session that trusts the stack's CA, logged in as ``user`` (None: anonymous)."""
        import requests

        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the stack's CA
        session.verify = str(self.ca_file)
        if user:
            session.auth = (user, self.password(user))
        return session

    def init(self, *extra: str, env: dict[str, str] | None = None, input: str | None = None) -> None:
        """`init` with the stack's project name and port, plus ``extra`` options."""
        self.kit("init", "--project-name", self.project, "--port", str(self.port), *extra, env=env, input=input)

    def volumes(self) -> list[str]:
        out = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return sorted(out.split())

    def env_values(self) -> dict[str, str]:
        """The settings in the stack's `.env` (comments left out)."""
        lines = (self.directory / ".env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))

    def set_env(self, key: str, value: str) -> None:
        """Set one `.env` setting, the way an operator edits the file."""
        env_file = self.directory / ".env"
        lines = [line for line in env_file.read_text().splitlines() if not line.startswith(f"{key}=")]
        env_file.write_text("\n".join([*lines, f"{key}={value}"]) + "\n")

    def reads_experiments(self, user: str, password: str, *experiment_ids: str) -> tuple[int, ...]:
        """The HTTP status of ``user`` (logging in with ``password``) reading each experiment."""
        session = self.session(None)
        session.auth = (user, password)
        url = f"{self.tracking_uri}/api/2.0/mlflow/experiments/get"
        return tuple(
            session.get(url, params={"experiment_id": experiment_id}, timeout=30).status_code
            for experiment_id in experiment_ids
        )

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.kit("status", "--json", check=False).stdout)
        return answer

    def destroy(self) -> None:
        """Remove containers, networks and volumes whatever state the test left."""
        if (self.directory / ".env").exists():
            self.kit("down", "--volumes", "--yes", check=False)
        # Safety net for a test that changed .env: Compose v2 finds a project by its labels.
        compose_down(self.project, self.directory)
        LIVE_STACKS.pop(self.project, None)


#: Stacks made and not destroyed yet, by project name: a failed test reports their state.
LIVE_STACKS: dict[str, Stack] = {}

#: The `stack_factory` fixture: call it (optionally with a name prefix) for a fresh stack.
StackFactory = Callable[..., Stack]


def compose_down(project: str, directory: Path) -> None:
    """`docker compose down --volumes --remove-orphans` for ``project``, run from its kit folder.

    From the kit folder: its .env names the project's volumes; from elsewhere Compose
    would resolve them with whatever .env it found there.
    """
    subprocess.run(
        ["docker", "compose", "--project-name", project, "down", "--volumes", "--remove-orphans"],
        cwd=directory,
        env=clean_env(),
        capture_output=True,
        check=False,
    )


def project_containers(project: str) -> list[str]:
    """Ids of every container Compose labelled with ``project`` (running or not)."""
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def new_stack(base: Path, prefix: str = "mlkt", *, project: str | None = None) -> Stack:
    """A fresh kit copy in ``base``/<project> with a unique project name (or ``project``) and a free port."""
    name = project or f"{prefix}-{uuid.uuid4().hex[:8]}"
    stack = Stack(directory=copy_kit(base / name), project=name, port=free_port())
    LIVE_STACKS[name] = stack
    return stack


@contextmanager
def fresh_stack(base: Path, prefix: str = "mlkt", *, project: str | None = None) -> Iterator[Stack]:
    """A new stack (not initialised), destroyed with its volumes when the block ends, however it ends."""
    stack = new_stack(base, prefix, project=project)
    try:
        yield stack
    finally:
        stack.destroy()


@contextmanager
def running_stack(
    base: Path, prefix: str = "mlkt", *init_args: str, env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """`init` (with ``init_args`` and ``env``) and `up` on a fresh stack; destroyed when the block ends."""
    with fresh_stack(base, prefix) as stack:
        stack.init(*init_args, env=env)
        stack.kit("up")
        yield stack


def _kit_image_ids() -> dict[str, str]:
    listed = subprocess.run(
        ["docker", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "mlops-kit/*"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return dict(line.split() for line in listed.splitlines() if line.strip())


@contextmanager
def keeping_kit_images() -> Iterator[None]:
    """Put every ``mlops-kit/*`` tag back on the image it named before, for a test that builds.

    A Compose build labels the images with its own project's name: the layers come from the
    cache, but the image ids change, and every test image built FROM the kit's (the older
    MLflow releases) would miss the cache and build again, minutes each.
    """
    before = _kit_image_ids()
    try:
        yield
    finally:
        for tag, image_id in before.items():
            if _kit_image_ids().get(tag) != image_id:
                subprocess.run(["docker", "tag", image_id, tag], capture_output=True, check=False)


def tcp_listeners(container_id: str) -> list[str]:
    """The listening TCP sockets (state 0A) in a container's network namespace, as /proc lists them."""
    tcp = subprocess.run(
        ["docker", "exec", container_id, "cat", "/proc/net/tcp", "/proc/net/tcp6"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line for line in tcp.splitlines() if line.split()[3:4] == ["0A"]]


def volume_mountpoint(volume: str) -> Path:
    """Where a Docker volume's files are on this host."""
    out = subprocess.run(
        ["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", volume],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Path(out.strip())


def prometheus_query(stack: Stack, expr: str) -> list[dict[str, Any]]:
    """The bundled Prometheus's answer to an instant query (asked inside its container)."""
    result = subprocess.run(
        [
            "docker",
            "exec",
            stack.container("prometheus")["Id"],
            "promtool",
            "query",
            "instant",
            "-o",
            "json",
            "http://127.0.0.1:9090",
            expr,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{expr}: {result.stderr}"
    return list(json.loads(result.stdout or "[]"))


def psql(stack: Stack, query: str, database: str = "mlflow") -> str:
    """Run one query in the stack's PostgreSQL as its superuser (over its socket); the unaligned output."""
    labels = ["--filter", f"label=com.docker.compose.project={stack.project}"]
    labels += ["--filter", "label=com.docker.compose.service=postgres"]
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


@contextmanager
def remote_host_link() -> Iterator[RemoteHost]:
    """Make a remote host (namespace, veth link, addresses); removed with its link when the block ends."""
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
