"""The kit's certificate authority and the proxy's certificate.

By default the kit is its own CA: `init` creates a CA (key in the secrets
folder, mode 0600) and issues the proxy one certificate naming every host name
and address clients may use. One certificate with every name (rather than
Caddy's per-name internal certificates) also serves clients that connect by IP
address: they send no SNI, so a per-name certificate cannot be chosen for them.
Operators may bring their own certificate and key instead
(``MLOPS_KIT_TLS_CERT_FILE`` / ``MLOPS_KIT_TLS_KEY_FILE``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlops_kit.config.loader import KitConfig
from mlops_kit.config.secrets import write_private_file
from mlops_kit.errors import ConfigError

logger = logging.getLogger(__name__)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
#: Where clients' copy of the CA lives (not secret: readable by everyone).
PUBLIC_CA_PATH = Path("tls") / "mlops-kit-ca.crt"

CA_VALIDITY = dt.timedelta(days=3650)
#: Browsers refuse server certificates valid for more than 398 days.
SERVER_VALIDITY = dt.timedelta(days=397)
#: `up` reissues the server certificate when less than this is left.
RENEW_BEFORE = dt.timedelta(days=30)
ALWAYS_NAMED = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class CertificateFacts:
    """What `status`, `doctor` and `tls show` report about a certificate."""

    subject: str
    names: tuple[str, ...]
    not_after: dt.datetime
    issuer: str

    def expires_within(self, delta: dt.timedelta, now: dt.datetime | None = None) -> bool:
        return self.not_after - (now or _now()) < delta


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def uses_kit_ca(config: KitConfig) -> bool:
    """True unless the operator configured their own certificate."""
    return config.tls_cert_file is None


def certificate_names(config: KitConfig) -> list[str]:
    """Every name and address the proxy's certificate must carry."""
    names: list[str] = list(ALWAYS_NAMED)
    # A specific bind address is a name clients (and the CLI) use too.
    bind = "" if config.bind_address in ("0.0.0.0", "::") else config.bind_address
    candidates = [config.public_host, bind, *(_plain_name(p) for p in config.allowed_hosts)]
    for name in candidates:
        name = _canonical(name)
        if name and name not in names:
            names.append(name)
    return names


def _canonical(name: str) -> str:
    """IP addresses as the certificate will spell them (so a comparison later finds them)."""
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _plain_name(pattern: str) -> str:
    """The host of an allowed-hosts pattern, or '' for wildcards ('name:*' -> 'name')."""
    text = pattern.replace("[[]", "[")
    if text.endswith(":*"):
        text = text[:-2]
    if "*" in text or "?" in text:
        return ""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return text


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_cert(path: Path, cert: x509.Certificate, mode: int = 0o644) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(mode)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_private_file(path, pem.decode("ascii"))


def create_ca(directory: Path, project_name: str) -> Path:
    """A new CA (EC P-256) for this stack; the key is written 0600. Returns the CA certificate path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mlops-kit"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"mlops-kit CA ({project_name})"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(directory / CA_KEY, key)
    _write_cert(directory / CA_CERT, cert)
    logger.info("created the kit's CA in %s", directory)
    return directory / CA_CERT


def issue_server_certificate(config: KitConfig, names: Iterable[str]) -> Path:
    """Sign the proxy a certificate for ``names`` with the kit's CA; returns its path."""
    directory = config.tls_dir
    names = list(dict.fromkeys(names))
    try:
        ca_key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the kit's CA in {directory}: {exc.__class__.__name__}",
            hint="run `mlops-kit tls rotate-ca --yes` to create a new CA (clients must import it again)",
        ) from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{directory / CA_KEY} is not the kit's CA key", hint="run `mlops-kit tls rotate-ca --yes`")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(config.proxy_key_path, key)
    # The chain the proxy serves: the server certificate, then the CA.
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    config.proxy_cert_path.write_bytes(chain)
    config.proxy_cert_path.chmod(0o644)
    logger.info("issued the proxy's certificate for %s", ", ".join(names))
    return config.proxy_cert_path


def read_certificate(path: Path) -> CertificateFacts:
    """Subject, names and expiry of the first certificate in a PEM file."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the certificate {path}: {exc.__class__.__name__}",
            hint="point MLOPS_KIT_TLS_CERT_FILE at a PEM certificate, or run `mlops-kit tls renew`",
        ) from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
            str(v) for v in san.get_values_for_type(x509.IPAddress)
        )
    except x509.ExtensionNotFound:
        names = ()
    return CertificateFacts(
        subject=cert.subject.rfc4514_string(),
        names=names,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
    )


def ensure_certificates(config: KitConfig, *, force_renew: bool = False) -> list[str]:
    """Make sure the proxy has a current certificate; returns what was done (for the console).

    Kit CA mode: create the CA if missing; (re)issue the server certificate when
    missing, expiring within 30 days, missing a configured name, or on request.
    Either way, refresh the public CA copy.
    """
    done: list[str] = []
    if not uses_kit_ca(config):
        # load_config has already checked that both of the operator's files exist.
        publish_ca(config)
        return done
    directory = config.tls_dir
    has_key, has_cert = (directory / CA_KEY).is_file(), (directory / CA_CERT).is_file()
    if has_key != has_cert:
        present, missing = (CA_KEY, CA_CERT) if has_key else (CA_CERT, CA_KEY)
        raise ConfigError(
            f"{directory / present} exists but {directory / missing} does not",
            hint=f"put back {missing}, or start a new CA: mlops-kit tls rotate-ca --yes",
        )
    if not has_key:
        create_ca(directory, config.project_name)
        done.append("created the kit's CA")
    names = certificate_names(config)
    server = config.proxy_cert_path
    reason = "new CA" if done else "renewal requested" if force_renew else _renewal_reason(server, names)
    if reason:
        issue_server_certificate(config, names)
        done.append(f"issued the proxy's certificate ({reason})")
    publish_ca(config)
    return done


def _renewal_reason(server: Path, names: list[str]) -> str:
    if not server.is_file():
        return "none yet"
    facts = read_certificate(server)
    if facts.expires_within(RENEW_BEFORE):
        return f"expires {facts.not_after:%Y-%m-%d}"
    missing = [n for n in names if n not in facts.names]
    if missing:
        return "new names: " + ", ".join(missing)
    return ""


def ca_certificate_path(config: KitConfig) -> Path | None:
    """The CA file clients need to trust the proxy, or None (operator's certificate, public CA)."""
    if uses_kit_ca(config):
        return config.tls_dir / CA_CERT
    return config.tls_ca_file


def client_ca_path(config: KitConfig) -> Path | None:
    """The CA file clients trust (MLFLOW_TRACKING_SERVER_CERT_PATH), or None for a public or company CA."""
    return public_ca_path(config) if uses_kit_ca(config) else config.tls_ca_file


def public_ca_path(config: KitConfig) -> Path:
    """Clients' copy of the CA (readable by every local user: it is not secret)."""
    return config.project_dir / PUBLIC_CA_PATH


def publish_ca(config: KitConfig) -> Path | None:
    """Copy the CA certificate to its public place; returns that path (None if there is no CA file)."""
    source = ca_certificate_path(config)
    if source is None:
        return None
    target = public_ca_path(config)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    target.chmod(0o644)
    return target


def rotate_ca(config: KitConfig) -> Path:
    """Replace the kit's CA and reissue the proxy's certificate. Clients must import the new CA."""
    if not uses_kit_ca(config):
        raise ConfigError(
            "MLOPS_KIT_TLS_CERT_FILE is set: the proxy uses the operator's certificate, not the kit's CA",
            hint="renew that certificate with its issuer, then run `mlops-kit up`",
        )
    directory = config.tls_dir
    for old in (directory / CA_KEY, directory / CA_CERT, config.proxy_cert_path, config.proxy_key_path):
        if old.exists():
            old.replace(old.with_name(f"{old.name}.old"))
    create_ca(directory, config.project_name)
    issue_server_certificate(config, certificate_names(config))
    publish_ca(config)
    return public_ca_path(config)
