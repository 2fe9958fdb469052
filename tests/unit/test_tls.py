"""The kit's CA and the proxy's certificate (no Docker)."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.tls import (
    CA_CERT,
    CA_KEY,
    certificate_names,
    ensure_certificates,
    public_ca_path,
    read_certificate,
    rotate_ca,
)

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost.corp.example", addresses=("10.1.2.3",))


def configured(kit_dir: Path, **choices: str):  # type: ignore[no-untyped-def]
    init_env_file(kit_dir, dict(choices), host=HOST)
    return load_config(kit_dir, environ={})


def test_certificate_names_every_name_clients_may_use(kit_dir: Path) -> None:
    config = configured(kit_dir, MLOPS_KIT_PUBLIC_HOST="ml.corp.example")
    names = certificate_names(config)
    assert names[:3] == ["localhost", "127.0.0.1", "::1"]
    assert {"ml.corp.example", "mlhost.corp.example", "mlhost", "10.1.2.3"} <= set(names)
    assert not any("*" in name for name in names)


def test_init_files_chain_to_the_ca_and_keys_are_private(kit_dir: Path) -> None:
    config = configured(kit_dir)
    done = ensure_certificates(config)
    assert done == ["created the kit's CA", "issued the proxy's certificate (new CA)"]
    directory = config.tls_dir
    for key in (directory / CA_KEY, config.proxy_key_path):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(public_ca_path(config).stat().st_mode) == 0o644
    # The chain verifies against the CA for a name on it, the way a client checks it.
    context = ssl.create_default_context(cafile=str(public_ca_path(config)))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(config.proxy_cert_path, config.proxy_key_path)
    facts = read_certificate(config.proxy_cert_path)
    assert "10.1.2.3" in facts.names and "mlhost.corp.example" in facts.names
    assert facts.not_after - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=390)
    assert context.verify_mode == ssl.CERT_REQUIRED
    ca = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


def test_second_run_keeps_a_current_certificate_and_reissues_for_a_new_name(kit_dir: Path) -> None:
    config = configured(kit_dir)
    ensure_certificates(config)
    before = config.proxy_cert_path.read_bytes()
    assert ensure_certificates(config) == []
    assert config.proxy_cert_path.read_bytes() == before
    renamed = load_config(kit_dir, environ={"MLOPS_KIT_PUBLIC_HOST": "new.corp.example"})
    assert ensure_certificates(renamed) == ["issued the proxy's certificate (new names: new.corp.example)"]
    assert "new.corp.example" in read_certificate(config.proxy_cert_path).names


def test_rotate_ca_replaces_the_ca_and_keeps_the_old_files(kit_dir: Path) -> None:
    config = configured(kit_dir)
    ensure_certificates(config)
    old_ca = public_ca_path(config).read_bytes()
    rotate_ca(config)
    assert public_ca_path(config).read_bytes() != old_ca
    assert (config.tls_dir / f"{CA_KEY}.old").is_file()


def test_operator_certificate_needs_both_files(kit_dir: Path, tmp_path: Path) -> None:
    cert = tmp_path / "ml.crt"
    cert.write_text("not used here")
    init_env_file(kit_dir, {"MLOPS_KIT_TLS_CERT_FILE": str(cert)}, host=HOST)
    with pytest.raises(ConfigError) as error:
        load_config(kit_dir, environ={})
    assert "MLOPS_KIT_TLS_KEY_FILE" in str(error.value)
    missing = load_config
    with pytest.raises(ConfigError) as error:
        missing(kit_dir, environ={"MLOPS_KIT_TLS_KEY_FILE": str(tmp_path / "nope.key")})
    assert "nope.key" in str(error.value) and "MLOPS_KIT_TLS_KEY_FILE" in str(error.value)


def _self_signed(path: Path, days: int) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml.corp.example")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.with_suffix(".key").write_bytes(key_pem)


@pytest.mark.parametrize(("days", "status"), [(-1, "fail"), (10, "warn"), (200, "ok")])
def test_doctor_reports_the_operators_certificate_expiry(kit_dir: Path, tmp_path: Path, days: int, status: str) -> None:
    from mlops_kit.workflows.preflight import check_certificate

    cert = tmp_path / "ml.crt"
    _self_signed(cert, days)
    init_env_file(
        kit_dir,
        {"MLOPS_KIT_TLS_CERT_FILE": str(cert), "MLOPS_KIT_TLS_KEY_FILE": str(cert.with_suffix(".key"))},
        host=HOST,
    )
    config = load_config(kit_dir, environ={})
    result = check_certificate(config)
    assert result.status == status, result


def test_compose_env_fingerprints_the_files_services_read_without_revealing_them(kit_dir: Path) -> None:
    """A changed secret or certificate must change the service's configuration, so `up` recreates it."""
    config = configured(kit_dir)
    ensure_certificates(config)
    before = config.compose_env()
    password = (kit_dir / "secrets" / "postgres_password").read_text()
    assert password not in before.values()
    assert ensure_certificates(config, force_renew=True)
    after = config.compose_env()
    assert after["MLOPS_KIT_PROXY_SECRETS_REV"] != before["MLOPS_KIT_PROXY_SECRETS_REV"]
    assert after["MLOPS_KIT_MLFLOW_SECRETS_REV"] == before["MLOPS_KIT_MLFLOW_SECRETS_REV"]
    (kit_dir / "secrets" / "mlflow_flask_secret_key").write_text("A-New-Csrf-Key-For-The-Test-1")
    assert config.compose_env()["MLOPS_KIT_MLFLOW_SECRETS_REV"] != after["MLOPS_KIT_MLFLOW_SECRETS_REV"]


def test_an_expired_kit_certificate_fails_doctor_but_not_the_up_that_renews_it(kit_dir: Path) -> None:
    from mlops_kit.workflows.preflight import check_certificate

    config = configured(kit_dir)
    config.tls_dir.mkdir(parents=True, exist_ok=True)
    _self_signed(config.tls_dir / "server.crt", -1)
    doctor = check_certificate(config)
    assert (doctor.status, doctor.fix) == ("fail", "mlops-kit tls renew")
    assert check_certificate(config, up_renews=True).status == "ok"
