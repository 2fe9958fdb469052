"""A real S3 server for the tests: moto's server mode in a container built from PyPI.

No MinIO, SeaweedFS, Garage or RustFS image can be pulled or built on our machines,
so the s3 mode is tested against moto (docs/testing.md says what moto does not
check). The server is provisioned without authentication (an IAM user with an s3:*
policy, its access key, the buckets), then `/moto-api/reset-auth` switches
authentication on: from then on every request needs that user's key and a valid
SigV4 signature, so wrong keys are refused as a real S3 server refuses them.

It runs on a Docker network of its own, under a name only that network resolves, as
an S3 server of another Compose project would; the kit's MLflow joins that network
(MLOPS_KIT_S3_NETWORK). The test process reaches it on a loopback port, only to
provision it and to look into the bucket.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE = "mlops-kit-test/moto:5.2.5"
#: No "s3." in front: moto would read the first label as a virtual-hosted bucket name.
ALIAS = "objects.kit-test.internal"
LABEL = "mlops-kit.test=moto"
REGION = "us-east-1"
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


def build_image(repo_root: Path, base_image: str = "debian:trixie-slim") -> None:
    """Build the test S3 server image (cached layers: quick after the first time)."""
    subprocess.run(
        [
            "docker",
            "build",
            "--quiet",
            "--build-arg",
            f"BASE_IMAGE={base_image}",
            "-f",
            str(repo_root / "tests/integration/moto/Dockerfile"),
            "-t",
            IMAGE,
            str(repo_root),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


@dataclass(frozen=True)
class S3Server:
    """One running moto server and the keys of its only user."""

    container: str
    network: str
    host_port: int
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    @property
    def endpoint_in_network(self) -> str:
        """The endpoint as containers on its network reach it (what MLflow is given)."""
        return f"http://{ALIAS}:5000"

    @property
    def host_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"

    def client(self) -> Any:
        """A boto3 client for the test process (loopback port, path addressing, the user's keys)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.host_endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
        )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_s3_server(name: str, buckets: list[str]) -> S3Server:
    """Start moto on network ``name``-net, provision a user and ``buckets``, then enforce authentication."""

    network = f"{name}-net"
    port = _free_port()
    subprocess.run(["docker", "network", "create", "--label", LABEL, network], check=True, capture_output=True)
    subprocess.run(
        [
            "docker",
            "run",
            "--detach",
            "--name",
            name,
            "--label",
            LABEL,
            "--network",
            network,
            "--network-alias",
            ALIAS,
            "--publish",
            f"127.0.0.1:{port}:5000",
            "--memory",
            "3g",
            # Path-style addressing only (as the kit is configured): never a bucket in the Host.
            "--env",
            "S3_IGNORE_SUBDOMAIN_BUCKETNAME=true",
            IMAGE,
        ],
        check=True,
        capture_output=True,
    )
    try:
        return _provision(name, network, port, buckets)
    except BaseException:
        stop_s3_server(S3Server(name, network, port, "", ""))
        raise


def _provision(name: str, network: str, port: int, buckets: list[str]) -> S3Server:
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto did not answer on {endpoint} within 60 s") from None
            time.sleep(0.5)
    anonymous = {"aws_access_key_id": "provisioning", "aws_secret_access_key": "provisioning"}
    iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION, **anonymous)
    iam.create_user(UserName="mlflow")
    iam.put_user_policy(UserName="mlflow", PolicyName="artifacts", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName="mlflow")["AccessKey"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, **anonymous)
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)
    # From now on every request must carry the user's key and a valid signature.
    # (text/plain: with a form content type Flask hands moto an empty body.)
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    return S3Server(name, network, port, key["AccessKeyId"], key["SecretAccessKey"])


def stop_s3_server(server: S3Server) -> None:
    """Remove the container and its network (whatever state they are in)."""
    subprocess.run(["docker", "rm", "--force", "--volumes", server.container], check=False, capture_output=True)
    subprocess.run(["docker", "network", "rm", server.network], check=False, capture_output=True)
