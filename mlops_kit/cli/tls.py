"""tls: the proxy's certificate and the CA clients trust."""

from __future__ import annotations

from pathlib import Path

import click

from mlops_kit import console as ui
from mlops_kit.cli.app import AppContext, confirm, pass_app, print_json
from mlops_kit.cli.options import json_option, yes_option
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.lifecycle import restart_proxy
from mlops_kit.workflows.tls import client_ca_path, ensure_certificates, read_certificate, rotate_ca, uses_kit_ca


@click.group()
def tls() -> None:
    """The proxy's certificate and the CA clients trust."""


@tls.command("export-ca")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the CA certificate here (default: stdout).")
@pass_app
def tls_export_ca(app: AppContext, out: str | None) -> None:
    """Print (or write) the CA certificate clients need: MLFLOW_TRACKING_SERVER_CERT_PATH points at it."""
    config = app.config()
    ensure_certificates(config)
    source = client_ca_path(config)
    if source is None:
        raise ConfigError(
            "the proxy uses the operator's certificate and MLOPS_KIT_TLS_CA_FILE is empty",
            hint="clients trust it through their system CAs; or set MLOPS_KIT_TLS_CA_FILE",
        )
    pem = source.read_text(encoding="ascii")
    if out:
        Path(out).write_text(pem, encoding="ascii")
        ui.success(f"CA certificate written to {out}")
    else:
        click.echo(pem, nl=False)


@tls.command("show")
@json_option
@pass_app
def tls_show(app: AppContext, as_json: bool) -> None:
    """Show the proxy's certificate: names, issuer and expiry."""
    config = app.config()
    path = config.proxy_cert_path
    facts = read_certificate(path)
    data = {
        "file": str(path),
        "subject": facts.subject,
        "issuer": facts.issuer,
        "names": list(facts.names),
        "not_after": facts.not_after.isoformat(),
        "kit_ca": uses_kit_ca(config),
    }
    if as_json:
        print_json(data)
        return
    for key, value in data.items():
        ui.out.print(f"{key:>10}: {', '.join(value) if isinstance(value, list) else value}")


@tls.command("renew")
@pass_app
def tls_renew(app: AppContext) -> None:
    """Issue the proxy a new certificate from the kit's CA now (clients keep working); restart with `up`."""
    config = app.config()
    if not uses_kit_ca(config):
        raise ConfigError(
            "MLOPS_KIT_TLS_CERT_FILE is set: the operator's certificate is renewed by its issuer",
            hint="replace the files, then run mlops-kit up",
        )
    for done in ensure_certificates(config, force_renew=True):
        ui.success(done)
    if restart_proxy(app.project(config)):
        ui.success("the proxy serves the new certificate")


@tls.command("rotate-ca")
@yes_option
@pass_app
def tls_rotate_ca(app: AppContext, yes: bool) -> None:
    """Replace the kit's CA (e.g. after its key leaked). Every client must import the new CA."""
    config = app.config()
    confirm("Replace the CA? Clients trusting the old one fail until they import the new one.", yes=yes)
    path = rotate_ca(config)
    ui.success(f"new CA in {path}; the old files are kept as *.old in the secrets folder")
    if restart_proxy(app.project(config)):
        ui.success("the proxy serves a certificate from the new CA")
    ui.info("hand out the new CA: mlops-kit tls export-ca")
