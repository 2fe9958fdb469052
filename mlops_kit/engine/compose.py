"""Drive `docker compose` for one stack: the only module that builds compose argv.

The resolved configuration reaches Compose as environment variables (see
:meth:`KitConfig.compose_env`), so `compose.yaml` interpolates the same values
whether the kit or a person runs Compose.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_kit.config.loader import KitConfig
from mlops_kit.config.settings import SETTINGS_BY_ENV
from mlops_kit.engine.docker_errors import raise_if_engine_unusable, raise_if_port_taken
from mlops_kit.errors import CommandError
from mlops_kit.runner import CommandResult, CommandRunner
from mlops_kit.services import kit_services

logger = logging.getLogger(__name__)

KIT_BUILD_CA_NAME = "kit-build-ca.crt"


@dataclass(frozen=True)
class ServiceState:
    """One container of the stack as `docker compose ps` reports it."""

    service: str
    container: str
    state: str
    health: str
    image: str
    ports: tuple[str, ...] = field(default_factory=tuple)
    exit_code: int = 0
    #: A `docker compose run` container (a job), not the service's own.
    oneoff: bool = False

    @property
    def is_healthy(self) -> bool:
        # Every kit service has a healthcheck, so no health status means "not yet".
        return self.state == "running" and self.health == "healthy"

    @classmethod
    def from_ps(cls, entry: dict[str, Any]) -> ServiceState:
        ports: list[str] = []
        for publisher in entry.get("Publishers") or []:
            if isinstance(publisher, dict) and publisher.get("PublishedPort"):
                ports.append(f"{publisher.get('URL')}:{publisher['PublishedPort']}->{publisher.get('TargetPort')}")
        return cls(
            service=str(entry.get("Service", "")),
            container=str(entry.get("Name", "")),
            state=str(entry.get("State", "")),
            health=str(entry.get("Health", "")),
            image=str(entry.get("Image", "")),
            ports=tuple(dict.fromkeys(ports)),
            exit_code=int(entry.get("ExitCode", 0) or 0),
            oneoff="com.docker.compose.oneoff=True" in str(entry.get("Labels", "")),
        )


class ComposeProject:
    """One mlops-kit stack (a Compose project) on the local Docker engine."""

    def __init__(self, config: KitConfig, runner: CommandRunner) -> None:
        self.config = config
        self.runner = runner

    # ---- argv ------------------------------------------------------------------

    def base_argv(self) -> list[str]:
        argv = [
            "docker",
            "compose",
            "--project-name",
            self.config.project_name,
            "--project-directory",
            str(self.config.project_dir),
        ]
        if self.config.env_file.is_file():
            argv += ["--env-file", str(self.config.env_file)]
        for compose_file in self.config.compose_files:
            argv += ["--file", str(compose_file)]
        return argv

    def run(self, args: Sequence[str], **kwargs: object) -> CommandResult:
        """Run `docker compose <args>` for this project with the config's environment."""
        try:
            return self.runner.run([*self.base_argv(), *args], env=self.config.compose_env(), **kwargs)  # type: ignore[arg-type]
        except CommandError as error:
            raise_if_engine_unusable(error)
            raise_if_port_taken(error, self.config.bind_address, self.config.port)
            raise

    # ---- queries -----------------------------------------------------------------

    def ps(self) -> list[ServiceState]:
        """Every container of the project, running or not."""
        result = self.run(["ps", "--all", "--format", "json"], changes_state=False)
        return [ServiceState.from_ps(entry) for entry in _parse_json_lines(result.stdout)]

    def service_containers(self) -> dict[str, ServiceState]:
        """Each service's own container (jobs that `docker compose run` left are not)."""
        return {s.service: s for s in self.ps() if not s.oneoff}

    def configured_image(self, container: str) -> str:
        """The image name a container was created from (`docker compose ps` shows a bare ID once its
        tag was rebuilt); '' when the container is gone."""
        result = self.runner.run(
            ["docker", "inspect", "--format", "{{.Config.Image}}", container], check=False, changes_state=False
        )
        return result.stdout.strip() if result.ok else ""

    def restarts(self, container: str) -> tuple[int, str]:
        """How often Docker restarted a container, and the last restart's reason from the kit's
        watchdog (its line in the log just before the current run began; '' if none)."""
        inspected = self.runner.run(
            ["docker", "inspect", "--format", "{{.RestartCount}} {{.State.StartedAt}}", container],
            check=False,
            changes_state=False,
        )
        count, _, started = inspected.stdout.strip().partition(" ")
        if not inspected.ok or not count.isdigit() or int(count) == 0:
            return 0, ""
        # The ten minutes before the current run began (no --tail: Docker applies it before
        # --until, and the new run's own lines would push the reason out).
        began = _unix_time(started)
        window = ["--since", f"{began - 600:.6f}", "--until", f"{began:.6f}"] if began > 0 else ["--until", started]
        before = self.runner.run(["docker", "logs", *window, container], check=False, changes_state=False)
        lines = (before.stdout + "\n" + before.stderr).splitlines()
        reasons = [line.split("mlops-kit watchdog: ", 1)[1] for line in lines if "mlops-kit watchdog: " in line]
        return int(count), reasons[-1].strip() if reasons else ""

    def is_running(self, service: str) -> bool:
        """Whether ``service`` has a running container."""
        return any(s.service == service and s.state == "running" for s in self.ps())

    def rendered_config(self) -> str:
        """`docker compose config`: the fully interpolated model (validates the files)."""
        return self.run(["config"], changes_state=False).stdout

    def service_images(self) -> dict[str, str]:
        """The image of every service the kit builds (each service module names its image setting)."""
        return {s.name: getattr(self.config, SETTINGS_BY_ENV[s.image_setting].attr) for s in kit_services(self.config)}

    def missing_images(self) -> list[str]:
        """Services whose image is not on the engine yet."""
        missing = []
        for service, image in self.service_images().items():
            result = self.runner.run(["docker", "image", "inspect", image], check=False, changes_state=False)
            if not result.ok:
                raise_if_engine_unusable(CommandError(result.argv, result.returncode, result.stdout, result.stderr))
                missing.append(service)
        return missing

    def create_volume(self, name: str, key: str, driver_opts: dict[str, str] | None = None) -> None:
        """Create a volume labelled as this project's, so Compose adopts it (and `down -v` removes it)."""
        argv = [
            "docker",
            "volume",
            "create",
            "--label",
            f"com.docker.compose.project={self.config.project_name}",
            "--label",
            f"com.docker.compose.volume={key}",
        ]
        if driver_opts:
            argv += ["--driver", "local"]
            for option, value in driver_opts.items():
                argv += ["--opt", f"{option}={value}"]
        self.runner.run([*argv, name])

    def volume_exists(self, name: str) -> bool:
        return self.runner.run(["docker", "volume", "inspect", name], check=False, changes_state=False).ok

    def remove_volumes(self, names: Sequence[str]) -> None:
        if names:
            self.runner.run(["docker", "volume", "rm", "--force", *names], check=False)

    def volume_names(self) -> list[str]:
        result = self.runner.run(
            [
                "docker",
                "volume",
                "ls",
                "--quiet",
                "--filter",
                f"label=com.docker.compose.project={self.config.project_name}",
            ],
            changes_state=False,
        )
        return [line for line in result.stdout.split() if line]

    # ---- actions -----------------------------------------------------------------

    def stage_build_ca(self) -> Path | None:
        """Copy MLOPS_KIT_BUILD_CA_FILE into the build context, where the Dockerfiles trust it."""
        if self.config.build_ca_file is None:
            return None
        target = self.config.project_dir / "docker" / "extra-ca" / KIT_BUILD_CA_NAME
        if not self.runner.dry_run:
            shutil.copyfile(self.config.build_ca_file, target)
        return target

    def build(self, services: Sequence[str] = ()) -> None:
        self.stage_build_ca()
        self.run(["build", *services])

    def up(self, *, wait_timeout: int) -> None:
        """Create/start every service and wait until all are healthy (`up --wait`).

        A changed secret file reaches its service because `compose_env` passes a
        fingerprint of it that the service's configuration includes.
        """
        self.run(["up", "--detach", "--wait", "--wait-timeout", str(wait_timeout), "--remove-orphans"])

    def run_job(
        self,
        service: str,
        command: Sequence[str],
        *,
        mounts: Sequence[str] = (),
        check: bool = True,
        timeout: float | None = None,
        read_only: bool = False,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """`docker compose run --rm` a one-shot job; ``mounts`` are extra `-v SRC:DST` pairs.

        ``read_only``: the job changes nothing, so it runs under --dry-run too (a listing).
        ``on_stderr_line`` sees the job's stderr as it comes (its progress).
        """
        args = ["run", "--rm", "--no-deps", "-T"]
        for mount in mounts:
            args += ["--volume", mount]
        return self.run(
            [*args, service, *command], check=check, timeout=timeout, changes_state=not read_only,
            on_stderr_line=on_stderr_line,
        )  # fmt: skip

    def run_image(
        self,
        image: str,
        command: Sequence[str],
        *,
        entrypoint: str,
        user: str,
        network: str = "none",
        mounts: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """`docker run --rm` ``image`` outside the stack: no secret, no volume but ``mounts``, a
        read-only root, no capability; ``env`` reaches it by name only (`--env NAME`), never argv.

        For a one-off job that must not hold the stack's secrets (one on the host's network).
        """
        argv = ["docker", "run", "--rm", "--pull", "never", "--network", network, "--user", user]
        argv += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        argv += ["--label", f"com.docker.compose.project={self.config.project_name}", "--entrypoint", entrypoint]
        for mount in mounts:
            argv += ["--volume", mount]
        for name in env or {}:
            argv += ["--env", name]
        try:
            return self.runner.run([*argv, image, *command], env=env, on_stderr_line=on_stderr_line)
        except CommandError as error:
            raise_if_engine_unusable(error)
            raise

    def start_services(self, services: Sequence[str], *, wait_timeout: int) -> None:
        """Start only some services (e.g. the database during a restore) and wait for health."""
        self.run(["up", "--detach", "--wait", "--wait-timeout", str(wait_timeout), *services])

    def stop_services(self, services: Sequence[str]) -> None:
        """Stop some services, keeping their containers (`up` starts them again)."""
        self.run(["stop", *services])

    def down(self, *, volumes: bool) -> None:
        args = ["down", "--remove-orphans"]
        if volumes:
            args.append("--volumes")
        self.run(args)

    def logs(self, services: Sequence[str], *, follow: bool, tail: str) -> None:
        args = ["logs", "--tail", tail]
        if follow:
            args.append("--follow")
        self.run([*args, *services], capture=False, changes_state=False)

    def health_log(self, container: str) -> str:
        """The last healthcheck output of a container (why it is unhealthy)."""
        result = self.runner.run(
            ["docker", "inspect", "--format", "{{json .State.Health}}", container], check=False, changes_state=False
        )
        try:
            health = json.loads(result.stdout or "null") or {}
        except json.JSONDecodeError:
            return ""
        entries = health.get("Log") or []
        return str(entries[-1].get("Output", "")).strip() if entries else ""

    def container_logs(self, container: str, tail: int = 20) -> str:
        result = self.runner.run(["docker", "logs", "--tail", str(tail), container], check=False, changes_state=False)
        return (result.stdout + result.stderr).strip()


def _parse_json_lines(text: str) -> list[dict[str, Any]]:
    """`docker compose ps --format json` prints one object per line (or one array, in old versions)."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        return list(json.loads(text))
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _unix_time(rfc3339: str) -> float:
    """Seconds since the epoch of Docker's RFC 3339 time (nanoseconds cut to micro); 0 if unreadable."""
    match = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?\d*(Z|[+-]\d\d:\d\d)$", rfc3339)
    if not match:
        return 0.0
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + (match.group(2) or "") + zone).timestamp()
