"""`.env`: written by init from `.env.example` (sized for this host), updated in place, brought up to date."""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mlops_kit import __version__
from mlops_kit.config.loader import ENV_FILE_NAME, KitConfig, compose_file_value, read_env_file
from mlops_kit.config.secrets import check_s3_key_text, ensure_secret_files, write_private_file, write_s3_keys
from mlops_kit.config.settings import SETTINGS_BY_ATTR, SETTINGS_BY_ENV
from mlops_kit.errors import ConfigError
from mlops_kit.stores import store_named

logger = logging.getLogger(__name__)

EXAMPLE_FILE_NAME = ".env.example"
_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")


@dataclass(frozen=True)
class HostFacts:
    """What init sizes and names the stack by."""

    memory_bytes: int
    cpus: int
    hostname: str
    fqdn: str
    addresses: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def detect(cls) -> HostFacts:
        hostname = socket.gethostname()
        fqdn = socket.getfqdn() or hostname
        return cls(
            memory_bytes=_memory_bytes(),
            cpus=os.cpu_count() or 1,
            hostname=hostname,
            fqdn=fqdn,
            addresses=_host_addresses(hostname),
        )


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


def _host_addresses(hostname: str) -> tuple[str, ...]:
    found: list[str] = []
    try:
        for info in socket.getaddrinfo(hostname, None, type=socket.SOCK_STREAM):
            address = str(info[4][0])
            if not address.startswith("127.") and address != "::1" and address not in found:
                found.append(address)
    except OSError:
        pass
    return tuple(found)


def sized_settings(host: HostFacts) -> dict[str, str]:
    """PostgreSQL and MLflow sizing for this host (PostgreSQL shares it with MLflow)."""
    mem_mb = host.memory_bytes // 2**20

    def clamp(value: int, low: int, high: int) -> int:
        return max(low, min(high, value))

    # PostgreSQL's settings follow its container's memory limit (a quarter of the host):
    # its page cache is charged to that limit too, so effective_cache_size must fit in it.
    postgres_mb = clamp(mem_mb // 4, 512, 32768)
    return {
        "POSTGRES_SHARED_BUFFERS": f"{clamp(postgres_mb // 4, 128, 8192)}MB",
        "POSTGRES_EFFECTIVE_CACHE_SIZE": f"{clamp(postgres_mb * 3 // 4, 384, 24576)}MB",
        "POSTGRES_MAINTENANCE_WORK_MEM": f"{clamp(postgres_mb // 16, 64, 2048)}MB",
        "POSTGRES_WORK_MEM": "16MB" if postgres_mb >= 4096 else "8MB",
        "MLOPS_KIT_MLFLOW_WORKERS": str(clamp(host.cpus, 1, 4)),
        # Docker refuses a CPU limit above the host's count.
        "MLOPS_KIT_MLFLOW_CPUS": str(host.cpus),
        "MLOPS_KIT_POSTGRES_CPUS": str(host.cpus),
        "MLOPS_KIT_PROXY_CPUS": str(min(1, host.cpus)),
        "MLOPS_KIT_BACKUP_CPUS": str(min(1, host.cpus)),
        # MLflow's memory limit leaves room for PostgreSQL and the host.
        "MLOPS_KIT_MLFLOW_MEMORY": f"{clamp(mem_mb // 2, 3072, 65536)}m",
        "MLOPS_KIT_POSTGRES_MEMORY": f"{postgres_mb}m",
    }


def host_names(host: HostFacts) -> list[str]:
    """Names and addresses by which clients may reach this host."""
    names: list[str] = []
    for name in (host.fqdn, host.hostname, *host.addresses):
        if name and name not in names and name != "localhost":
            names.append(name)
    return names


def allowed_host_patterns(names: list[str]) -> str:
    """Host-header patterns MLflow must accept: each name with and without a port."""
    patterns: list[str] = []
    for name in names:
        shown = f"[{name}]" if ":" in name else name
        escaped = shown.replace("[", "[[]", 1)  # fnmatch: '[' opens a character class
        patterns += [shown, f"{escaped}:*"]
    return ",".join(patterns)


def initial_values(choices: dict[str, str | None], host: HostFacts) -> dict[str, str]:
    """The values init writes: host sizing and host names, then the user's choices."""
    names = host_names(host)
    values = sized_settings(host)
    values["MLOPS_KIT_PUBLIC_HOST"] = names[0] if names else ""
    values["MLOPS_KIT_ALLOWED_HOSTS"] = allowed_host_patterns(names)
    values.update({k: v for k, v in choices.items() if v is not None})
    public = choices.get("MLOPS_KIT_PUBLIC_HOST")
    if public and public not in names:
        values["MLOPS_KIT_ALLOWED_HOSTS"] = allowed_host_patterns([public, *names])
    values.update(artifact_store_values(values.get("MLOPS_KIT_ARTIFACT_STORE", "volume"), values))
    return values


def init_choices(options: Mapping[str, str | None], environ: Mapping[str, str]) -> dict[str, str | None]:
    """What init writes: its options (by setting attr), else the settings given in the environment.

    Validated before anything is written, so a bad value leaves no file behind; the
    error names the flag or the variable.
    """
    choices: dict[str, str | None] = {}
    for env, from_environment in environ.items():
        if env in SETTINGS_BY_ENV:
            SETTINGS_BY_ENV[env].check(from_environment, f"{env} (from the environment)", f"fix or unset {env}")
            choices[env] = from_environment
    for attr, value in options.items():
        if value is not None:
            setting = SETTINGS_BY_ATTR[attr]
            setting.check(value, setting.option, f"fix {setting.option} ({setting.env})")
            choices[setting.env] = value
    return choices


def artifact_store_values(store: str, values: dict[str, str]) -> dict[str, str]:
    """What a mode fixes in `.env`: the overlays plain Compose needs, and the mode's own values."""
    fixed: dict[str, str] = {}
    mode = store_named(store)
    # An empty COMPOSE_FILE breaks plain Compose: volume mode leaves the line commented out.
    webhooks = bool(values.get("MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS", "").strip())
    monitoring = values.get("MLOPS_KIT_MONITORING", "false") == "true"
    if compose_files := compose_file_value(mode, values.get("MLOPS_KIT_S3_NETWORK", ""), webhooks, monitoring):
        fixed["COMPOSE_FILE"] = compose_files
    fixed.update(mode.fixed_env())
    return fixed


def render_env(example: str, values: dict[str, str], added_by: str = "mlops-kit init") -> str:
    """Fill ``values`` into the text of `.env.example`, keeping its comments and order."""
    source = example.splitlines()
    # A real assignment wins over a commented-out one; every real one is updated.
    assigned = {m.group(1) for line in source if (m := _ASSIGNMENT.match(line)) and not line.startswith("#")}
    remaining = dict(values)
    done: set[str] = set()
    lines: list[str] = []
    for line in source:
        match = _ASSIGNMENT.match(line)
        key = match.group(1) if match else ""
        commented = line.startswith("#")
        if key in values and (not commented or (key not in assigned and key not in done)):
            lines.append(f"{key}={values[key]}")
            remaining.pop(key, None)
            done.add(key)
        else:
            lines.append(line)
    if remaining:
        lines.append("")
        lines.append(f"# Added by {added_by}")
        lines += [f"{key}={value}" for key, value in remaining.items()]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class InitResult:
    env_file: Path
    backup: Path | None
    generated_secrets: tuple[Path, ...]
    kept_secrets: tuple[Path, ...]


def init_env_file(
    project_dir: Path,
    choices: dict[str, str | None],
    *,
    env_file: Path | None = None,
    force: bool = False,
    host: HostFacts | None = None,
    s3_keys: tuple[str, str] | None = None,
) -> InitResult:
    """Create `.env` for this host and any missing secret files.

    An existing `.env` is only replaced with ``force``; the old one is kept as
    `.env.bak-<time>`. Existing secret files are always kept, except the S3 keys
    when ``s3_keys`` (key id, secret) are given.
    """
    if s3_keys is not None:
        check_s3_key_text(s3_keys[0], "the S3 access key id")
        check_s3_key_text(s3_keys[1], "the S3 secret key")
    env_file = env_file or project_dir / ENV_FILE_NAME
    example_path = project_dir / EXAMPLE_FILE_NAME
    if not example_path.is_file():
        raise ConfigError(f"missing {example_path}", hint="restore it from the mlops-kit checkout")
    backup: Path | None = None
    if env_file.exists():
        if not force:
            raise ConfigError(
                f"{env_file} already exists",
                hint="keep it, or pass --force to replace it (the old file is kept as a backup)",
            )
        backup = env_file.with_name(f"{env_file.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(env_file, backup)
        os.chmod(backup, 0o600)
    values = initial_values(choices, host or HostFacts.detect())
    env_file.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(env_file, render_env(example_path.read_text(encoding="utf-8"), values))
    logger.info("wrote %s (mode 0600)", env_file)
    secrets_dir = (
        choices.get("MLOPS_KIT_SECRETS_DIR") or read_env_file(env_file).get("MLOPS_KIT_SECRETS_DIR") or "secrets"
    )
    secrets_path = (project_dir / secrets_dir).resolve()
    generated, kept = ensure_secret_files(secrets_path)
    if s3_keys is not None:
        generated += write_s3_keys(secrets_path, *s3_keys)
    else:
        generated += store_named(values.get("MLOPS_KIT_ARTIFACT_STORE", "volume")).prepare(secrets_path)
    return InitResult(env_file=env_file, backup=backup, generated_secrets=generated, kept_secrets=kept)


def update_env_file(env_file: Path, values: dict[str, str], added_by: str) -> None:
    """Set ``values`` in an existing `.env`, keeping every other line; atomic, mode 0600."""
    text = env_file.read_text(encoding="utf-8") if env_file.exists() else ""
    write_private_file(env_file, render_env(text, values, added_by))


#: Image tags earlier kit versions wrote into `.env`. Their images do not fit this
#: kit's compose.yaml, so `up` moves such a `.env` to this kit's tags.
OLD_KIT_IMAGES: dict[str, tuple[str, ...]] = {
    "MLOPS_KIT_MLFLOW_IMAGE": tuple(f"mlops-kit/mlflow:3.17.2-kit0.{n}.0" for n in range(1, 11)),
    "MLOPS_KIT_POSTGRES_IMAGE": tuple(f"mlops-kit/postgres:17-kit0.{n}.0" for n in range(1, 11)),
    "MLOPS_KIT_PROXY_IMAGE": tuple(f"mlops-kit/proxy:caddy2.6-kit0.{n}.0" for n in range(2, 11)),
    "MLOPS_KIT_BACKUP_IMAGE": tuple(f"mlops-kit/backup:kit0.{n}.0" for n in range(1, 11)),
    "MLOPS_KIT_MINIO_IMAGE": tuple(f"mlops-kit/minio:RELEASE.2025-10-15T17-29-55Z-kit0.{n}.0" for n in range(4, 11)),
    "MLOPS_KIT_EGRESS_IMAGE": tuple(f"mlops-kit/egress:squid-kit0.{n}.0" for n in range(5, 11)),
    "MLOPS_KIT_METRICS_IMAGE": ("mlops-kit/metrics:kit0.9.0", "mlops-kit/metrics:kit0.10.0"),
    "MLOPS_KIT_PROMETHEUS_IMAGE": ("mlops-kit/prometheus:2.53-kit0.9.0", "mlops-kit/prometheus:2.53-kit0.10.0"),
    "MLOPS_KIT_ALERTMANAGER_IMAGE": ("mlops-kit/alertmanager:0.28-kit0.9.0", "mlops-kit/alertmanager:0.28-kit0.10.0"),
}
#: Host-sized settings a newer kit added: an older `.env` gets them sized for this host
#: (a CPU limit above the host's count would stop Docker from creating the container).
NEW_SIZED_SETTINGS = (
    "MLOPS_KIT_MLFLOW_CPUS",
    "MLOPS_KIT_POSTGRES_CPUS",
    "MLOPS_KIT_PROXY_CPUS",
    "MLOPS_KIT_BACKUP_CPUS",
    "MLOPS_KIT_MLFLOW_MEMORY",
    "MLOPS_KIT_POSTGRES_MEMORY",
)


def sync_compose_file(config: KitConfig) -> str | None:
    """Keep `.env`'s COMPOSE_FILE (for plain `docker compose`) naming the overlays the settings need.

    An operator who sets MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS in `.env` after init needs the
    webhooks overlay too. Returns the new value when it changed.
    """
    if not config.env_file.is_file():
        return None
    wanted = config.compose_file_setting
    current = read_env_file(config.env_file).get("COMPOSE_FILE", "")
    if current == wanted or (not wanted and current in ("", "compose.yaml")):
        return None
    update_env_file(config.env_file, {"COMPOSE_FILE": wanted or "compose.yaml"}, added_by="mlops-kit up")
    return wanted or "compose.yaml"


def env_file_updates(env_file: Path, host: HostFacts | None = None) -> dict[str, str]:
    """What :func:`upgrade_env_file` would change in ``env_file`` (nothing is written)."""
    if not env_file.is_file():
        return {}
    current = read_env_file(env_file)
    changes: dict[str, str] = {}
    for key, old_tags in OLD_KIT_IMAGES.items():
        if current.get(key) in old_tags:
            changes[key] = SETTINGS_BY_ENV[key].default
    missing = [key for key in NEW_SIZED_SETTINGS if key not in current]
    if missing:
        sized = sized_settings(host or HostFacts.detect())
        changes.update({key: sized[key] for key in missing})
    return changes


def upgrade_env_file(env_file: Path, host: HostFacts | None = None) -> dict[str, str]:
    """Bring a `.env` written by an older kit up to this one; returns the values changed.

    Only values an older kit wrote by itself change: image tags it pinned, and
    host-sized settings it did not know. Anything the operator chose stays.
    """
    changes = env_file_updates(env_file, host)
    if changes:
        update_env_file(env_file, changes, added_by=f"mlops-kit {__version__} (upgrade)")
        logger.info("updated %s for this kit version: %s", env_file, ", ".join(sorted(changes)))
    return changes
