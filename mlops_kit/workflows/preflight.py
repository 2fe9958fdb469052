"""Preflight checks: is this host ready to run the stack? Each failure says how to fix it.

Pre-flight changes nothing (Sentry's installer calls this "no impact yet"): every
check only reads. The engine is asked once (:func:`read_engine`) and its facts are
handed to the checks that need them, so each check is a small function of explicit
inputs. `up` runs these before it writes a file or starts a container.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlops_kit.checks import FAIL, OK, SKIP, WARN, CheckResult
from mlops_kit.config.loader import KitConfig
from mlops_kit.engine.compose import ComposeProject, ServiceState
from mlops_kit.engine.docker_errors import NO_PERMISSION, PERMISSION_HINT, START_ENGINE_HINT, classify
from mlops_kit.errors import CommandError, KitError, PreflightError
from mlops_kit.runner import CommandRunner
from mlops_kit.workflows.tls import RENEW_BEFORE, read_certificate, uses_kit_ca

logger = logging.getLogger(__name__)

MIN_ENGINE = (20, 10)
# 2.24: file secrets, depends_on.restart, `up --wait --wait-timeout`, `ps --format json` lines.
MIN_COMPOSE = (2, 24)
# Engines before 28.0 accept packets for ports published on 127.0.0.1 from other
# machines on the same network segment (moby issue 45610).
LOOPBACK_FIX_ENGINE = (28, 0)
LOOPBACK_FIX = "upgrade to Docker Engine 28+, or drop such packets: see docs/security.md, 'Docker Engine older than 28'"
MIN_FREE_DISK_GIB = 5.0
WARN_FREE_DISK_GIB = 20.0
BOOTSTRAP_HINT = "sudo scripts/bootstrap-host.sh"

_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)")


def parse_version(text: str) -> tuple[int, ...]:
    """'v2.40.3' / '20.10.24+dfsg1' -> (2, 40, 3) / (20, 10, 24)."""
    match = _VERSION.match(text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


@dataclass(frozen=True)
class EngineFacts:
    """What `docker info` said, read once per preflight; ``problem`` is set when the engine cannot be used."""

    reachable: bool
    version: tuple[int, ...] = ()
    version_text: str = ""
    driver: str = ""
    docker_root: str = ""
    problem: str = ""
    fix: str = ""


def read_engine(runner: CommandRunner) -> EngineFacts:
    """Ask the engine for its version, storage driver and data folder (read-only)."""
    try:
        result = runner.run(["docker", "info", "--format", "{{json .}}"], changes_state=False, timeout=20)
        info = json.loads(result.stdout)
    except CommandError as exc:
        if classify(exc.stdout, exc.stderr) == NO_PERMISSION:
            return EngineFacts(False, problem="permission denied on the Docker socket", fix=PERMISSION_HINT)
        logger.debug("docker info failed: %s", exc)
        return EngineFacts(False, problem="the Docker engine is not reachable", fix=START_ENGINE_HINT)
    except json.JSONDecodeError:
        return EngineFacts(False, problem="the Docker engine is not reachable", fix=START_ENGINE_HINT)
    text = str(info.get("ServerVersion", ""))
    return EngineFacts(
        True,
        version=parse_version(text),
        version_text=text,
        driver=str(info.get("Driver", "?")),
        docker_root=str(info.get("DockerRootDir", "")),
    )


@dataclass(frozen=True)
class PreflightReport:
    """Every check's result, and the engine facts they were made from."""

    results: list[CheckResult]
    engine: EngineFacts

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]


def run_preflight(project: ComposeProject, *, include_port: bool = True, before_up: bool = False) -> PreflightReport:
    """Run every read-only check for ``project``'s stack; checks that need the engine skip without one.

    ``before_up``: `up` runs next and renews the kit CA's certificate itself.
    """
    config, runner = project.config, project.runner
    engine = read_engine(runner)
    results = [check_docker_cli(), check_engine(engine), check_compose(runner)]
    if include_port:
        results.append(check_port(config, published_ports(project) if engine.reachable else set()))
    results += [
        check_loopback_exposure(config, engine),
        check_certificate(config, up_renews=before_up),
        check_disk(engine),
        check_images(project, engine),
        check_env_file_mode(config.env_file),
    ]
    return PreflightReport(results, engine)


# ---- the checks --------------------------------------------------------------------------


def check_docker_cli() -> CheckResult:
    found = shutil.which("docker")
    if found is None:
        return CheckResult("docker CLI", FAIL, "the docker command is not installed", f"install it: {BOOTSTRAP_HINT}")
    return CheckResult("docker CLI", OK, found)


def check_engine(engine: EngineFacts) -> CheckResult:
    if not engine.reachable:
        return CheckResult("Docker engine", FAIL, engine.problem, engine.fix)
    if engine.version < MIN_ENGINE:
        return CheckResult(
            "Docker engine",
            FAIL,
            f"engine {engine.version_text} is older than {'.'.join(map(str, MIN_ENGINE))}",
            "upgrade the Docker engine",
        )
    return CheckResult("Docker engine", OK, f"engine {engine.version_text}, storage {engine.driver}")


def check_compose(runner: CommandRunner) -> CheckResult:
    try:
        result = runner.run(["docker", "compose", "version", "--short"], changes_state=False, timeout=20)
    except CommandError:
        return CheckResult(
            "Compose v2", FAIL, "`docker compose` (v2) is not installed", f"install it: {BOOTSTRAP_HINT}"
        )
    version = result.stdout.strip()
    if parse_version(version) < MIN_COMPOSE:
        return CheckResult(
            "Compose v2",
            FAIL,
            f"Compose {version} is older than {'.'.join(map(str, MIN_COMPOSE))}",
            f"upgrade it: {BOOTSTRAP_HINT}",
        )
    return CheckResult("Compose v2", OK, f"Compose {version}")


def published_ports(project: ComposeProject) -> set[int]:
    """Host ports this stack's running containers publish (its own port is not "in use" for `up`)."""
    try:
        states = project.ps()
    except KitError:
        return set()
    return {port for state in states if state.state == "running" for port in _host_ports(state)}


_PUBLISHED = re.compile(r":(\d+)->")


def _host_ports(state: ServiceState) -> list[int]:
    # ServiceState.ports reads "URL:published->target".
    return [int(match.group(1)) for p in state.ports if (match := _PUBLISHED.search(p))]


def check_port(config: KitConfig, published_by_stack: set[int]) -> CheckResult:
    address, port = config.bind_address, config.port
    name = f"port {address}:{port}"
    if port in published_by_stack:
        return CheckResult(name, OK, "published by this stack's proxy")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return CheckResult(
                    name,
                    FAIL,
                    f"port {port} on {address} is already in use",
                    "stop what uses it, or choose another: mlops-kit init --force --port PORT (MLOPS_KIT_PORT)",
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return CheckResult(
                    name,
                    FAIL,
                    f"{address} is not an address of this host",
                    "fix MLOPS_KIT_BIND_ADDRESS in .env (127.0.0.1, 0.0.0.0 or one of this host's addresses)",
                )
            return CheckResult(
                name,
                FAIL,
                f"cannot bind {address}:{port}: {exc.strerror}",
                "choose another port or address (MLOPS_KIT_PORT, MLOPS_KIT_BIND_ADDRESS)",
            )
    return CheckResult(name, OK, "free")


def check_disk(engine: EngineFacts) -> CheckResult:
    path = Path(engine.docker_root) if engine.docker_root else None
    if path is None or not path.exists():
        return CheckResult("disk space", SKIP, "Docker's data folder is not visible from here")
    free_gib = shutil.disk_usage(path).free / 2**30
    detail = f"{free_gib:.1f} GiB free in {path}"
    if free_gib < MIN_FREE_DISK_GIB:
        return CheckResult(
            "disk space",
            FAIL,
            detail,
            f"free at least {MIN_FREE_DISK_GIB:.0f} GiB (images need ~2 GiB; data grows with use)",
        )
    if free_gib < WARN_FREE_DISK_GIB:
        return CheckResult("disk space", WARN, detail, "plan more space for artifacts and backups")
    return CheckResult("disk space", OK, detail)


def check_images(project: ComposeProject, engine: EngineFacts) -> CheckResult:
    if not engine.reachable:
        return CheckResult("images", SKIP, "needs the engine")
    missing = project.missing_images()
    if not missing:
        return CheckResult("images", OK, "built")
    base = project.config.base_image
    base_ok = project.runner.run(["docker", "image", "inspect", base], check=False, changes_state=False).ok
    if base_ok:
        return CheckResult("images", OK, f"{', '.join(missing)} will be built from {base}")
    return CheckResult(
        "images",
        WARN,
        f"{', '.join(missing)} must be built and the base image {base} is not on this host",
        f"without a registry, build it: {BOOTSTRAP_HINT} (MLOPS_KIT_BASE_IMAGE)",
    )


def check_loopback_exposure(config: KitConfig, engine: EngineFacts) -> CheckResult:
    """Warn when a port published on 127.0.0.1 is reachable from the local network segment."""
    name = "loopback publishing"
    if not engine.reachable:
        return CheckResult(name, SKIP, "needs the engine")
    if not ipaddress.ip_address(config.bind_address).is_loopback:
        return CheckResult(name, OK, f"published on {config.bind_address} on purpose")
    if engine.version >= LOOPBACK_FIX_ENGINE:
        return CheckResult(name, OK, "engine 28+ keeps 127.0.0.1 ports to this host")
    return CheckResult(
        name,
        WARN,
        f"engine {'.'.join(map(str, engine.version))} lets machines on the same network segment reach ports "
        f"published on {config.bind_address} (moby issue 45610)",
        LOOPBACK_FIX,
    )


def check_certificate(config: KitConfig, *, up_renews: bool = False) -> CheckResult:
    """The proxy's certificate: present, not expired, renewed in time.

    ``up_renews``: the check runs before `up`, which renews a kit CA's certificate itself.
    """
    name = "TLS certificate"
    path = config.proxy_cert_path
    if not path.is_file():
        return CheckResult(name, SKIP, f"{path} does not exist yet (init or up issues it)")
    try:
        facts = read_certificate(path)
    except KitError as exc:
        return CheckResult(name, FAIL, exc.message, exc.hint or "")
    left = facts.not_after - datetime.now(timezone.utc)
    detail = f"{path.name} valid until {facts.not_after:%Y-%m-%d} for {', '.join(facts.names[:4])}"
    kit_ca = uses_kit_ca(config)
    if left.total_seconds() <= 0:
        if kit_ca and up_renews:
            return CheckResult(name, OK, f"{path.name} expired on {facts.not_after:%Y-%m-%d} (up renews it)")
        fix = "mlops-kit tls renew" if kit_ca else "replace MLOPS_KIT_TLS_CERT_FILE"
        return CheckResult(name, FAIL, f"{path} expired on {facts.not_after:%Y-%m-%d}", fix)
    if left < RENEW_BEFORE and kit_ca:
        return CheckResult(name, OK, detail + " (up renews it)")
    if left < RENEW_BEFORE:
        return CheckResult(name, WARN, detail, "renew it with its issuer, then mlops-kit up")
    return CheckResult(name, OK, detail)


def check_env_file_mode(env_file: Path) -> CheckResult:
    if not env_file.exists():
        return CheckResult(".env", SKIP, f"{env_file} does not exist yet")
    mode = env_file.stat().st_mode & 0o777
    if mode & 0o077:
        return CheckResult(".env", WARN, f"{env_file} has mode {mode:o}", f"chmod 600 {env_file}")
    return CheckResult(".env", OK, f"mode {mode:o}")


def raise_on_failure(results: list[CheckResult]) -> None:
    """Raise :class:`PreflightError` for the first failed check."""
    for result in results:
        if result.status == FAIL:
            raise PreflightError(f"{result.name}: {result.detail}", hint=result.fix or None)
