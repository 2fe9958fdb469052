"""The settings table: every variable the kit reads, its default, parser and meaning.

Every setting has one environment variable name, used alike in `.env`, in the
process environment, in `compose.yaml` interpolation and in the CLI's
``envvar=`` (commands build their options from this table). A ``Setting`` maps
itself both ways: ``parse`` reads the variable's text, ``to_env`` writes a value back.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_kit.errors import ConfigError

#: The artifact store modes; each has its module in mlops_kit/stores/.
ARTIFACT_STORES = ("volume", "nfs", "minio", "s3")
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


_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_duration(value: str) -> int:
    """Seconds in a duration such as 30d, 12h, 1d12h, 90m or 0; ValueError saying the form otherwise."""
    text = value.strip().lower()
    if text.isdigit() and int(text) == 0:
        return 0
    match = _DURATION.match(text)
    if not text or not match or not any(match.groupdict().values()):
        raise ValueError("must be a duration such as 30d, 12h, 1d12h or 90m")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    return parts.get("d", 0) * 86400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0)


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

    parse.choices = choices  # type: ignore[attr-defined]  # read by Setting.choices (CLI Choice types)
    return parse


_EMAIL = re.compile(r"^[^\s@,'\"\\]+@[^\s@,'\"\\]+$")
_SMTP_HOST = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
_LOGIN = re.compile(r"^[^\s'\"\\]*$")


def _emails(value: str) -> str:
    if value and not all(_EMAIL.match(part.strip()) for part in value.split(",")):
        raise ValueError("is not a comma-separated list of email addresses")
    return value


def _email(value: str) -> str:
    if value and not _EMAIL.match(value):
        raise ValueError("is not an email address")
    return value


def _smtp_host(value: str) -> str:
    if value and not _SMTP_HOST.match(value):
        raise ValueError("is not host:port (e.g. smtp.example.org:587)")
    return value


def _login(value: str) -> str:
    if not _LOGIN.match(value):
        raise ValueError("may not contain spaces, quotes or backslashes")
    return value


_PROMETHEUS_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h|d|w|y))+$")


def _prometheus_duration(value: str) -> str:
    if not _PROMETHEUS_DURATION.match(value) or not any(ch in "123456789" for ch in value):
        raise ValueError("is not a duration such as 30s, 5m, 12h or 30d")
    return value


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


def parse_secret(value: str) -> str:
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


def parse_user_name(value: str) -> str:
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
    """One configuration variable: its name, default, parser and meaning.

    ``attr`` is its field on :class:`~mlops_kit.config.loader.KitConfig`; its CLI
    option, where a command takes one, is ``--`` + ``attr`` with dashes.
    """

    env: str
    attr: str
    default: str
    parse: Callable[[str], Any]
    help: str

    @property
    def option(self) -> str:
        """The command-line flag of this setting (``--s3-bucket`` for MLOPS_KIT_S3_BUCKET)."""
        return "--" + self.attr.replace("_", "-")

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values of a choice setting (empty for free-form ones)."""
        return tuple(getattr(self.parse, "choices", ()))

    def to_env(self, value: Any) -> str:
        """The variable's text for a parsed ``value`` (the inverse of ``parse``)."""
        if value is None:
            return ""
        if isinstance(value, tuple):
            return ",".join(value)
        return str(value)

    def check(self, value: str, shown_as: str, hint: str) -> Any:
        """Parse ``value`` or raise :class:`ConfigError` naming ``shown_as`` (a flag or the variable)."""
        try:
            return self.parse(value)
        except ValueError as exc:
            raise ConfigError(f"{shown_as} {value!r} {exc}", hint=hint) from None


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
        "Where artifacts live: volume (a Docker volume), nfs (an NFS export), minio (the kit's MinIO), s3 (a bucket).",
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
        "mlops-kit/minio:RELEASE.2025-10-15T17-29-55Z-kit0.11.0",
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
        parse_user_name,
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
        "MLOPS_KIT_WATCHDOG_SECONDS",
        "watchdog_seconds",
        "45",
        _bounded_int(0, 3600),
        "A service that answered once and then stays silent this long is restarted (0: never).",
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
        "mlops-kit/mlflow:3.17.2-kit0.11.0",
        _text,
        "Tag of the MLflow server image.",
    ),
    Setting(
        "MLOPS_KIT_POSTGRES_IMAGE",
        "postgres_image",
        "mlops-kit/postgres:17-kit0.11.0",
        _text,
        "Tag of the PostgreSQL image.",
    ),
    Setting(
        "MLOPS_KIT_PROXY_IMAGE",
        "proxy_image",
        "mlops-kit/proxy:caddy2.6-kit0.11.0",
        _text,
        "Tag of the HTTPS proxy image (Caddy).",
    ),
    Setting(
        "MLOPS_KIT_EGRESS_IMAGE",
        "egress_image",
        "mlops-kit/egress:squid-kit0.11.0",
        _text,
        "Tag of the webhooks' egress proxy image (Squid; only with MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS).",
    ),
    Setting(
        "MLOPS_KIT_METRICS_IMAGE",
        "metrics_image",
        "mlops-kit/metrics:kit0.11.0",
        _text,
        "Tag of the metrics service image (the stack's /metrics: PostgreSQL exporter and the kit's collector).",
    ),
    Setting(
        "MLOPS_KIT_PROMETHEUS_IMAGE",
        "prometheus_image",
        "mlops-kit/prometheus:2.53-kit0.11.0",
        _text,
        "Tag of the bundled Prometheus image (only with MLOPS_KIT_MONITORING=true).",
    ),
    Setting(
        "MLOPS_KIT_ALERTMANAGER_IMAGE",
        "alertmanager_image",
        "mlops-kit/alertmanager:0.28-kit0.11.0",
        _text,
        "Tag of the bundled Alertmanager image (only with MLOPS_KIT_MONITORING=true).",
    ),
    Setting("MLOPS_KIT_METRICS_MEMORY", "metrics_memory", "256m", _log_size, "Memory limit of the metrics service."),
    Setting(
        "MLOPS_KIT_PROMETHEUS_MEMORY", "prometheus_memory", "1g", _log_size, "Memory limit of the bundled Prometheus."
    ),
    Setting(
        "MLOPS_KIT_ALERTMANAGER_MEMORY",
        "alertmanager_memory",
        "256m",
        _log_size,
        "Memory limit of the bundled Alertmanager.",
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
        "mlops-kit/backup:kit0.11.0",
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
    Setting(
        "MLOPS_KIT_GC_OLDER_THAN",
        "gc_older_than_seconds",
        "30d",
        parse_duration,
        "gc removes what has been deleted for longer than this (e.g. 30d, 12h).",
    ),
    Setting(
        "MLOPS_KIT_RETENTION_DAYS",
        "retention_days",
        "0",
        _bounded_int(0, 36500),
        "gc first soft-deletes finished runs older than this many days (0: off; tag mlops-kit.retention-days wins).",
    ),
    Setting(
        "MLOPS_KIT_METRICS_SCAN_SECONDS",
        "metrics_scan_seconds",
        "900",
        _bounded_int(10, 86400),
        "How often the metrics service walks the artifact store for its size (volume and nfs modes).",
    ),
    Setting(
        "MLOPS_KIT_MONITORING",
        "monitoring",
        "false",
        _choice("true", "false"),
        "Run the bundled Prometheus and Alertmanager with the kit's alert rules (docs/monitoring.md).",
    ),
    Setting(
        "MLOPS_KIT_PROMETHEUS_RETENTION",
        "prometheus_retention",
        "30d",
        _prometheus_duration,
        "How long the bundled Prometheus keeps samples (e.g. 30d, 12h).",
    ),
    Setting(
        "MLOPS_KIT_PROMETHEUS_RETENTION_SIZE",
        "prometheus_retention_size",
        "2GB",
        _pg_size,
        "Most disk the bundled Prometheus's samples may take (oldest dropped first; e.g. 2GB, 500MB).",
    ),
    Setting(
        "MLOPS_KIT_PROMETHEUS_SCRAPE_INTERVAL",
        "prometheus_scrape_interval",
        "30s",
        _prometheus_duration,
        "How often the bundled Prometheus scrapes the stack and evaluates the alert rules.",
    ),
    Setting(
        "MLOPS_KIT_ALERT_WEBHOOK",
        "alert_webhook",
        "none",
        _choice("none", "generic", "slack", "teams"),
        "Where alerts go: a webhook of this kind, its URL in the secret file alert_webhook_url "
        "(`mlops-kit monitoring webhook`); none: no webhook.",
    ),
    Setting(
        "MLOPS_KIT_ALERT_EMAIL_TO",
        "alert_email_to",
        "",
        _emails,
        "Email addresses alerts go to, comma-separated (empty: no email).",
    ),
    Setting("MLOPS_KIT_ALERT_EMAIL_FROM", "alert_email_from", "", _email, "Sender address of alert emails."),
    Setting(
        "MLOPS_KIT_ALERT_SMTP_HOST",
        "alert_smtp_host",
        "",
        _smtp_host,
        "SMTP server for alert emails, host:port (STARTTLS is required unless port 25).",
    ),
    Setting(
        "MLOPS_KIT_ALERT_SMTP_USER",
        "alert_smtp_user",
        "",
        _login,
        "SMTP login for alert emails (its password: the secret file alert_smtp_password); empty: no login.",
    ),
    Setting(
        "MLOPS_KIT_ALERT_GROUP_WAIT",
        "alert_group_wait",
        "30s",
        _prometheus_duration,
        "How long Alertmanager waits to group alerts before the first notification.",
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
SETTINGS_BY_ATTR: dict[str, Setting] = {s.attr: s for s in SETTINGS}


def settings_values(config: object, envs: Iterable[str]) -> dict[str, str]:
    """The `.env` lines of ``envs`` for ``config``'s current values (each setting maps itself back)."""
    return {env: SETTINGS_BY_ENV[env].to_env(getattr(config, SETTINGS_BY_ENV[env].attr)) for env in envs}
