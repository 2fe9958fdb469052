"""monitoring: the scrape job for your own Prometheus, alert receivers, firing alerts, the dashboard."""

from __future__ import annotations

import sys
import time

import click
from rich.markup import escape

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, pass_app, print_json
from mlops_kit.cli.options import json_option
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.monitoring import (
    Alert,
    dashboard_json,
    firing_alerts,
    scrape_config,
    set_smtp_password,
    set_webhook,
)


@click.group()
def monitoring() -> None:
    """Metrics and alerts: scrape job, alert receivers, firing alerts, Grafana dashboard."""


@monitoring.command("scrape-config")
@click.option("--target", metavar="HOST:PORT", help="Address your Prometheus reaches the stack at (default: its URL).")
@click.option(
    "--password-file",
    metavar="PATH",
    help="Where your Prometheus reads the `metrics` password (default: this stack's secrets/metrics_password).",
)
@click.option("--ca-file", metavar="PATH", help="Where your Prometheus reads the kit's CA (default: this stack's).")
@click.option("--job-name", default="mlops-kit", show_default=True, help="The scrape job's name.")
@pass_app
def monitoring_scrape_config(
    app: AppContext, target: str | None, password_file: str | None, ca_file: str | None, job_name: str
) -> None:
    """Print a Prometheus scrape_configs entry for this stack's /metrics (https, basic auth, the kit's CA)."""
    click.echo(
        scrape_config(app.config(), target=target, password_file=password_file, ca_file=ca_file, job_name=job_name),
        nl=False,
    )


@monitoring.command("dashboard")
@pass_app
def monitoring_dashboard(app: AppContext) -> None:
    """Print the kit's Grafana dashboard (JSON to import; its data source: your Prometheus)."""
    click.echo(dashboard_json(app.config()), nl=False)


@monitoring.command("webhook")
@click.argument("kind", type=click.Choice(["generic", "slack", "teams"]))
@pass_app
def monitoring_webhook(app: AppContext, kind: str) -> None:
    """Send alerts to a webhook: reads its URL from stdin (it is a credential: never an argument).

    generic: Alertmanager's JSON; slack: a Slack (or Mattermost, Rocket.Chat) incoming
    webhook; teams: a Microsoft Teams workflow webhook. Takes effect at the next `up`.
    """
    url = _read_line("the webhook URL")
    path = set_webhook(app.config(), kind, url)
    ui.success(f"webhook URL kept in {path} (mode 0600); MLOPS_KIT_ALERT_WEBHOOK={kind} in .env")
    ui.info("apply it: mlops-kit up")


@monitoring.command("smtp-password")
@pass_app
def monitoring_smtp_password(app: AppContext) -> None:
    """Set the SMTP login's password for alert emails: reads it from stdin."""
    path = set_smtp_password(app.config(), _read_line("the SMTP password"))
    ui.success(f"SMTP password kept in {path} (mode 0600)")
    ui.info("apply it: mlops-kit up")


@monitoring.command("alerts")
@json_option
@pass_app
def monitoring_alerts(app: AppContext, as_json: bool) -> None:
    """Show the alerts firing now (bundled monitoring only)."""
    alerts = firing_alerts(app.project())
    if as_json:
        print_json({"alerts": [a.to_dict() for a in alerts]})
        return
    for line in alert_lines(alerts, time.time()):
        ui.out.print(line)


def alert_lines(alerts: list[Alert], now: float) -> list[str]:
    """One line per alert (markup-safe), or one saying none fires."""
    if not alerts:
        return ["[ok]alerts: none firing[/]"]
    lines = [f"[fail]alerts: {len(alerts)} firing[/]"]
    for alert in alerts:
        style = "fail" if alert.severity == "critical" else "warn"
        where = ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("job", "instance"))
        lines.append(
            f"  [{style}]{escape(alert.name)}[/] ({escape(alert.severity or '-')}, "
            f"{ui.human_age(now - alert.since)}){' ' + escape(where) if where else ''}: {escape(alert.summary)}"
        )
    return lines


def _read_line(what: str) -> str:
    if sys.stdin.isatty():
        value = click.prompt(what.capitalize(), hide_input=True, default="", show_default=False)
    else:
        value = sys.stdin.readline()
    value = value.strip()
    if not value:
        raise ConfigError(f"no value given for {what}", hint="pipe it on stdin (or type it at the prompt)")
    return value
