"""The compose driver (runner patched) and the rendered compose.yaml (real `docker compose config`)."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.config.settings import SETTINGS_BY_ENV
from mlops_kit.engine.compose import ComposeProject, ServiceState
from mlops_kit.errors import CommandError, ConfigError, EngineUnavailableError, PreflightError
from mlops_kit.runner import CommandResult, CommandRunner

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost", addresses=())
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeRunner(CommandRunner):
    """Records argv and environment; answers with canned results."""

    calls: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    answers: list[CommandResult | CommandError] = field(default_factory=list)

    def run(self, argv, **kwargs):  # type: ignore[no-untyped-def, override]
        self.calls.append(([str(a) for a in argv], dict(kwargs.get("env") or {})))
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, CommandError):
                raise answer
            return answer
        return CommandResult(argv=[str(a) for a in argv], returncode=0)


@pytest.fixture
def project(kit_dir: Path) -> tuple[ComposeProject, FakeRunner]:
    init_env_file(kit_dir, {"COMPOSE_PROJECT_NAME": "unit-stack", "MLOPS_KIT_PORT": "5999"}, host=HOST)
    config = load_config(kit_dir, environ={})
    runner = FakeRunner()
    return ComposeProject(config, runner), runner


def test_up_argv_names_project_files_and_waits(project: tuple[ComposeProject, FakeRunner]) -> None:
    compose, runner = project
    compose.up(wait_timeout=123)
    argv, env = runner.calls[0]
    assert argv[:4] == ["docker", "compose", "--project-name", "unit-stack"]
    assert argv[argv.index("--file") + 1].endswith("compose.yaml")
    assert argv[argv.index("--env-file") + 1].endswith(".env")
    assert argv[-5:] == ["--detach", "--wait", "--wait-timeout", "123", "--remove-orphans"]
    assert env["MLOPS_KIT_PORT"] == "5999"
    # The password is a secret file: never in argv or the environment.
    password = compose.config.postgres_password
    assert password not in " ".join(argv)
    assert password not in json.dumps(env)


def test_down_keeps_volumes_unless_asked(project: tuple[ComposeProject, FakeRunner]) -> None:
    compose, runner = project
    compose.down(volumes=False)
    compose.down(volumes=True)
    assert "--volumes" not in runner.calls[0][0]
    assert runner.calls[1][0][-1] == "--volumes"


def test_ps_parses_json_lines(project: tuple[ComposeProject, FakeRunner]) -> None:
    compose, runner = project
    lines = [
        {
            "Service": "mlflow",
            "Name": "s-mlflow-1",
            "State": "running",
            "Health": "healthy",
            "Image": "m:1",
            "Publishers": [{"URL": "127.0.0.1", "PublishedPort": 5999, "TargetPort": 5000, "Protocol": "tcp"}],
        },
        {
            "Service": "postgres",
            "Name": "s-postgres-1",
            "State": "running",
            "Health": "starting",
            "Image": "p:1",
            "Publishers": None,
        },
    ]
    runner.answers.append(CommandResult([], 0, "\n".join(json.dumps(x) for x in lines)))
    states = compose.ps()
    assert states[0] == ServiceState("mlflow", "s-mlflow-1", "running", "healthy", "m:1", ("127.0.0.1:5999->5000",))
    assert states[1].is_healthy is False


def test_engine_down_becomes_a_preflight_error(project: tuple[ComposeProject, FakeRunner]) -> None:
    compose, runner = project
    runner.answers.append(CommandError(["docker"], 1, "", "Cannot connect to the Docker daemon at unix:///x.sock."))
    with pytest.raises(EngineUnavailableError) as caught:
        compose.ps()
    assert "bootstrap-host.sh" in (caught.value.hint or "")


def test_port_taken_names_the_port(project: tuple[ComposeProject, FakeRunner]) -> None:
    compose, runner = project
    runner.answers.append(CommandError(["docker"], 1, "", "Bind for 127.0.0.1:5999 failed: port is already allocated"))
    with pytest.raises(PreflightError) as caught:
        compose.up(wait_timeout=10)
    assert "5999" in caught.value.message
    assert "MLOPS_KIT_PORT" in (caught.value.hint or "")


def test_dry_run_prints_instead_of_running(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    runner = CommandRunner(dry_run=True)
    ComposeProject(load_config(kit_dir, environ={}), runner).down(volumes=True)
    assert runner.dry_run_log[0].startswith("docker compose --project-name mlops-kit")
    assert runner.dry_run_log[0].endswith("--volumes")


# Paths get "./" in compose.yaml; volume names default to a nested ${COMPOSE_PROJECT_NAME} expression.
NOT_PLAIN_DEFAULTS = {
    "MLOPS_KIT_SECRETS_DIR",
    "MLOPS_KIT_BACKUP_DIR",
    "MLOPS_KIT_POSTGRES_VOLUME",
    "MLOPS_KIT_MINIO_VOLUME",
    # Empty = a placeholder file with no certificate (a secret needs a file).
    "MLOPS_KIT_S3_CA_FILE",
    "MLOPS_KIT_WEBHOOK_CA_FILE",
    "MLOPS_KIT_ARTIFACTS_VOLUME",
    # Empty in the kit's config = the certificate the kit's CA issued (a path under secrets/).
    "MLOPS_KIT_TLS_CERT_FILE",
    "MLOPS_KIT_TLS_KEY_FILE",
}


def test_compose_defaults_match_config_defaults() -> None:
    """compose.yaml's ${VAR:-default} fallbacks (for plain Compose) equal the kit's defaults."""
    text = (REPO_ROOT / "compose.yaml").read_text() + "".join(
        path.read_text() for path in sorted((REPO_ROOT / "docker/compose").glob("*.yaml"))
    )
    found = dict(re.findall(r"\$\{([A-Z0-9_]+):-([^}]*)\}", text))
    assert found
    for name, default in found.items():
        if name in SETTINGS_BY_ENV and name not in NOT_PLAIN_DEFAULTS:
            assert SETTINGS_BY_ENV[name].default == default, name
    assert found["MLOPS_KIT_SECRETS_DIR"] == "./" + SETTINGS_BY_ENV["MLOPS_KIT_SECRETS_DIR"].default
    assert found["MLOPS_KIT_BACKUP_DIR"] == SETTINGS_BY_ENV["MLOPS_KIT_BACKUP_DIR"].default


def compose_config(kit_dir: Path, *files: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    argv = ["docker", "compose", "--project-directory", str(kit_dir), "--env-file", str(kit_dir / ".env")]
    for name in files:
        argv += ["-f", str(kit_dir / name)]
    result = subprocess.run(
        [*argv, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_rendered_compose_is_wired_as_documented(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_PORT": "5998"}, host=HOST)
    model = compose_config(kit_dir, "compose.yaml")
    services = model["services"]
    mlflow, postgres, proxy = services["mlflow"], services["postgres"], services["proxy"]
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert proxy["depends_on"]["mlflow"]["condition"] == "service_healthy"
    # Only the proxy is published; PostgreSQL and MLflow have no network at all:
    # each is reached over a Unix socket in a volume (MLflow's shared with the proxy).
    assert proxy["ports"][0]["published"] == "5998"
    assert proxy["ports"][0]["host_ip"] == "127.0.0.1"
    assert proxy["ports"][0]["target"] == 8443
    assert [name for name, service in services.items() if service.get("ports")] == ["proxy"]
    assert postgres["network_mode"] == "none"
    assert mlflow["network_mode"] == "none" and "networks" not in mlflow
    socket = mlflow["environment"]["MLOPS_KIT_MLFLOW_SOCKET"]
    assert proxy["environment"]["MLOPS_KIT_UPSTREAM"] == f"unix/{socket}"
    shared = {v["source"] for v in mlflow["volumes"]} & {v["source"] for v in proxy["volumes"]}
    assert shared == {"mlflow-socket"}
    assert set(proxy["networks"]) == {"edge"}
    assert proxy["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"] == mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert "listen_addresses=" in postgres["command"]
    for name in ("mlflow", "postgres", "proxy"):
        service = services[name]
        # The image's own test (kit-watchdog since 0.7.0): an older kit's images, on the way
        # back of `upgrade`, would not have a command compose.yaml named.
        assert "test" not in service["healthcheck"] and service["healthcheck"]["interval"], name
        assert service["restart"] == "unless-stopped", name
        assert service["logging"]["driver"] == "json-file", name
    for name, service in services.items():
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"], name
        assert set(service["cap_add"]) <= {"SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL"}, name
        # The init (root) must be able to signal the service it switched to another user.
        assert "SETUID" not in service["cap_add"] or "KILL" in service["cap_add"], name
        assert service["read_only"] is True, name
        assert service["pids_limit"] > 0 and service["mem_limit"], name
        assert "user" not in service, name  # entrypoints drop to the service user themselves
    # The image's own command (kit-auth in this kit's image, basic-auth in an older kit's).
    assert mlflow.get("command") is None
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith("/mlflow?host=/run/postgresql")
    assert mlflow["environment"]["MLOPS_KIT_AUTH_DATABASE_URI"].endswith("/mlflow_auth?host=/run/postgresql")
    assert mlflow["environment"]["MLOPS_KIT_AUTH_DEFAULT_PERMISSION"] == "NO_PERMISSIONS"
    assert "mlhost:*" in mlflow["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"]
    assert model["secrets"]["postgres_password"]["file"] == str(kit_dir / "secrets" / "postgres_password")
    assert model["secrets"]["tls_key"]["file"] == str(kit_dir / "secrets" / "tls" / "server.key")
    for name in ("postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key", "mlflow_kek_passphrase"):
        value = (kit_dir / "secrets" / name).read_text()
        assert value not in json.dumps(model), name


def test_operator_certificate_replaces_the_kits(kit_dir: Path) -> None:
    init_env_file(
        kit_dir,
        {"MLOPS_KIT_TLS_CERT_FILE": "/etc/ssl/ml.crt", "MLOPS_KIT_TLS_KEY_FILE": "/etc/ssl/private/ml.key"},
        host=HOST,
    )
    model = compose_config(kit_dir, "compose.yaml")
    assert model["secrets"]["tls_cert"]["file"] == "/etc/ssl/ml.crt"
    assert model["secrets"]["tls_key"]["file"] == "/etc/ssl/private/ml.key"


def test_rendered_nfs_overlay_mounts_the_export(kit_dir: Path) -> None:
    init_env_file(
        kit_dir,
        {
            "MLOPS_KIT_ARTIFACT_STORE": "nfs",
            "MLOPS_KIT_NFS_SERVER": "nas.corp.example",
            "MLOPS_KIT_NFS_EXPORT": "/srv/mlflow",
        },
        host=HOST,
    )
    model = compose_config(kit_dir, "compose.yaml", "docker/compose/artifacts-nfs.yaml")
    volume = model["volumes"]["artifacts"]
    assert volume["driver"] == "local"
    assert volume["driver_opts"] == {
        "type": "nfs",
        "o": "addr=nas.corp.example,nfsvers=4.1,rw,hard,timeo=600,retrans=2,noresvport",
        "device": ":/srv/mlflow",
    }


def test_plain_compose_reads_the_nfs_overlay_from_compose_file_in_env(kit_dir: Path) -> None:
    """The documented plain-Compose path: COMPOSE_FILE set in .env selects the overlay."""
    init_env_file(
        kit_dir,
        {"MLOPS_KIT_ARTIFACT_STORE": "nfs", "MLOPS_KIT_NFS_SERVER": "10.0.0.9", "MLOPS_KIT_NFS_EXPORT": "/export/ml"},
        host=HOST,
    )
    with (kit_dir / ".env").open("a") as handle:
        handle.write("COMPOSE_FILE=compose.yaml:docker/compose/artifacts-nfs.yaml\n")
    result = subprocess.run(
        ["docker", "compose", "config", "--format", "json"],
        cwd=kit_dir,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["volumes"]["artifacts"]["driver_opts"]["device"] == ":/export/ml"


def test_every_built_service_has_its_image_checked(kit_dir: Path) -> None:
    """`up` builds what is missing: the list must cover every image the kit builds, the proxy included."""
    from mlops_kit.config.loader import load_config
    from mlops_kit.engine.compose import ComposeProject
    from mlops_kit.runner import CommandRunner
    from mlops_kit.services import SERVICES

    init_env_file(kit_dir, {}, host=HOST)
    images = ComposeProject(load_config(kit_dir, environ={}), CommandRunner()).service_images()
    assert set(images) == {s.name for s in SERVICES} == {"postgres", "mlflow", "proxy", "metrics", "backup"}
    assert images["proxy"] == SETTINGS_BY_ENV["MLOPS_KIT_PROXY_IMAGE"].default


def test_webhooks_add_an_egress_proxy_and_nothing_else(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    assert "webhooks.yaml" not in (kit_dir / ".env").read_text()
    assert "egress" not in compose_config(kit_dir, "compose.yaml")["services"]
    init_env_file(kit_dir, {"MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS": "ci.corp.example,10.0.4.7:8443"}, host=HOST, force=True)
    env = (kit_dir / ".env").read_text()
    assert "COMPOSE_FILE=compose.yaml:docker/compose/webhooks.yaml" in env
    model = compose_config(kit_dir, "compose.yaml", "docker/compose/webhooks.yaml")
    mlflow, egress = model["services"]["mlflow"], model["services"]["egress"]
    # MLflow still has no network: the proxy's socket is its only way out.
    assert mlflow["network_mode"] == "none"
    assert mlflow["depends_on"]["egress"]["condition"] == "service_healthy"
    assert mlflow["environment"]["MLOPS_KIT_EGRESS_SOCKET"] == egress["environment"]["MLOPS_KIT_EGRESS_SOCKET"]
    assert egress["environment"]["MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS"] == "ci.corp.example,10.0.4.7:8443"
    assert set(egress["networks"]) == {"egress"} and not egress.get("ports")
    assert egress["read_only"] is True and egress["cap_drop"] == ["ALL"]


def test_webhook_hosts_are_checked_and_named(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    env = kit_dir / ".env"
    env.write_text(env.read_text() + "\nMLOPS_KIT_WEBHOOK_ALLOWED_HOSTS=https://ci.corp.example/hook\n")
    with pytest.raises(ConfigError) as error:
        load_config(kit_dir, environ={})
    assert "MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS" in error.value.message


def test_every_long_running_kit_image_heals_itself_through_its_healthcheck() -> None:
    """postgres, mlflow and proxy: the HEALTHCHECK runs kit-watchdog as the service's user."""
    docker = Path(__file__).resolve().parents[2] / "docker"
    for image, user in (("postgres", "postgres"), ("mlflow", "mlflow"), ("proxy", "caddy")):
        dockerfile = (docker / image / "Dockerfile").read_text()
        assert "COPY common/watchdog.sh /usr/local/bin/kit-watchdog" in dockerfile, image
        healthcheck = next(line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK"))
        assert f'CMD ["kit-watchdog", "{user}", ' in healthcheck, image
