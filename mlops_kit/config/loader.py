"""The kit's one typed configuration object, and how it is loaded.

Precedence: command line > environment > `.env` > default (see
:mod:`mlops_kit.config.settings` for the table). Validation errors name the
variable and where its value came from.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from mlops_kit.config.secrets import ALERT_SECRET_FILES, fingerprint, read_secret
from mlops_kit.config.settings import SETTINGS, SETTINGS_BY_ENV, WILDCARD_ADDRESSES, Setting
from mlops_kit.errors import ConfigError
from mlops_kit.services.egress import WEBHOOKS_OVERLAY
from mlops_kit.services.prometheus import MONITORING_OVERLAY
from mlops_kit.stores import ArtifactStore, store_named

logger = logging.getLogger(__name__)

ENV_FILE_NAME = ".env"
COMPOSE_FILE_NAME = "compose.yaml"
# Site-specific changes, read last, as plain `docker compose` does by default.
OVERRIDE_FILE_NAME = "compose.override.yaml"


@dataclass(frozen=True)
class KitConfig:
    """Resolved, validated configuration of one mlops-kit stack.

    One field per setting (``Setting.attr``), plus where it was loaded from and the
    database password. Derived facts (volumes, URLs, Compose files) are properties.
    """

    project_dir: Path
    env_file: Path
    project_name: str
    bind_address: str
    port: int
    public_host: str
    allowed_hosts: tuple[str, ...]
    artifact_store: str
    s3_endpoint_url: str
    s3_bucket: str
    s3_prefix: str
    s3_region: str
    s3_addressing: str
    s3_ca_file: Path | None
    s3_network: str
    s3_presigned: str
    minio_image: str
    minio_memory: str
    minio_cpus: str
    minio_git_url: str
    go_download_url: str
    goproxy: str
    minio_volume_name: str
    admin_user: str
    auth_default_permission: str
    auth_cache_seconds: int
    login_failures_per_minute: int
    webhook_allowed_hosts: tuple[str, ...]
    webhook_ca_file: Path | None
    egress_image: str
    genai_endpoints: str
    tls_cert_file: Path | None
    tls_key_file: Path | None
    tls_ca_file: Path | None
    nfs_server: str
    nfs_export: str
    nfs_options: str
    mlflow_workers: int
    watchdog_seconds: int
    mlflow_jobs: str
    secrets_dir: str
    base_image: str
    mlflow_image: str
    postgres_image: str
    proxy_image: str
    metrics_image: str
    prometheus_image: str
    alertmanager_image: str
    metrics_memory: str
    prometheus_memory: str
    alertmanager_memory: str
    mlflow_memory: str
    mlflow_tmp_size: str
    postgres_memory: str
    proxy_memory: str
    backup_memory: str
    mlflow_cpus: str
    postgres_cpus: str
    proxy_cpus: str
    backup_cpus: str
    pip_index_url: str
    pip_extra_index_url: str
    build_ca_file: Path | None
    backup_image: str
    backup_dir: str
    backup_offsite: str
    gc_older_than_seconds: int
    retention_days: int
    metrics_scan_seconds: int
    monitoring: str
    prometheus_retention: str
    prometheus_retention_size: str
    prometheus_scrape_interval: str
    alert_webhook: str
    alert_email_to: str
    alert_email_from: str
    alert_smtp_host: str
    alert_smtp_user: str
    alert_group_wait: str
    backup_keep_daily: int
    backup_keep_weekly: int
    backup_keep_monthly: int
    postgres_volume_name: str
    artifacts_volume_name: str
    log_max_size: str
    log_max_files: int
    postgres_password: str
    postgres_max_connections: int
    postgres_shared_buffers: str
    postgres_effective_cache_size: str
    postgres_work_mem: str
    postgres_maintenance_work_mem: str

    def __repr__(self) -> str:
        # dataclass repr would print the password.
        shown = ", ".join(
            f"{f.name}={'******' if f.name == 'postgres_password' else getattr(self, f.name)!r}" for f in fields(self)
        )
        return f"KitConfig({shown})"

    @property
    def secrets_path(self) -> Path:
        return (self.project_dir / self.secrets_dir).resolve()

    @property
    def tls_dir(self) -> Path:
        """The kit's CA and the certificate it issued the proxy (inside the secrets folder)."""
        return self.secrets_path / "tls"

    @property
    def proxy_cert_path(self) -> Path:
        """The certificate chain the proxy serves: the operator's, else the one the kit's CA issued."""
        return self.tls_cert_file or self.tls_dir / "server.crt"

    @property
    def proxy_key_path(self) -> Path:
        return self.tls_key_file or self.tls_dir / "server.key"

    @property
    def backup_path(self) -> Path:
        return (self.project_dir / self.backup_dir).resolve()

    @property
    def postgres_volume(self) -> str:
        return self.postgres_volume_name or f"{self.project_name}_postgres-data"

    @property
    def artifacts_volume(self) -> str:
        return self.artifacts_volume_name or f"{self.project_name}_artifacts"

    @property
    def minio_volume(self) -> str:
        return self.minio_volume_name or f"{self.project_name}_minio-data"

    @property
    def store(self) -> ArtifactStore:
        """This stack's artifact store mode (mlops_kit/stores/)."""
        return store_named(self.artifact_store)

    @property
    def uses_bucket(self) -> bool:
        """Artifacts live in a bucket (s3 or minio mode), not in a volume."""
        return self.store.in_bucket

    @property
    def s3_endpoint(self) -> str:
        """The endpoint MLflow and the jobs use: the kit's MinIO in minio mode."""
        return self.store.endpoint(self) if self.uses_bucket else self.s3_endpoint_url

    @property
    def artifacts_destination(self) -> str:
        """MLflow's --artifacts-destination: the volume's mount, kit-s3:// (proxied only) or s3:// (presigned)."""
        return self.store.destination(self)

    @property
    def monitoring_on(self) -> bool:
        """The bundled Prometheus and Alertmanager run (MLOPS_KIT_MONITORING=true)."""
        return self.monitoring == "true"

    @property
    def compose_file_setting(self) -> str:
        """COMPOSE_FILE for `.env`: compose.yaml and this stack's overlays ('' when compose.yaml alone does)."""
        return compose_file_value(self.store, self.s3_network, bool(self.webhook_allowed_hosts), self.monitoring_on)

    @property
    def compose_files(self) -> list[Path]:
        """compose.yaml, this mode's overlays, then the site's compose.override.yaml."""
        listed = self.compose_file_setting or COMPOSE_FILE_NAME
        files = [self.project_dir / name for name in listed.split(":")]
        override = self.project_dir / OVERRIDE_FILE_NAME
        if override.is_file():
            files.append(override)
        return files

    @property
    def local_url(self) -> str:
        """URL the CLI itself uses to reach MLflow (through the proxy) from this host."""
        if self.bind_address in WILDCARD_ADDRESSES or ipaddress.ip_address(self.bind_address).is_loopback:
            # "localhost" is on every kit certificate; 127.0.0.1 would work too.
            host = "localhost" if self.bind_address != "::" else "::1"
        else:
            host = self.bind_address
        return f"https://{_url_host(host)}:{self.port}"

    @property
    def tracking_uri(self) -> str:
        """URL data scientists use (``MLFLOW_TRACKING_URI``)."""
        if self.bind_address in WILDCARD_ADDRESSES:
            host = self.public_host or "127.0.0.1"
        elif ipaddress.ip_address(self.bind_address).is_loopback:
            host = "localhost"
        else:
            host = self.public_host or self.bind_address
        return f"https://{_url_host(host)}:{self.port}"

    def compose_env(self) -> dict[str, str]:
        """The environment Compose interpolates `compose.yaml` with: every setting, resolved."""
        env: dict[str, str] = {}
        for setting in SETTINGS:
            env[setting.env] = setting.to_env(getattr(self, setting.attr))
        env["MLOPS_KIT_SECRETS_DIR"] = str(self.secrets_path)
        env["MLOPS_KIT_BACKUP_DIR"] = str(self.backup_path)
        env["MLOPS_KIT_POSTGRES_VOLUME"] = self.postgres_volume
        env["MLOPS_KIT_ARTIFACTS_VOLUME"] = self.artifacts_volume
        env["MLOPS_KIT_MINIO_VOLUME"] = self.minio_volume
        env["MLOPS_KIT_S3_ENDPOINT_URL"] = self.s3_endpoint
        env["MLOPS_KIT_ARTIFACTS_DESTINATION"] = self.artifacts_destination
        for key, path in (
            ("MLOPS_KIT_TLS_CERT_FILE", self.tls_cert_file),
            ("MLOPS_KIT_TLS_KEY_FILE", self.tls_key_file),
        ):
            env[key] = str(path) if path else ""
        # Fingerprints of what each service reads at start: a new value makes
        # Compose recreate the container (it cannot see a file's content change).
        # Each file is hashed once per content (fingerprint caches by inode, mtime and size).
        env["MLOPS_KIT_MLFLOW_SECRETS_REV"] = fingerprint(
            [
                self.secrets_path / "postgres_password",
                self.secrets_path / "mlflow_flask_secret_key",
                self.secrets_path / "mlflow_kek_passphrase",
                *self.store.secret_paths(self),
                *([self.webhook_ca_file] if self.webhook_allowed_hosts and self.webhook_ca_file else []),
            ]
        )
        if self.monitoring_on:
            env["MLOPS_KIT_ALERT_SECRETS_REV"] = fingerprint([self.secrets_path / name for name in ALERT_SECRET_FILES])
        env["MLOPS_KIT_PROXY_SECRETS_REV"] = fingerprint(
            [self.proxy_cert_path, self.proxy_key_path, self.secrets_path / "metrics_password"]
        )
        env["COMPOSE_PROJECT_NAME"] = self.project_name
        return env


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def compose_file_value(
    store: ArtifactStore, s3_network: str = "", webhooks: bool = False, monitoring: bool = False
) -> str:
    """COMPOSE_FILE for `.env`: the files plain `docker compose` needs ('' when compose.yaml alone does)."""
    overlays = [
        *store.overlays(s3_network),
        *((WEBHOOKS_OVERLAY,) if webhooks else ()),
        *((MONITORING_OVERLAY,) if monitoring else ()),
    ]
    return ":".join([COMPOSE_FILE_NAME, *(p.as_posix() for p in overlays)]) if overlays else ""


def find_project_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding `compose.yaml`: explicit, else the current folder, else the kit's checkout."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit).expanduser().resolve())
    else:
        candidates.append(Path.cwd())
        candidates.append(Path(__file__).resolve().parents[2])  # the checkout: mlops_kit/config/loader.py
    for candidate in candidates:
        if (candidate / COMPOSE_FILE_NAME).is_file():
            return candidate
    where = candidates[0]
    raise ConfigError(
        f"no {COMPOSE_FILE_NAME} in {where}",
        hint="run mlops-kit from the kit's folder, or pass --project-dir (MLOPS_KIT_PROJECT_DIR)",
    )


def read_env_file(path: Path) -> dict[str, str]:
    """Read a `.env` file with python-dotenv; keys without a value read as empty."""
    if not path.is_file():
        return {}
    try:
        raw = dotenv_values(path, interpolate=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", hint="check the file's permissions and encoding") from exc
    return {key: (value or "") for key, value in raw.items()}


def load_config(
    project_dir: Path,
    env_file: Path | None = None,
    *,
    overrides: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    require_env_file: bool = True,
) -> KitConfig:
    """Resolve every setting (CLI > environment > .env > default) and validate it.

    ``overrides`` maps variable names to command-line values (``None`` = not given).
    Raises :class:`ConfigError` naming the variable and its source.
    """
    env_file = env_file or project_dir / ENV_FILE_NAME
    if require_env_file and not env_file.is_file():
        raise ConfigError(
            f"no configuration file {env_file}",
            hint="run `mlops-kit init` to create it (or pass --env-file)",
        )
    environ = os.environ if environ is None else environ
    from_file = read_env_file(env_file)
    _warn_unknown(from_file, env_file)

    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw, source = _resolve(setting, overrides or {}, environ, from_file, env_file)
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(
                f"{setting.env}={raw!r} ({source}) {exc}",
                hint=f"fix {setting.env} {_where_to_fix(source, env_file)}",
            ) from None

    secrets_path = (project_dir / values["secrets_dir"]).resolve()
    values["postgres_password"] = read_secret(secrets_path, "postgres_password")
    if (secrets_path / "restic_password").is_file():
        read_secret(secrets_path, "restic_password")  # validated and masked from here on
    store_named(values["artifact_store"]).read_secrets(secrets_path)  # validated and masked from here on
    for attr in ("tls_cert_file", "tls_key_file", "tls_ca_file", "s3_ca_file", "webhook_ca_file"):
        if values[attr] is not None and not values[attr].is_absolute():
            values[attr] = (project_dir / values[attr]).resolve()
    config = KitConfig(project_dir=project_dir, env_file=env_file, **values)
    _check_consistency(config)
    return config


def _resolve(
    setting: Setting,
    overrides: Mapping[str, str | None],
    environ: Mapping[str, str],
    from_file: Mapping[str, str],
    env_file: Path,
) -> tuple[str, str]:
    if overrides.get(setting.env) is not None:
        return str(overrides[setting.env]), "from the command line"
    if setting.env in environ:
        return environ[setting.env], "from the environment"
    if setting.env in from_file:
        return from_file[setting.env], f"in {env_file}"
    return setting.default, "default"


def _where_to_fix(source: str, env_file: Path) -> str:
    if source == "from the environment":
        return "in your environment (or unset it to use .env)"
    if source == "from the command line":
        return "on the command line"
    return f"in {env_file}"


def _warn_unknown(from_file: Mapping[str, str], env_file: Path) -> None:
    for key in from_file:
        if key.startswith(("MLOPS_KIT_", "POSTGRES_")) and key not in SETTINGS_BY_ENV:
            close = difflib.get_close_matches(key, SETTINGS_BY_ENV, n=1)
            suggestion = f" (did you mean {close[0]}?)" if close else ""
            logger.warning("unknown setting %s in %s is ignored%s", key, env_file, suggestion)


#: Connections the MLflow entrypoint keeps out of the workers' pools (backups, healthchecks, jobs).
CONNECTION_RESERVE = 20


def _check_consistency(config: KitConfig) -> None:
    engines = 4 if config.mlflow_jobs == "true" else 3
    needed = config.mlflow_workers * engines * 2 + CONNECTION_RESERVE
    if config.postgres_max_connections < needed:
        raise ConfigError(
            f"POSTGRES_MAX_CONNECTIONS={config.postgres_max_connections} is too small for "
            f"MLOPS_KIT_MLFLOW_WORKERS={config.mlflow_workers} (each worker needs {engines} pools of 2+ connections)",
            hint=f"raise POSTGRES_MAX_CONNECTIONS to {needed} or more in {config.env_file}, or lower the workers",
        )
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        given, missing = (
            ("MLOPS_KIT_TLS_CERT_FILE", "MLOPS_KIT_TLS_KEY_FILE")
            if config.tls_key_file is None
            else ("MLOPS_KIT_TLS_KEY_FILE", "MLOPS_KIT_TLS_CERT_FILE")
        )
        raise ConfigError(
            f"{given} is set but {missing} is empty",
            hint=f"set {missing} in {config.env_file} too, or clear both to use the kit's CA",
        )
    for env, path in (
        ("MLOPS_KIT_TLS_CERT_FILE", config.tls_cert_file),
        ("MLOPS_KIT_TLS_KEY_FILE", config.tls_key_file),
        ("MLOPS_KIT_TLS_CA_FILE", config.tls_ca_file),
        ("MLOPS_KIT_S3_CA_FILE", config.s3_ca_file if config.uses_bucket else None),
        ("MLOPS_KIT_WEBHOOK_CA_FILE", config.webhook_ca_file if config.webhook_allowed_hosts else None),
    ):
        if path is not None and not path.is_file():
            raise ConfigError(
                f"{env}={path} is not a readable file",
                hint=f"fix {env} in {config.env_file} (a PEM file; relative paths start at the kit's folder)",
            )
    config.store.validate(config)
