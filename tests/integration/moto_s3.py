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

testcontainers runs it: the network and the container are context managers, ready
when the image's health check and the published port both answer, and removed when
the block ends (a failed test or Ctrl-C included). The image is built here first,
so testcontainers never pulls.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testcontainers.core.container import DockerContainer
from testcontainers.core.network import Network
from testcontainers.core.wait_strategies import CompositeWaitStrategy, HealthcheckWaitStrategy

from tests.integration.containers import ON_LOOPBACK, LoopbackHttpWaitStrategy, loopback_port, require_local_image

IMAGE = "mlops-kit-test/moto:5.2.5"
#: No "s3." in front: moto would read the first label as a virtual-hosted bucket name.
ALIAS = "objects.kit-test.internal"
LABELS = {"mlops-kit.test": "moto"}
PORT = 5000
REGION = "us-east-1"
POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
STARTUP_SECONDS = 60


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

    container: str  # its id
    network: str
    host_endpoint: str  # the loopback port the test process uses
    access_key_id: str
    secret_access_key: str
    region: str = REGION

    @property
    def endpoint_in_network(self) -> str:
        """The endpoint as containers on its network reach it (what MLflow is given)."""
        return f"http://{ALIAS}:{PORT}"

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


class MotoContainer(DockerContainer):
    """moto's server mode on ``network`` under :data:`ALIAS`; only what differs from a plain container."""

    def __init__(self, name: str, network: Network) -> None:
        super().__init__(IMAGE, name=name, network=network, network_aliases=[ALIAS])
        # Path-style addressing only (as the kit is configured): never a bucket in the Host.
        self.with_env("S3_IGNORE_SUBDOMAIN_BUCKETNAME", "true")
        self.with_kwargs(labels=LABELS, mem_limit="3g")
        # Published on loopback only: before reset-auth the server accepts anyone.
        self.ports[f"{PORT}/tcp"] = ON_LOOPBACK  # type: ignore[assignment]
        # Ready when the image's own health check passes and the test process gets through the published port.
        ready = CompositeWaitStrategy(HealthcheckWaitStrategy(), LoopbackHttpWaitStrategy(PORT, "/moto-api/"))
        self.waiting_for(ready.with_startup_timeout(STARTUP_SECONDS))

    @property
    def host_endpoint(self) -> str:
        return f"http://127.0.0.1:{loopback_port(self, PORT)}"


@contextmanager
def running_s3_server(repo_root: Path, name: str, buckets: list[str]) -> Iterator[S3Server]:
    """moto on network ``name``-net with a user and ``buckets``, authentication enforced; removed afterwards."""
    build_image(repo_root)
    require_local_image(IMAGE)
    network = Network(docker_network_kw={"labels": LABELS})
    network.name = f"{name}-net"  # the name the stack is given (MLOPS_KIT_S3_NETWORK)
    with network, MotoContainer(name, network) as container:
        yield _provision(container, network.name, buckets)


def _provision(container: MotoContainer, network: str, buckets: list[str]) -> S3Server:
    import boto3

    endpoint = container.host_endpoint
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
    return S3Server(container.get_container_id(), network, endpoint, key["AccessKeyId"], key["SecretAccessKey"])
