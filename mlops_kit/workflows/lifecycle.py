"""Stack lifecycle: init, up (healthy), build, down, status.

`up` runs in two parts, as Sentry's installer does: first the read-only preflight
("no impact yet"), then the steps that change things, each small and idempotent
(host files, images, the store check, Compose). Running `up` again is how a stack
picks up a new configuration or a newer kit's files.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlops_kit.checks import CheckResult
from mlops_kit.config.envfile import InitResult, init_choices, init_env_file, sync_compose_file, upgrade_env_file
from mlops_kit.config.loader import KitConfig, load_config
from mlops_kit.config.secrets import (
    ALERT_SECRET_FILES,
    ALERTMANAGER_PASSWORD_FILE,
    UPGRADE_SECRET_FILES,
    ensure_empty_secret_files,
    ensure_secret_files,
)
from mlops_kit.engine.compose import ComposeProject, ServiceState
from mlops_kit.engine.jobs import last_line
from mlops_kit.errors import CommandError, ConfigError, KitError, StackError
from mlops_kit.runner import CommandRunner
from mlops_kit.services import MLFLOW, PROXY, kit_services, stack_services
from mlops_kit.services.base import ServiceSpec
from mlops_kit.services.mlflow import server_version
from mlops_kit.stores.check import CHECK_SERVICE, parse_verdict, require_store
from mlops_kit.workflows.preflight import raise_on_failure, run_preflight
from mlops_kit.workflows.records import status_dir
from mlops_kit.workflows.schema import refuse_unplanned_migration
from mlops_kit.workflows.tls import ensure_certificates
from mlops_kit.workflows.users import ADMIN_SECRET, admin_access, anonymous_access

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
#: How long `up` waits for a running service Compose saw unhealthy to be healthy again, and
#: how many times it then waits for the whole stack again: the recovery within its
#: --wait-timeout, each wait after it for what is left of it, at least 30 s.
RECOVERY_SECONDS = 90.0
RECOVERY_ATTEMPTS = 2


@dataclass(frozen=True)
class InitReport:
    """What `init` wrote: `.env`, the secrets it generated or kept, the certificates it issued."""

    config: KitConfig
    written: InitResult
    certificates: list[str]


@dataclass
class UpResult:
    states: list[ServiceState]
    built: list[str]
    build_seconds: float
    start_seconds: float
    preflight: list[CheckResult] = field(default_factory=list)
    #: Files `up` created or refreshed first (secrets of a newer kit, TLS certificate).
    prepared: list[str] = field(default_factory=list)
    #: The stack `up` started (its config and runner, with the dry run's log).
    project: ComposeProject | None = None


def init_stack(
    project_dir: Path,
    env_file: Path,
    options: Mapping[str, str | None],
    *,
    force: bool,
    s3_keys: tuple[str, str] | None = None,
) -> InitReport:
    """Write `.env` for this host from ``options`` (by setting attr) and the environment, secrets, certificates."""
    choices = init_choices(options, os.environ)
    written = init_env_file(project_dir, choices, env_file=env_file, force=force, s3_keys=s3_keys)
    # Validate what was written (and the environment on top of it) right away.
    try:
        config = load_config(project_dir, written.env_file)
    except ConfigError as error:
        if written.backup is None:
            raise
        kept = f"the previous configuration is kept as {written.backup}"
        raise ConfigError(error.message, hint=f"{error.hint}; {kept}" if error.hint else kept) from None
    return InitReport(config=config, written=written, certificates=ensure_certificates(config))


def prepare_env_file(project_dir: Path, env_file: Path) -> tuple[InitReport | None, dict[str, str]]:
    """`up`'s first step: init when there is no `.env`, else bring an older kit's `.env` up to date.

    Returns the init report (or None) and the `.env` values an upgrade changed.
    """
    if not env_file.exists():
        return init_stack(project_dir, env_file, {}, force=False), {}
    return None, upgrade_env_file(env_file)


def start_stack(
    project_dir: Path,
    env_file: Path,
    *,
    dry_run: bool,
    wait_timeout: int,
    force_build: bool = False,
    on_step: Callable[[str], None] = lambda _msg: None,
    on_states: Callable[[list[ServiceState]], None] = lambda _states: None,
) -> UpResult:
    """`mlops-kit up` after :func:`prepare_env_file`: load the configuration, then :func:`bring_up`."""
    config = load_config(project_dir, env_file)
    project = ComposeProject(config, CommandRunner(dry_run=dry_run, cwd=config.project_dir))
    return bring_up(project, wait_timeout=wait_timeout, force_build=force_build, on_step=on_step, on_states=on_states)


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str
    health: str
    image: str
    ports: tuple[str, ...]
    version: str | None
    #: Docker's restarts of the container, and the kit watchdog's reason for the last one.
    restarts: int = 0
    restart_reason: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "service": self.service,
            "state": self.state,
            "health": self.health,
            "image": self.image,
            "ports": list(self.ports),
            "version": self.version,
            "restarts": self.restarts,
            "restart_reason": self.restart_reason,
        }


@dataclass(frozen=True)
class StackStatus:
    project: str
    tracking_uri: str
    services: list[ServiceStatus]

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.state == "running" and s.health == "healthy" for s in self.services)

    def to_dict(self) -> dict[str, object]:
        return {
            "project": self.project,
            "tracking_uri": self.tracking_uri,
            "healthy": self.healthy,
            "services": [s.to_dict() for s in self.services],
        }


def bring_up(
    project: ComposeProject,
    *,
    wait_timeout: int,
    force_build: bool = False,
    on_step: Callable[[str], None] = lambda _msg: None,
    on_states: Callable[[list[ServiceState]], None] = lambda _states: None,
) -> UpResult:
    """Preflight (read-only), then: host files, missing images, the store check, start and wait until healthy."""
    on_step("Preflight checks")
    checks = run_preflight(project, before_up=True).results
    raise_on_failure(checks)

    # From here on, things change; each step is idempotent.
    on_step("Secrets and TLS certificate")
    prepared = [] if project.runner.dry_run else prepare_host_files(project.config)
    built = [s.name for s in kit_services(project.config)] if force_build else project.missing_images()
    build_started = time.monotonic()
    if built:
        on_step(f"Building images: {', '.join(built)} (first time: a few minutes)")
        _build(project, built)
    build_seconds = time.monotonic() - build_started

    if not project.runner.dry_run:
        on_step("Checking that the MLflow image fits the database's schema")
        refuse_unplanned_migration(project, wait_timeout=wait_timeout)

    if project.config.store.in_bucket and not project.runner.dry_run:
        on_step(f"Checking the artifact store ({project.config.artifact_store}: endpoint, keys, bucket)")
        require_store(project)

    on_step("Starting services and waiting until they are healthy")
    start = time.monotonic()
    error = _start_and_wait(project, wait_timeout, on_states)
    for _ in range(RECOVERY_ATTEMPTS):
        until = min(start + wait_timeout, time.monotonic() + RECOVERY_SECONDS)
        if not isinstance(error, CommandError) or not _recovers(project, error, until=until):
            break
        logger.info("a service Compose saw unhealthy is healthy again: waiting for the stack once more")
        error = _start_and_wait(project, max(int(start + wait_timeout - time.monotonic()), 30), on_states)
    start_seconds = time.monotonic() - start
    states = [] if project.runner.dry_run else project.ps()
    on_states(states)
    if error is not None:
        if isinstance(error, CommandError):
            raise _unhealthy_error(project, states, error) from error
        raise error
    return UpResult(
        states=states,
        built=built,
        build_seconds=build_seconds,
        start_seconds=start_seconds,
        preflight=checks,
        prepared=prepared,
        project=project,
    )


def _start_and_wait(
    project: ComposeProject, wait_timeout: int, on_states: Callable[[list[ServiceState]], None]
) -> BaseException | None:
    """`compose up --wait`, the services' states reported while it waits; what it raised, if anything."""
    outcome: dict[str, BaseException] = {}

    def run_up() -> None:
        try:
            project.up(wait_timeout=wait_timeout)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    worker = threading.Thread(target=run_up, name="compose-up", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if not project.runner.dry_run:
            try:
                on_states(project.ps())
            except KitError as exc:
                logger.debug("ps while waiting failed: %s", exc)
    return outcome.get("error")


#: Compose's words for a container whose health check failed (not one that exited).
_UNHEALTHY_CONTAINER = re.compile(r"container (\S+) is unhealthy")


def _recovers(project: ComposeProject, error: CommandError, *, until: float) -> bool:
    """True once the container Compose called unhealthy is healthy again, while it keeps running.

    `up --wait` gives up on the first unhealthy check it sees. A service whose health depends
    on another one that is still starting (the proxy, while a restarted MLflow comes back)
    can be unhealthy for a moment and then healthy: that is a stack still starting, not one
    that failed."""
    named = _UNHEALTHY_CONTAINER.search(error.stderr + error.stdout)
    if named is None or project.runner.dry_run:
        return False
    while time.monotonic() < until:
        state = next((s for s in project.ps() if s.container == named.group(1)), None)
        if state is None or state.state != "running":
            return False
        if state.is_healthy:
            return True
        time.sleep(POLL_SECONDS)
    return False


def prepare_host_files(config: KitConfig) -> list[str]:
    """What Compose mounts must exist before `up`: secrets a newer kit added, a current certificate.

    A stack initialised by an older kit gets its new secrets here (nothing was
    created with them yet); the proxy's certificate is (re)issued when missing,
    close to expiry, or missing a configured name.
    """
    generated, _kept = ensure_secret_files(config.secrets_path, UPGRADE_SECRET_FILES)
    generated += config.store.prepare(config.secrets_path)
    if config.monitoring_on:
        generated += ensure_secret_files(config.secrets_path, (ALERTMANAGER_PASSWORD_FILE,))[0]
        generated += ensure_empty_secret_files(config.secrets_path, ALERT_SECRET_FILES)
    # The metrics service mounts the records folder: it must exist, readable by its user.
    status_dir(config).mkdir(parents=True, exist_ok=True)
    done = [f"generated {path.name} (mode 0600)" for path in generated]
    if (compose_file := sync_compose_file(config)) is not None:
        done.append(f"COMPOSE_FILE={compose_file} in {config.env_file.name} (for plain docker compose)")
    return done + ensure_certificates(config)


# BuildKit prints the failing step as "> [service stage n/m] RUN ..." and its output as "0.516 text".
_FAILED_STEP = re.compile(r"^\s*> \[(\S+)[^\]]*\]", re.MULTILINE)
_STEP_OUTPUT = re.compile(r"^\s*\d+\.\d+ (.+)$", re.MULTILINE)


def build_error(error: CommandError, services: Sequence[ServiceSpec]) -> StackError:
    """Name the image whose build failed, the step's last words and what to do about it."""
    output = error.stderr + "\n" + error.stdout
    step = _FAILED_STEP.search(output)
    name = step.group(1) if step else ""
    said = _STEP_OUTPUT.findall(output[step.start() :] if step else output)
    reason = said[-1].strip() if said else error.message
    spec = next((s for s in services if s.name == name), None)
    hint = spec.build_hint if spec and spec.build_hint else ""
    rebuild = f"docker compose build {name}" if name else "docker compose build"
    hint = f"{hint}; full output: {rebuild}" if hint else f"full output: {rebuild}"
    what = f"the {name} image ({spec.dockerfile})" if spec else "an image"
    return StackError(f"building {what} failed: {reason}", hint=hint)


_FAILED_CONTAINER = re.compile(r"container (\S+) (?:is unhealthy|exited|has exited)")


def _unhealthy_error(project: ComposeProject, states: list[ServiceState], error: CommandError) -> StackError:
    """Name the service that failed and the last thing its healthcheck or log said."""
    named = _FAILED_CONTAINER.search(error.stderr + error.stdout)
    for state in states:
        if state.service == CHECK_SERVICE and state.state == "exited" and state.exit_code != 0:
            logs = project.container_logs(state.container)
            verdict = parse_verdict(logs, logs)
            return StackError(f"artifact store: {verdict.message}", hint=verdict.fix or "see: mlops-kit logs")
    # One-shot jobs that finished well are not services that failed.
    states = [s for s in states if not (s.service == CHECK_SERVICE and s.exit_code == 0)]
    # The container Compose names first; a crash-looping one may look "running" for an instant.
    ordered = sorted(states, key=lambda s: 0 if named and s.container == named.group(1) else 1)
    for state in ordered:
        if state.is_healthy and not (named and state.container == named.group(1)):
            continue
        reason = last_line(project.container_logs(state.container)) if state.state != "running" else ""
        reason = reason or project.health_log(state.container) or last_line(project.container_logs(state.container))
        what = f"{state.state}, {state.health}" if state.health else state.state
        detail = f": {reason}" if reason else ""
        return StackError(
            f"service {state.service} did not become healthy ({what}){detail}",
            hint=f"see its log: mlops-kit logs {state.service}",
        )
    return StackError(f"the stack did not start: {error.message}", hint="see: mlops-kit logs")


def restart_proxy(project: ComposeProject, *, wait_timeout: int = 120) -> bool:
    """Bring a running proxy onto the current certificate; False if it is not running.

    The certificate's fingerprint is part of the proxy's configuration
    (`compose_env`), so `up` of the proxy replaces its container.
    """
    running = project.is_running(PROXY.name)
    if running:
        project.start_services([PROXY.name], wait_timeout=wait_timeout)
    return running


def build_images(project: ComposeProject) -> list[str]:
    """Build every kit image of this mode from the Dockerfiles (cached layers make a rebuild quick)."""
    names = [s.name for s in kit_services(project.config)]
    _build(project, names)
    return names


def build_missing(project: ComposeProject) -> list[str]:
    """Build the images of this configuration that are not on the engine yet; returns their services."""
    missing = project.missing_images()
    if missing:
        _build(project, missing)
    return missing


def _build(project: ComposeProject, services: list[str]) -> None:
    try:
        project.build(services)
    except CommandError as exc:
        raise build_error(exc, kit_services(project.config)) from exc


def take_down(project: ComposeProject, *, volumes: bool) -> None:
    """Stop and remove the containers; with ``volumes``, delete every data volume of the stack.

    Compose removes the volumes the file declares now; the volumes a restore kept
    (the data from before it) carry the project's label too and go with them.
    """
    project.down(volumes=volumes)
    if volumes and not project.runner.dry_run:
        project.remove_volumes(project.volume_names())


def collect_status(project: ComposeProject, *, with_restarts: bool = True) -> StackStatus:
    """Per-service state, health, image, ports, (for MLflow) the server's version and, unless
    not ``with_restarts``, Docker's restarts with the watchdog's reason."""
    states = {state.service: state for state in project.ps()}
    version = None
    mlflow_state = states.get(MLFLOW.name)
    if mlflow_state and mlflow_state.state == "running":
        config = project.config
        has_admin = (config.secrets_path / ADMIN_SECRET).is_file()
        version = server_version(admin_access(config) if has_admin else anonymous_access(config))
    services = []
    for spec in stack_services(project.config):
        state = states.get(spec.name)
        if state is None:
            services.append(ServiceStatus(spec.name, "absent", "", "", (), None))
            continue
        restarts, reason = project.restarts(state.container) if with_restarts else (0, "")
        services.append(
            ServiceStatus(
                service=spec.name,
                state=state.state,
                health=state.health,
                image=state.image,
                ports=state.ports,
                version=version if spec is MLFLOW else None,
                restarts=restarts,
                restart_reason=reason,
            )
        )
    return StackStatus(project=project.config.project_name, tracking_uri=project.config.tracking_uri, services=services)


def require_running(project: ComposeProject) -> StackStatus:
    """The stack's status; raises :class:`StackError` when MLflow is not running."""
    status = collect_status(project, with_restarts=False)
    mlflow = next(s for s in status.services if s.service == MLFLOW.name)
    if mlflow.state != "running":
        raise StackError(
            f"the stack {status.project} is not running (mlflow: {mlflow.state})", hint="start it: mlops-kit up"
        )
    return status
