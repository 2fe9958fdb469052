"""Preflight checks: is this host ready to run the stack? Each failure says how to fix it."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlops_kit.compose import ENGINE_DOWN_MARKERS, ComposeProject
from mlops_kit.config import KitConfig
from mlops_kit.errors import CommandError, KitError, PreflightError
from mlops_kit.runner import CommandRunner
from mlops_kit.tls import RENEW_BEFORE, read_certificate, uses_kit_ca

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

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
_VERSION = re.compile(r"v?(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one preflight check; ``fix`` says what to do when it is not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def parse_version(text: str) -> tuple[int, ...]:
    """'v2.40.3' / '20.10.24+dfsg1' -> (2, 40, 3) / (20, 10, 24)."""
    match = _VERSION.match(text.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


class Preflight:
    """Runs the checks for one stack. Later checks are skipped when the engine is down."""

    def __init__(self, project: ComposeProject) -> None:
        self.project = project
        self.config: KitConfig = project.config
        self.runner: CommandRunner = project.runner
        self._engine_up = False
        self._engine_version: tuple[int, ...] = ()
        self._docker_root = ""

    def run(self, *, include_port: bool = True) -> list[CheckResult]:
        checks: list[Callable[[], CheckResult]] = [self.check_docker_cli, self.check_engine, self.check_compose]
        if include_port:
            checks.append(self.check_port)
        checks += [
            self.check_loopback_exposure,
            self.check_certificate,
            self.check_disk,
            self.check_images,
            self.check_env_file_mode,
        ]
        return [check() for check in checks]

    # ---- individual checks -----------------------------------------------------------

    def check_docker_cli(self) -> CheckResult:
        if shutil.which("docker") is None:
            return CheckResult(
                "docker CLI", FAIL, "the docker command is not installed", f"install it: {BOOTSTRAP_HINT}"
            )
        return CheckResult("docker CLI", OK, shutil.which("docker") or "docker")

    def check_engine(self) -> CheckResult:
        try:
            result = self.runner.run(["docker", "info", "--format", "{{json .}}"], changes_state=False, timeout=20)
            info = json.loads(result.stdout)
        except (CommandError, json.JSONDecodeError) as exc:
            text = str(exc)
            if (
                isinstance(exc, CommandError)
                and not any(m in exc.stderr for m in ENGINE_DOWN_MARKERS)
                and "permission denied" in exc.stderr.lower()
            ):
                return CheckResult(
                    "Docker engine",
                    FAIL,
                    "permission denied on the Docker socket",
                    "run as root, or add your user to the docker group",
                )
            logger.debug("docker info failed: %s", text)
            return CheckResult(
                "Docker engine",
                FAIL,
                "the Docker engine is not reachable",
                f"start it: {BOOTSTRAP_HINT} (or: systemctl start docker)",
            )
        version = str(info.get("ServerVersion", ""))
        self._docker_root = str(info.get("DockerRootDir", ""))
        self._engine_up = True
        self._engine_version = parse_version(version)
        if parse_version(version) < MIN_ENGINE:
            return CheckResult(
                "Docker engine",
                FAIL,
                f"engine {version} is older than {'.'.join(map(str, MIN_ENGINE))}",
                "upgrade the Docker engine",
            )
        return CheckResult("Docker engine", OK, f"engine {version}, storage {info.get('Driver', '?')}")

    def check_compose(self) -> CheckResult:
        try:
            result = self.runner.run(["docker", "compose", "version", "--short"], changes_state=False, timeout=20)
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

    def check_port(self) -> CheckResult:
        address, port = self.config.bind_address, self.config.port
        name = f"port {address}:{port}"
        if self._engine_up and self._published_by_this_stack(port):
            return CheckResult(name, OK, "published by this stack's mlflow service")
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

    def _published_by_this_stack(self, port: int) -> bool:
        try:
            states = self.project.ps()
        except CommandError:
            return False
        # Whichever of its services publishes it (the proxy): `up` on a running stack is fine.
        return any(s.state == "running" and any(f":{port}->" in p for p in s.ports) for s in states)

    def check_disk(self) -> CheckResult:
        path = Path(self._docker_root) if self._docker_root else None
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

    def check_images(self) -> CheckResult:
        if not self._engine_up:
            return CheckResult("images", SKIP, "needs the engine")
        missing = self.project.missing_images()
        if not missing:
            return CheckResult("images", OK, "built")
        base = self.config.base_image
        base_ok = self.runner.run(["docker", "image", "inspect", base], check=False, changes_state=False).ok
        if base_ok:
            return CheckResult("images", OK, f"{', '.join(missing)} will be built from {base}")
        return CheckResult(
            "images",
            WARN,
            f"{', '.join(missing)} must be built and the base image {base} is not on this host",
            f"without a registry, build it: {BOOTSTRAP_HINT} (MLOPS_KIT_BASE_IMAGE)",
        )

    def check_loopback_exposure(self) -> CheckResult:
        """Warn when a port published on 127.0.0.1 is reachable from the local network segment."""
        name = "loopback publishing"
        if not self._engine_up:
            return CheckResult(name, SKIP, "needs the engine")
        if not ipaddress.ip_address(self.config.bind_address).is_loopback:
            return CheckResult(name, OK, f"published on {self.config.bind_address} on purpose")
        if self._engine_version >= LOOPBACK_FIX_ENGINE:
            return CheckResult(name, OK, "engine 28+ keeps 127.0.0.1 ports to this host")
        engine = ".".join(map(str, self._engine_version))
        return CheckResult(
            name,
            WARN,
            f"engine {engine} lets machines on the same network segment reach ports published on "
            f"{self.config.bind_address} (moby issue 45610)",
            LOOPBACK_FIX,
        )

    def check_certificate(self) -> CheckResult:
        """The proxy's certificate: present, not expired, renewed in time."""
        name = "TLS certificate"
        path = self.config.proxy_cert_path
        if not path.is_file():
            return CheckResult(name, SKIP, f"{path} does not exist yet (init or up issues it)")
        try:
            facts = read_certificate(path)
        except KitError as exc:
            return CheckResult(name, FAIL, exc.message, exc.hint or "")
        left = facts.not_after - datetime.now(timezone.utc)
        detail = f"{path.name} valid until {facts.not_after:%Y-%m-%d} for {', '.join(facts.names[:4])}"
        if left.total_seconds() <= 0:
            fix = "mlops-kit tls renew" if uses_kit_ca(self.config) else "replace MLOPS_KIT_TLS_CERT_FILE"
            return CheckResult(name, FAIL, f"{path} expired on {facts.not_after:%Y-%m-%d}", fix)
        if left < RENEW_BEFORE:
            if uses_kit_ca(self.config):
                return CheckResult(name, OK, detail + " (up renews it)")
            return CheckResult(name, WARN, detail, "renew it with its issuer, then mlops-kit up")
        return CheckResult(name, OK, detail)

    def check_env_file_mode(self) -> CheckResult:
        env_file = self.config.env_file
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
