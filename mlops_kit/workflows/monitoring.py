"""Monitoring: the scrape job for an operator's Prometheus, the alert receivers, firing alerts.

The stack always serves https://<host>:<port>/metrics for the `metrics` login
(docs/monitoring.md). With MLOPS_KIT_MONITORING=true it also runs the bundled Prometheus
and Alertmanager (docker/compose/monitoring.yaml); their receivers' secrets are files
under MLOPS_KIT_SECRETS_DIR, written here from stdin, never taken as arguments.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mlops_kit.config.envfile import update_env_file
from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import write_private_file
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import CommandError, ConfigError, StackError
from mlops_kit.masking import register_secret
from mlops_kit.services.alertmanager import ALERTMANAGER, LOCAL_URL
from mlops_kit.services.metrics import SCRAPE_PASSWORD_FILE, SCRAPE_USER
from mlops_kit.services.prometheus import RULES_DIR, RULES_FILE
from mlops_kit.workflows.tls import client_ca_path

logger = logging.getLogger(__name__)

WEBHOOK_URL_FILE = "alert_webhook_url"
SMTP_PASSWORD_FILE = "alert_smtp_password"
DASHBOARD_FILE = Path("docker/prometheus/grafana-dashboard.json")


# ---- an operator's own Prometheus ------------------------------------------------------------


def scrape_config(
    config: KitConfig,
    *,
    target: str | None = None,
    password_file: str | None = None,
    ca_file: str | None = None,
    job_name: str = "mlops-kit",
) -> str:
    """A Prometheus ``scrape_configs`` entry for this stack's /metrics (YAML text).

    ``password_file`` and ``ca_file`` are where that Prometheus will find the scrape
    password and the kit's CA (default: this stack's own files, for a Prometheus on this host).
    """
    host = urlsplit(config.tracking_uri)
    address = target or host.netloc
    password = password_file or str(config.secrets_path / SCRAPE_PASSWORD_FILE)
    ca_path = client_ca_path(config)
    ca = ca_file or (str(ca_path) if ca_path else "")
    quoted = json.dumps  # a JSON string is a YAML string: paths with any character stay one value
    lines = [
        f"# mlops-kit stack {config.project_name}: add under scrape_configs in prometheus.yml.",
        f"# {password} holds the `{SCRAPE_USER}` login's password (copy it with mode 0600 where",
        "# Prometheus runs); the alert rules to load with it (they expect this job's name, mlops-kit): "
        f"{(config.project_dir / RULES_DIR / RULES_FILE).as_posix()}",
        f"- job_name: {quoted(job_name)}",
        "  scheme: https",
        "  metrics_path: /metrics",
        "  scrape_interval: 30s",
        "  basic_auth:",
        f"    username: {SCRAPE_USER}",
        f"    password_file: {quoted(password)}",
    ]
    if ca:
        lines += ["  tls_config:", f"    ca_file: {quoted(ca)}"]
    lines += [
        "  static_configs:",
        f"    - targets: [{quoted(address)}]",
        f"      labels: {{stack: {quoted(config.project_name)}, instance: {quoted(config.project_name)}}}",
    ]
    return "\n".join(lines) + "\n"


def dashboard_json(config: KitConfig) -> str:
    """The Grafana dashboard (importable JSON) shipped with the kit."""
    path = config.project_dir / DASHBOARD_FILE
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="run from the kit's checkout") from None


# ---- receivers ------------------------------------------------------------------------------------


def set_webhook(config: KitConfig, kind: str, url: str) -> Path:
    """Keep ``url`` as the webhook's secret file and select ``kind`` in `.env`; returns the file."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ConfigError(
            "the webhook URL must be an http(s) URL with a host",
            hint="paste the incoming-webhook URL your chat tool gave you",
        )
    register_secret(url)
    path = config.secrets_path / WEBHOOK_URL_FILE
    config.secrets_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(path, url + "\n")
    update_env_file(config.env_file, {"MLOPS_KIT_ALERT_WEBHOOK": kind}, added_by="mlops-kit monitoring webhook")
    return path


def set_smtp_password(config: KitConfig, password: str) -> Path:
    """Keep the SMTP login's password as its secret file; returns the file."""
    if not password or "\n" in password:
        raise ConfigError("the SMTP password is empty or has more than one line", hint="pipe exactly one line")
    register_secret(password)
    path = config.secrets_path / SMTP_PASSWORD_FILE
    config.secrets_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_file(path, password + "\n")
    return path


# ---- firing alerts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One alert Alertmanager holds (firing, or silenced/inhibited)."""

    name: str
    severity: str
    summary: str
    state: str
    since: float
    labels: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "severity": self.severity,
            "summary": self.summary,
            "state": self.state,
            "since": self.since,
            "labels": self.labels,
        }


def firing_alerts(project: ComposeProject) -> list[Alert]:
    """The alerts Alertmanager holds now (StackError when monitoring is off or it does not answer)."""
    if not project.config.monitoring_on:
        raise StackError("monitoring is off", hint="turn it on: mlops-kit init --force --monitoring && mlops-kit up")
    try:
        result = project.run(
            [
                "exec",
                "-T",
                ALERTMANAGER.name,
                "amtool",
                "alert",
                "query",
                f"--alertmanager.url={LOCAL_URL}",
                # Its API's login, written by its entrypoint (the password stays in a file).
                "--http.config.file=/tmp/amtool.yml",
                "--output=json",
            ]
        )
    except CommandError as exc:
        raise StackError(
            "Alertmanager did not answer", hint=f"see: mlops-kit status, mlops-kit logs {ALERTMANAGER.name}"
        ) from exc
    try:
        return parse_alerts(result.stdout)
    except (ValueError, TypeError, AttributeError) as exc:
        raise StackError(
            "Alertmanager's answer could not be read", hint=f"see: mlops-kit logs {ALERTMANAGER.name}"
        ) from exc


def parse_alerts(text: str) -> list[Alert]:
    """amtool's JSON answer as alerts, oldest first."""
    alerts = []
    for item in json.loads(text or "[]"):
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        annotations = item.get("annotations") or {}
        alerts.append(
            Alert(
                name=labels.get("alertname", "?"),
                severity=labels.get("severity", ""),
                summary=str(annotations.get("summary", "")),
                state=str((item.get("status") or {}).get("state", "active")),
                since=_timestamp(str(item.get("startsAt", ""))),
                labels={k: v for k, v in labels.items() if k not in ("alertname", "severity")},
            )
        )
    return sorted(alerts, key=lambda a: a.since)


def _timestamp(text: str) -> float:
    # Alertmanager writes nanoseconds; Python before 3.11 parses at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(trimmed).timestamp()
    except ValueError:
        return time.time()
