"""Model-registry webhooks leave the stack to the allowed hosts only, through the egress proxy.

A remote host (a network namespace of the test's own, on another network) runs two
HTTPS receivers: one on the allowed port, one on another. This host runs a third.
The stack allows exactly the first (MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS) and trusts the
receivers' test CA (MLOPS_KIT_WEBHOOK_CA_FILE). Creating a model version delivers a
signed payload to the allowed receiver, whose HMAC verifies with the webhook's
secret; the others never hear anything, and MLflow itself still has no network.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_kit.workflows.tls import CA_KEY, create_ca
from tests.harness import RemoteHost, Stack, running_stack, tcp_listeners

pytestmark = pytest.mark.usefixtures("fail_fast")

RECEIVER = Path(__file__).with_name("webhook_receiver.py")
ALLOWED_PORT, OTHER_PORT = 9443, 9444
SECRET = "webhook-hmac-secret-for-the-test"


@dataclass
class Receivers:
    allowed: Path  # what the allowed receiver recorded (remote host, allowed port)
    other_port: Path  # same remote host, a port not on the list
    this_host: Path  # a receiver on this host's end of the link: not on the list either
    ca_file: Path


def issue(ca_dir: Path, address: str, target: Path) -> tuple[Path, Path]:
    """A server certificate for ``address`` signed by the test CA in ``ca_dir``: (cert, key)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)  # type: ignore[arg-type]
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = target / f"{address}.crt", target / f"{address}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def wait_listening(address: str, port: int, remote: RemoteHost | None) -> None:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
    for _ in range(50):
        argv = [sys.executable, "-c", probe]
        done = remote.run(argv, capture_output=True) if remote else subprocess.run(argv, capture_output=True)
        if done.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the test receiver on {address}:{port} did not start")


@pytest.fixture(scope="module")
def receivers(remote_host: RemoteHost) -> Iterator[Receivers]:
    work = Path(tempfile.mkdtemp(prefix="mlkt-hooks-"))
    ca_dir = work / "ca"
    ca_file = create_ca(ca_dir, "webhook receivers (test)")
    remote_cert, remote_key = issue(ca_dir, remote_host.address, work)
    local_cert, local_key = issue(ca_dir, remote_host.host_address, work)
    records = Receivers(work / "allowed.jsonl", work / "other-port.jsonl", work / "this-host.jsonl", ca_file)
    for path in (records.allowed, records.other_port, records.this_host):
        path.touch()
    processes = [
        remote_host.start([sys.executable, str(RECEIVER), str(port), str(remote_cert), str(remote_key), str(out)])
        for port, out in ((ALLOWED_PORT, records.allowed), (OTHER_PORT, records.other_port))
    ]
    processes.append(
        subprocess.Popen(
            [sys.executable, str(RECEIVER), str(ALLOWED_PORT), str(local_cert), str(local_key), str(records.this_host)]
        )
    )
    try:
        wait_listening(remote_host.address, ALLOWED_PORT, remote_host)
        wait_listening(remote_host.address, OTHER_PORT, remote_host)
        wait_listening(remote_host.host_address, ALLOWED_PORT, None)
        yield records
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def hooked(
    kit_images: None, receivers: Receivers, remote_host: RemoteHost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    allowed = {
        "MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS": f"{remote_host.address}:{ALLOWED_PORT}",
        "MLOPS_KIT_WEBHOOK_CA_FILE": str(receivers.ca_file),
    }
    with running_stack(tmp_path_factory.mktemp("webhooks"), "mlkt-hook", env=allowed) as stack:
        yield stack


def records(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_records(path: Path, count: int, seconds: float = 60) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(found := records(path)) >= count:
            return found
        time.sleep(0.5)
    return records(path)


def test_a_model_version_event_reaches_the_allowed_host_signed(
    hooked: Stack, receivers: Receivers, remote_host: RemoteHost
) -> None:
    from mlflow.tracking import MlflowClient

    with hooked.as_user("admin") as variables, tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(variables["MLFLOW_TRACKING_URI"])
        hooks = {
            "allowed": f"https://{remote_host.address}:{ALLOWED_PORT}/hooks/registry",
            "other-port": f"https://{remote_host.address}:{OTHER_PORT}/hooks/registry",
            "this-host": f"https://{remote_host.host_address}:{ALLOWED_PORT}/hooks/registry",
        }
        for name, url in hooks.items():
            client.create_webhook(name=name, url=url, events=["model_version.created"], secret=SECRET)
        experiment = client.create_experiment("webhook-source")
        run = client.create_run(experiment)
        model_file = Path(tmp, "weights.txt")
        model_file.write_text("weights")
        client.log_artifact(run.info.run_id, str(model_file), artifact_path="model")
        client.create_registered_model("hooked-model")
        version = client.create_model_version("hooked-model", f"runs:/{run.info.run_id}/model", run.info.run_id)

    delivered = wait_for_records(receivers.allowed, 1)
    assert len(delivered) == 1, delivered
    request = delivered[0]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    payload = json.loads(request["body"])
    assert request["path"] == "/hooks/registry"
    assert (payload["entity"], payload["action"]) == ("model_version", "created")
    assert payload["data"]["name"] == "hooked-model" and str(payload["data"]["version"]) == str(version.version)
    # The signature verifies with the webhook's secret, as a receiver checks it.
    signed = f"{headers['x-mlflow-delivery-id']}.{headers['x-mlflow-timestamp']}.{request['body']}"
    expected = base64.b64encode(hmac.new(SECRET.encode(), signed.encode(), hashlib.sha256).digest()).decode()
    assert headers["x-mlflow-signature"] == f"v1,{expected}"

    # Nothing reached the hosts that are not on the list, and the proxy says why.
    time.sleep(5)  # the refused deliveries had as long as the allowed one, and more
    assert records(receivers.other_port) == []
    assert records(receivers.this_host) == []
    egress_log = hooked.logs("egress")
    assert f"{remote_host.address}:{OTHER_PORT}" in egress_log and "TCP_DENIED/403" in egress_log
    assert f"{remote_host.host_address}:{ALLOWED_PORT}" in egress_log


def test_the_rest_of_the_stack_still_has_no_egress(hooked: Stack, remote_host: RemoteHost) -> None:
    mlflow = hooked.container("mlflow")
    assert mlflow["HostConfig"]["NetworkMode"] == "none"
    # Only the loopback listener of its bridge to the egress proxy.
    assert [line.split()[1] for line in tcp_listeners(mlflow["Id"])] == ["0100007F:0C38"]  # 127.0.0.1:3128
    assert hooked.container("postgres")["HostConfig"]["NetworkMode"] == "none"
    # Straight from MLflow's container to the allowed receiver: no route at all.
    direct = subprocess.run(
        [
            "docker",
            "exec",
            mlflow["Id"],
            "python3",
            "-c",
            f"import socket; socket.create_connection(({remote_host.address!r}, {ALLOWED_PORT}), timeout=3)",
        ],
        capture_output=True,
        text=True,
    )
    assert direct.returncode != 0 and "unreachable" in direct.stderr.lower()
    # Through its proxy, only the allowed host and port; anything else is refused there.
    probe = (
        "import urllib.request, sys\n"
        "try:\n"
        "    urllib.request.urlopen(sys.argv[1], timeout=10)\n"
        "except urllib.error.HTTPError as e: print(e.code)\n"
        "except Exception as e: print(type(e).__name__, e)\n"
    )
    for url in (f"http://{remote_host.host_address}:{ALLOWED_PORT}/", "http://example.org/"):
        refused = subprocess.run(
            ["docker", "exec", "-e", "http_proxy=http://127.0.0.1:3128", mlflow["Id"], "python3", "-c", probe, url],
            capture_output=True,
            text=True,
        )
        assert "403" in refused.stdout, (url, refused.stdout, refused.stderr)
    # The egress proxy is on its own network, next to nothing of the stack's.
    egress_networks = set(hooked.container("egress")["NetworkSettings"]["Networks"])
    proxy_networks = set(hooked.container("proxy")["NetworkSettings"]["Networks"])
    assert egress_networks == {f"{hooked.project}_egress"} and not egress_networks & proxy_networks
