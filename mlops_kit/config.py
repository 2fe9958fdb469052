"""The kit's one typed configuration object.

Every setting has one environment variable name, used alike in `.env`, in the
process environment, in `compose.yaml` interpolation and in the CLI's
``envvar=``. Precedence: command line > environment > `.env` > default.
Validation errors name the variable and where its value came from.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from mlops_kit.errors import ConfigError
from mlops_kit.masking import register_secret

logger = logging.getLogger(__name__)

ENV_FILE_NAME = ".env"
COMPOSE_FILE_NAME = "compose.yaml"
NFS_OVERLAY = Path("docker/compose/artifacts-nfs.yaml")
#: s3 and minio modes: MLflow writes to a bucket (minio adds the MinIO service on top).
S3_OVERLAY = Path("docker/compose/artifacts-s3.yaml")
MINIO_OVERLAY = Path("docker/compose/artifacts-minio.yaml")
#: MLOPS_KIT_S3_NETWORK set: MLflow joins that existing Docker network to reach the store.
S3_NETWORK_OVERLAY = Path("docker/compose/s3-network.yaml")
#: MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS set: the egress proxy MLflow's webhooks go through.
WEBHOOKS_OVERLAY = Path("docker/compose/webhooks.yaml")
# Site-specific changes, read last, as plain `docker compose` does by default.
OVERRIDE_FILE_NAME = "compose.override.yaml"
ARTIFACT_STORES = ("volume", "nfs", "minio", "s3")
#: Modes whose artifacts live in a bucket (reached through the S3 API).
BUCKET_STORES = ("minio", "s3")
#: Where MLflow reaches the kit's own MinIO (minio mode), on the internal storage network.
MINIO_ENDPOINT = "http://minio:9000"
S3_ADDRESSING_STYLES = ("path", "virtual", "auto")
WILDCARD_ADDRESSES = ("0.0.0.0", "::")

_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9.*\[\]:_-]+$")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?$")
_SIZE = re.compile(r"^[0-9]+(kB|MB|GB|TB)$")
_LOG_SIZE = re.compile(r"^[0-9]+[kmg]$")
# Secrets travel through .env, Compose interpolation and libpq's password file;
# this alphabet needs no quoting or escaping in any of them.
_SECRET = re.compile(r"^[A-Za-z0-9_.~-]{16,128}$")
# MLflow user names: safe in URLs, file names (secrets/users/NAME) and logs.
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
PERMISSIONS = ("NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE")


# ---- value parsers: return the typed value or raise ValueError(what is expected)


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a TCP port number from 1 to 65535")
    return int(value)


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not value.isdigit() or not low <= int(value) <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return int(value)

    return parse


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address such as 127.0.0.1 or 0.0.0.0") from None
    return value


def _host(value: str) -> str:
    if value and not _HOST_NAME.match(value):
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be a host name or an IP address") from None
    return value


def _host_ports(value: str) -> tuple[str, ...]:
    """Comma-separated host[:port] entries ([v6]:port for IPv6); the port defaults to 443."""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    for entry in entries:
        match = _HOST_PORT.match(entry)
        try:
            if match is None:
                raise ValueError(entry)
            if match.group("v6"):
                ipaddress.IPv6Address(match.group("v6"))
            else:
                _host(match.group("host"))
            if not 1 <= int(match.group("port") or 443) <= 65535:
                raise ValueError(entry)
        except ValueError:
            raise ValueError(f"has an invalid entry {entry!r} (use host or host:port, separated by commas)") from None
    return entries


def _host_patterns(value: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    for pattern in patterns:
        if not _HOST_PATTERN.match(pattern):
            raise ValueError(f"has an invalid host pattern {pattern!r} (use name or name:* separated by commas)")
    return patterns


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of: {', '.join(choices)}")
        return value

    return parse


def _project_name(value: str) -> str:
    if not _PROJECT_NAME.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter or digit")
    return value


def _pg_size(value: str) -> str:
    if not _SIZE.match(value):
        raise ValueError("must be a PostgreSQL size such as 256MB or 2GB")
    return value


def _log_size(value: str) -> str:
    if not _LOG_SIZE.match(value):
        raise ValueError("must be a size such as 20m or 1g")
    return value


def check_secret_text(value: str, what: str) -> None:
    """Raise :class:`ConfigError` if ``value`` is not a usable secret; the message never shows it."""
    try:
        _secret(value)
    except ValueError as exc:
        raise ConfigError(f"{what} {exc}", hint="choose another one (or let the kit generate it)") from None


def check_user_name(value: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a valid MLflow user name for the kit."""
    try:
        _user_name(value)
    except ValueError as exc:
        raise ConfigError(f"user name {value!r} {exc}", hint="choose another name") from None


def _secret(value: str) -> str:
    if not _SECRET.match(value):
        raise ValueError("must hold 16 to 128 characters of A-Z a-z 0-9 - _ . ~ on one line")
    return value


def _volume_name(value: str) -> str:
    if value and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
        raise ValueError("must be a Docker volume name (letters, digits, '_', '.', '-')")
    return value


def _text(value: str) -> str:
    if "\n" in value:
        raise ValueError("must be a single line")
    return value


def _optional_path(value: str) -> Path | None:
    """A file path (relative to the kit's folder); existence is checked once the folder is known."""
    return Path(value).expanduser() if value else None


def _cpus(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of CPUs such as 1 or 1.5") from None
    if not 0.1 <= number <= 512:
        raise ValueError("must be a number of CPUs from 0.1 to 512")
    return value


def _user_name(value: str) -> str:
    if not _USER_NAME.match(value):
        raise ValueError("must be 1 to 64 characters of letters, digits, '.', '_', '@' or '-'")
    return value


def _url(value: str) -> str:
    if value and not re.match(r"^https?://[A-Za-z0-9.\[\]:_-]+(:[0-9]+)?/?$", value):
        raise ValueError("must be an http(s) URL of the S3 endpoint, such as https://s3.example.com:9000 (no path)")
    return value.rstrip("/")


def _bucket(value: str) -> str:
    # S3's rules for bucket names (a subset every S3 server accepts).
    if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", value) or ".." in value:
        raise ValueError("must be an S3 bucket name: 3-63 characters of a-z 0-9 . - (start and end alphanumeric)")
    return value


def _key_prefix(value: str) -> str:
    if value and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", value.strip("/")):
        raise ValueError("must be an object key prefix of letters, digits, '.', '_', '-' and '/'")
    return value.strip("/")


def _region(value: str) -> str:
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", value):
        raise ValueError("must be a region name such as us-east-1")
    return value


def _network_name(value: str) -> str:
    if value and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", value):
        raise ValueError("must be a Docker network name (letters, digits, '_', '.', '-')")
    return value


def _optional_file(value: str) -> Path | None:
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_file():
        raise ValueError(f"names {path}, which is not a readable file")
    return path


@dataclass(frozen=True)
class Setting:
    """One configuration variable: its name, default, parser and meaning."""

    env: str
    attr: str
    default: str
    parse: Callable[[str], Any]
    help: str


#: Secret files under MLOPS_KIT_SECRETS_DIR, generated by init, mode 0600.
#: Compose mounts them at /run/secrets/<name>.
SECRET_FILES: tuple[str, ...] = (
    "postgres_password",
    "restic_password",
    "mlflow_admin_password",
    "mlflow_flask_secret_key",
    "mlflow_kek_passphrase",
)
#: The S3 store's keys (s3 and minio modes), secret files like the others. In minio
#: mode init generates them (MinIO's root user and password); in s3 mode the operator
#: provides them (`init --s3-credentials-stdin`, or write the files, mode 0600).
S3_SECRET_FILES: tuple[str, ...] = ("s3_access_key_id", "s3_secret_access_key")
#: Secrets `up` may generate for a stack initialised by an older kit: nothing
#: was created with them yet (the admin user is created from its password on
#: the first start with authentication).
#: The KEK passphrase replaces MLflow's public default: the MLflow entrypoint re-wraps
#: what the default encrypted (mlflow-kek-adopt).
UPGRADE_SECRET_FILES: tuple[str, ...] = ("mlflow_admin_password", "mlflow_flask_secret_key", "mlflow_kek_passphrase")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "COMPOSE_PROJECT_NAME",
        "project_name",
        "mlops-kit",
        _project_name,
        "Compose project name; prefixes containers, networks and volumes.",
    ),
    Setting(
        "MLOPS_KIT_BIND_ADDRESS",
        "bind_address",
        "127.0.0.1",
        _ip_address,
        "Host address the HTTPS proxy is published on (0.0.0.0: all interfaces).",
    ),
    Setting("MLOPS_KIT_PORT", "port", "5000", _port, "Host port of the HTTPS proxy (the only published port)."),
    Setting(
        "MLOPS_KIT_PUBLIC_HOST",
        "public_host",
        "",
        _host,
        "Name clients use to reach this host (printed by client-env).",
    ),
    Setting(
        "MLOPS_KIT_ALLOWED_HOSTS",
        "allowed_hosts",
        "",
        _host_patterns,
        "Extra Host-header patterns MLflow accepts, comma-separated (name,name:*).",
    ),
    Setting(
        "MLOPS_KIT_ARTIFACT_STORE",
        "artifact_store",
        "volume",
        _choice(*ARTIFACT_STORES),
        "Where artifacts live: volume (named Docker volume) or nfs.",
    ),
    Setting(
        "MLOPS_KIT_S3_ENDPOINT_URL",
        "s3_endpoint_url",
        "",
        _url,
        "S3 endpoint (s3 mode; empty: AWS). minio mode: the kit's MinIO, http://minio:9000.",
    ),
    Setting("MLOPS_KIT_S3_BUCKET", "s3_bucket", "mlflow-artifacts", _bucket, "Bucket of the artifacts (s3, minio)."),
    Setting(
        "MLOPS_KIT_S3_PREFIX",
        "s3_prefix",
        "artifacts",
        _key_prefix,
        "Key prefix of the artifacts in the bucket (restore and migrate switch it to a fresh one).",
    ),
    Setting("MLOPS_KIT_S3_REGION", "s3_region", "us-east-1", _region, "Region of the bucket (s3, minio)."),
    Setting(
        "MLOPS_KIT_S3_ADDRESSING",
        "s3_addressing",
        "path",
        _choice(*S3_ADDRESSING_STYLES),
        "S3 addressing: path (endpoint/bucket/key: most on-prem servers), virtual (bucket.endpoint), auto.",
    ),
    Setting(
        "MLOPS_KIT_S3_CA_FILE",
        "s3_ca_file",
        "",
        _optional_path,
        "PEM file of the CA that signed the S3 endpoint's certificate (trusted besides the system's).",
    ),
    Setting(
        "MLOPS_KIT_S3_NETWORK",
        "s3_network",
        "",
        _network_name,
        "Existing Docker network MLflow joins to reach the S3 endpoint (an S3 server in another Compose project).",
    ),
    Setting(
        "MLOPS_KIT_S3_PRESIGNED",
        "s3_presigned",
        "false",
        _choice("true", "false"),
        "Let clients move large files straight to S3 with presigned URLs (true only if they can reach the endpoint).",
    ),
    Setting(
        "MLOPS_KIT_MINIO_IMAGE",
        "minio_image",
        "mlops-kit/minio:RELEASE.2025-10-15T17-29-55Z-kit0.5.0",
        _text,
        "Tag of the MinIO image (minio mode): built from source, or a mirror's or a maintained fork's.",
    ),
    Setting("MLOPS_KIT_MINIO_MEMORY", "minio_memory", "2g", _log_size, "Memory limit of the MinIO container."),
    Setting("MLOPS_KIT_MINIO_CPUS", "minio_cpus", "1", _cpus, "CPU limit of the MinIO container."),
    Setting(
        "MLOPS_KIT_MINIO_GIT_URL",
        "minio_git_url",
        "https://github.com/minio/minio.git",
        _text,
        "Git repository the MinIO image is built from (a mirror; the pinned commit is still checked).",
    ),
    Setting(
        "MLOPS_KIT_GO_DOWNLOAD_URL",
        "go_download_url",
        "https://go.dev/dl",
        _text,
        "Where the MinIO build downloads the Go toolchain tarball (a mirror; its sha256 is still checked).",
    ),
    Setting(
        "MLOPS_KIT_GOPROXY",
        "goproxy",
        "https://proxy.golang.org,direct",
        _text,
        "Go module proxy for the MinIO build (Athens, Artifactory...; go.sum still verifies every module).",
    ),
    Setting(
        "MLOPS_KIT_MINIO_VOLUME",
        "minio_volume_name",
        "",
        _volume_name,
        "Docker volume of MinIO's data (minio mode; empty: <project>_minio-data).",
    ),
    Setting(
        "MLOPS_KIT_ADMIN_USER",
        "admin_user",
        "admin",
        _user_name,
        "MLflow admin user, created on first start (password: secrets/mlflow_admin_password).",
    ),
    Setting(
        "MLOPS_KIT_AUTH_DEFAULT_PERMISSION",
        "auth_default_permission",
        "NO_PERMISSIONS",
        _choice(*PERMISSIONS),
        "What a user may do with others' experiments and models without a grant.",
    ),
    Setting(
        "MLOPS_KIT_AUTH_CACHE_SECONDS",
        "auth_cache_seconds",
        "60",
        _bounded_int(0, 3600),
        "Seconds a verified login is cached per worker (0: verify every request, ~100 ms each).",
    ),
    Setting(
        "MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS",
        "webhook_allowed_hosts",
        "",
        _host_ports,
        "Hosts MLflow's webhooks may reach (host or host:port, default port 443); empty: no egress at all.",
    ),
    Setting(
        "MLOPS_KIT_WEBHOOK_CA_FILE",
        "webhook_ca_file",
        "",
        _optional_path,
        "PEM file of the CA that signed your webhook receivers' certificates (trusted besides the system's).",
    ),
    Setting(
        "MLOPS_KIT_LOGIN_FAILURES_PER_MINUTE",
        "login_failures_per_minute",
        "10",
        _bounded_int(1, 10000),
        "Failed logins a client address may make in a minute; more are answered 429 with Retry-After.",
    ),
    Setting(
        "MLOPS_KIT_GENAI_ENDPOINTS",
        "genai_endpoints",
        "admin",
        _choice("admin", "users"),
        "Who may use MLflow's AI gateway, assistant and demo-data endpoints: admin only, or every user.",
    ),
    Setting(
        "MLOPS_KIT_TLS_CERT_FILE",
        "tls_cert_file",
        "",
        _optional_path,
        "Operator's certificate chain (PEM) for the proxy; empty: issued by the kit's CA.",
    ),
    Setting(
        "MLOPS_KIT_TLS_KEY_FILE",
        "tls_key_file",
        "",
        _optional_path,
        "Key of MLOPS_KIT_TLS_CERT_FILE (PEM, mode 0600).",
    ),
    Setting(
        "MLOPS_KIT_TLS_CA_FILE",
        "tls_ca_file",
        "",
        _optional_path,
        "CA clients need to trust MLOPS_KIT_TLS_CERT_FILE (empty: a publicly trusted or company CA).",
    ),
    Setting("MLOPS_KIT_NFS_SERVER", "nfs_server", "", _host, "NFS server (nfs mode)."),
    Setting("MLOPS_KIT_NFS_EXPORT", "nfs_export", "", _text, "Exported path on the NFS server (nfs mode)."),
    Setting(
        "MLOPS_KIT_NFS_OPTIONS",
        "nfs_options",
        "nfsvers=4.1,rw,hard,timeo=600,retrans=2,noresvport",
        _text,
        "NFS mount options (nfs mode).",
    ),
    Setting("MLOPS_KIT_MLFLOW_WORKERS", "mlflow_workers", "2", _bounded_int(1, 64), "MLflow server worker processes."),
    Setting(
        "MLOPS_KIT_MLFLOW_JOBS",
        "mlflow_jobs",
        "false",
        _choice("true", "false"),
        "Run MLflow's job runners (GenAI: LLM judges, online scoring, prompt optimisation; ~1.6 GB).",
    ),
    Setting(
        "MLOPS_KIT_BASE_IMAGE",
        "base_image",
        "debian:trixie-slim",
        _text,
        "Debian base image every kit image is built FROM.",
    ),
    Setting(
        "MLOPS_KIT_MLFLOW_IMAGE",
        "mlflow_image",
        "mlops-kit/mlflow:3.17.2-kit0.5.0",
        _text,
        "Tag of the MLflow server image.",
    ),
    Setting(
        "MLOPS_KIT_POSTGRES_IMAGE",
        "postgres_image",
        "mlops-kit/postgres:17-kit0.5.0",
        _text,
        "Tag of the PostgreSQL image.",
    ),
    Setting(
        "MLOPS_KIT_PROXY_IMAGE",
        "proxy_image",
        "mlops-kit/proxy:caddy2.6-kit0.5.0",
        _text,
        "Tag of the HTTPS proxy image (Caddy).",
    ),
    Setting(
        "MLOPS_KIT_EGRESS_IMAGE",
        "egress_image",
        "mlops-kit/egress:squid-kit0.5.0",
        _text,
        "Tag of the webhooks' egress proxy image (Squid; only with MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS).",
    ),
    Setting("MLOPS_KIT_MLFLOW_MEMORY", "mlflow_memory", "6g", _log_size, "Memory limit of the MLflow container."),
    Setting(
        "MLOPS_KIT_MLFLOW_TMP_SIZE",
        "mlflow_tmp_size",
        "2g",
        _log_size,
        "Size of MLflow's /tmp (a tmpfs, counted in its memory).",
    ),
    Setting(
        "MLOPS_KIT_POSTGRES_MEMORY", "postgres_memory", "2g", _log_size, "Memory limit of the PostgreSQL container."
    ),
    Setting("MLOPS_KIT_PROXY_MEMORY", "proxy_memory", "512m", _log_size, "Memory limit of the proxy container."),
    Setting("MLOPS_KIT_BACKUP_MEMORY", "backup_memory", "2g", _log_size, "Memory limit of backup and restore jobs."),
    Setting("MLOPS_KIT_MLFLOW_CPUS", "mlflow_cpus", "2", _cpus, "CPU limit of the MLflow container (init: all)."),
    Setting(
        "MLOPS_KIT_POSTGRES_CPUS", "postgres_cpus", "2", _cpus, "CPU limit of the PostgreSQL container (init: all)."
    ),
    Setting("MLOPS_KIT_PROXY_CPUS", "proxy_cpus", "1", _cpus, "CPU limit of the proxy container."),
    Setting("MLOPS_KIT_BACKUP_CPUS", "backup_cpus", "1", _cpus, "CPU limit of backup and restore jobs."),
    Setting("MLOPS_KIT_PIP_INDEX_URL", "pip_index_url", "", _text, "Package index for image builds (instead of PyPI)."),
    Setting(
        "MLOPS_KIT_PIP_EXTRA_INDEX_URL", "pip_extra_index_url", "", _text, "Additional package index for image builds."
    ),
    Setting(
        "MLOPS_KIT_BUILD_CA_FILE",
        "build_ca_file",
        "",
        _optional_file,
        "PEM file of extra CA certificates trusted during image builds.",
    ),
    Setting(
        "MLOPS_KIT_BACKUP_IMAGE",
        "backup_image",
        "mlops-kit/backup:kit0.5.0",
        _text,
        "Tag of the backup job image (restic, PostgreSQL client).",
    ),
    Setting(
        "MLOPS_KIT_BACKUP_DIR",
        "backup_dir",
        "./backups",
        _text,
        "Folder of the backup repository, staging area and cache (relative to the kit's folder).",
    ),
    Setting(
        "MLOPS_KIT_BACKUP_OFFSITE",
        "backup_offsite",
        "",
        _text,
        "Second repository each backup is copied to: a folder, or restic's s3:/sftp: form.",
    ),
    Setting("MLOPS_KIT_BACKUP_KEEP_DAILY", "backup_keep_daily", "7", _bounded_int(0, 3650), "Daily backups kept."),
    Setting("MLOPS_KIT_BACKUP_KEEP_WEEKLY", "backup_keep_weekly", "4", _bounded_int(0, 520), "Weekly backups kept."),
    Setting("MLOPS_KIT_BACKUP_KEEP_MONTHLY", "backup_keep_monthly", "6", _bounded_int(0, 240), "Monthly backups kept."),
    Setting(
        "MLOPS_KIT_POSTGRES_VOLUME",
        "postgres_volume_name",
        "",
        _volume_name,
        "Docker volume of the database (empty: <project>_postgres-data; restore sets it).",
    ),
    Setting(
        "MLOPS_KIT_ARTIFACTS_VOLUME",
        "artifacts_volume_name",
        "",
        _volume_name,
        "Docker volume of the artifacts (empty: <project>_artifacts; restore sets it).",
    ),
    Setting(
        "MLOPS_KIT_LOG_MAX_SIZE", "log_max_size", "20m", _log_size, "Size at which a container log file is rotated."
    ),
    Setting(
        "MLOPS_KIT_LOG_MAX_FILES", "log_max_files", "5", _bounded_int(1, 100), "Rotated log files kept per container."
    ),
    Setting(
        "MLOPS_KIT_SECRETS_DIR",
        "secrets_dir",
        "secrets",
        _text,
        "Folder of secret files (mode 0600), relative to the kit's folder.",
    ),
    Setting(
        "POSTGRES_MAX_CONNECTIONS",
        "postgres_max_connections",
        "100",
        _bounded_int(20, 5000),
        "PostgreSQL max_connections.",
    ),
    Setting(
        "POSTGRES_SHARED_BUFFERS",
        "postgres_shared_buffers",
        "256MB",
        _pg_size,
        "PostgreSQL shared_buffers (init sizes it to the host).",
    ),
    Setting(
        "POSTGRES_EFFECTIVE_CACHE_SIZE",
        "postgres_effective_cache_size",
        "768MB",
        _pg_size,
        "PostgreSQL effective_cache_size (init sizes it to the host).",
    ),
    Setting("POSTGRES_WORK_MEM", "postgres_work_mem", "8MB", _pg_size, "PostgreSQL work_mem."),
    Setting(
        "POSTGRES_MAINTENANCE_WORK_MEM",
        "postgres_maintenance_work_mem",
        "64MB",
        _pg_size,
        "PostgreSQL maintenance_work_mem (init sizes it to the host).",
    ),
)
SETTINGS_BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}


@dataclass(frozen=True)
class KitConfig:
    """Resolved, validated configuration of one mlops-kit stack."""

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
    mlflow_jobs: str
    secrets_dir: str
    base_image: str
    mlflow_image: str
    postgres_image: str
    proxy_image: str
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
    def uses_bucket(self) -> bool:
        """Artifacts live in a bucket (s3 or minio mode), not in a volume."""
        return self.artifact_store in BUCKET_STORES

    @property
    def s3_endpoint(self) -> str:
        """The endpoint MLflow and the jobs use: the kit's MinIO in minio mode."""
        return MINIO_ENDPOINT if self.artifact_store == "minio" else self.s3_endpoint_url

    @property
    def artifacts_destination(self) -> str:
        """MLflow's --artifacts-destination: kit-s3:// (proxied only) or s3:// (presigned allowed)."""
        if not self.uses_bucket:
            return "/mlflow/artifacts"
        scheme = "s3" if self.s3_presigned == "true" else "kit-s3"
        return f"{scheme}://{self.s3_bucket}/{self.s3_prefix}".rstrip("/")

    @property
    def compose_files(self) -> list[Path]:
        """compose.yaml, this mode's overlays, then the site's compose.override.yaml."""
        listed = (
            compose_file_value(self.artifact_store, self.s3_network, bool(self.webhook_allowed_hosts))
            or COMPOSE_FILE_NAME
        )
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
            value = getattr(self, setting.attr)
            if isinstance(value, tuple):
                value = ",".join(value)
            elif value is None:
                value = ""
            env[setting.env] = str(value)
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
        env["MLOPS_KIT_MLFLOW_SECRETS_REV"] = _fingerprint(
            [
                self.secrets_path / "postgres_password",
                self.secrets_path / "mlflow_flask_secret_key",
                self.secrets_path / "mlflow_kek_passphrase",
                *([self.secrets_path / name for name in S3_SECRET_FILES] if self.uses_bucket else []),
                *([self.s3_ca_file] if self.uses_bucket and self.s3_ca_file else []),
                *([self.webhook_ca_file] if self.webhook_allowed_hosts and self.webhook_ca_file else []),
            ]
        )
        env["MLOPS_KIT_PROXY_SECRETS_REV"] = _fingerprint([self.proxy_cert_path, self.proxy_key_path])
        env["COMPOSE_PROJECT_NAME"] = self.project_name
        return env


def _fingerprint(paths: list[Path]) -> str:
    """A short digest of the files' contents (missing files count as empty); reveals nothing of them."""
    digest = hashlib.sha256(b"mlops-kit secrets revision\0")
    for path in paths:
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError:
            digest.update(b"\0")
    return digest.hexdigest()[:16]


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


#: The suffix restore (-r<time>) or migrate (-m<time>) adds to MLOPS_KIT_S3_PREFIX.
_PREFIX_GENERATION = re.compile(r"-[mr]\d{14}$")


def fresh_prefix(prefix: str, generation: str) -> str:
    """A new key prefix for ``generation`` (r/m + time), replacing the generation ``prefix`` already has."""
    return f"{_PREFIX_GENERATION.sub('', prefix)}-{generation}".lstrip("-")


def compose_file_value(artifact_store: str, s3_network: str = "", webhooks: bool = False) -> str:
    """COMPOSE_FILE for `.env`: the files plain `docker compose` needs ('' for volume mode without webhooks)."""
    overlays: list[Path] = []
    if artifact_store == "nfs":
        overlays.append(NFS_OVERLAY)
    if artifact_store in BUCKET_STORES:
        overlays.append(S3_OVERLAY)
    if artifact_store == "minio":
        overlays.append(MINIO_OVERLAY)
    if artifact_store in BUCKET_STORES and s3_network:
        overlays.append(S3_NETWORK_OVERLAY)
    if webhooks:
        overlays.append(WEBHOOKS_OVERLAY)
    return ":".join([COMPOSE_FILE_NAME, *(p.as_posix() for p in overlays)]) if overlays else ""


def find_project_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding `compose.yaml`: explicit, else the current folder, else the kit's checkout."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit).expanduser().resolve())
    else:
        candidates.append(Path.cwd())
        candidates.append(Path(__file__).resolve().parent.parent)
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
    if values["artifact_store"] in BUCKET_STORES:
        for name in S3_SECRET_FILES:
            # minio mode: `up` generates missing keys (MinIO starts with whatever they are).
            if values["artifact_store"] == "s3" or (secrets_path / name).exists():
                read_s3_secret(secrets_path, name)  # validated and masked from here on
    for attr in ("tls_cert_file", "tls_key_file", "tls_ca_file", "s3_ca_file", "webhook_ca_file"):
        if values[attr] is not None and not values[attr].is_absolute():
            values[attr] = (project_dir / values[attr]).resolve()
    config = KitConfig(project_dir=project_dir, env_file=env_file, **values)
    _check_consistency(config)
    return config


def read_secret(secrets_path: Path, name: str) -> str:
    """Read and validate one secret file. Errors name the file, never the value."""
    path = secrets_path / name
    return _read_secret_file(
        path,
        missing=f"secret file {path} is missing",
        missing_hint="run `mlops-kit init` (it generates missing secrets and keeps existing ones)",
        validate=lambda value: _check_generated_secret(value, path),
    )


def _check_generated_secret(value: str, path: Path) -> None:
    try:
        _secret(value)
    except ValueError as exc:
        raise ConfigError(f"secret file {path} {exc}", hint=f"replace the content of {path}") from None


def _read_secret_file(path: Path, *, missing: str, missing_hint: str, validate: Callable[[str], None]) -> str:
    """The one way a secret file is read: present, readable, masked before it is validated, private."""
    if not path.is_file():
        raise ConfigError(missing, hint=missing_hint)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read secret file {path}: {exc.__class__.__name__}",
            hint="run mlops-kit as the user that ran init (usually root)",
        ) from None
    register_secret(value)
    validate(value)
    if path.stat().st_mode & 0o077:
        logger.warning("secret file %s is readable by other users; run: chmod 600 %s", path, path)
    return value


def check_s3_key_text(value: str, what: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` can be an S3 key id or secret; never shows it."""
    # AWS secrets hold '/' and '+'; other servers' keys vary: any printable ASCII without spaces.
    if not re.match(r"^[\x21-\x7e]{3,256}$", value):
        raise ConfigError(
            f"{what} must be 3 to 256 printable characters without spaces, on one line",
            hint="copy the key again from your S3 server's console",
        )


def read_s3_secret(secrets_path: Path, name: str) -> str:
    """Read one of the S3 key files (s3 and minio modes); errors name the file, never the value."""
    path = secrets_path / name
    return _read_secret_file(
        path,
        missing=f"secret file {path} is missing (MLOPS_KIT_ARTIFACT_STORE needs the S3 keys)",
        missing_hint="s3 mode: mlops-kit init --force --artifact-store s3 --s3-credentials-stdin (or write the "
        "file, mode 0600); minio mode: mlops-kit init generates it",
        validate=lambda value: check_s3_key_text(value, f"secret file {path}"),
    )


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
    if config.artifact_store == "s3" and config.s3_endpoint_url.startswith("http://") and config.s3_network == "":
        logger.warning(
            "MLOPS_KIT_S3_ENDPOINT_URL=%s is plain HTTP: keys are signed, but artifacts cross the network unencrypted",
            config.s3_endpoint_url,
        )
    if config.artifact_store == "nfs":
        for attr, env in (("nfs_server", "MLOPS_KIT_NFS_SERVER"), ("nfs_export", "MLOPS_KIT_NFS_EXPORT")):
            if not getattr(config, attr):
                raise ConfigError(
                    f"{env} is empty but MLOPS_KIT_ARTIFACT_STORE=nfs",
                    hint=f"set {env} in {config.env_file} (or: mlops-kit init --force --nfs-server S --nfs-export P)",
                )
        if not config.nfs_export.startswith("/"):
            raise ConfigError(
                f"MLOPS_KIT_NFS_EXPORT={config.nfs_export!r} must be an absolute path on the NFS server",
                hint=f"fix MLOPS_KIT_NFS_EXPORT in {config.env_file}",
            )
