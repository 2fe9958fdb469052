"""What the tests' own helper containers share on top of testcontainers.

Our machines run the Docker engine inside a container of their own, so testcontainers
takes the engine's gateway for the address of a published port (its `gateway_ip`
mode), while the helpers publish on 127.0.0.1 only: these helpers read the port
mapping themselves and wait on loopback. No registry can be reached either, and
testcontainers pulls an image it does not find: `require_local_image` fails first,
in one line naming the image.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

#: docker-py's form of a port binding: 127.0.0.1, a port the engine picks.
ON_LOOPBACK = ("127.0.0.1", None)


def require_local_image(image: str) -> None:
    """Fail in one line if ``image`` is not on this engine (testcontainers would try to pull it)."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if found.returncode != 0:
        raise AssertionError(f"image {image} is not on this engine: build it first (no registry is reachable)")


def loopback_port(container: DockerContainer, port: int) -> int:
    """The 127.0.0.1 port the engine published ``port`` of ``container`` on."""
    return int(container.get_docker_client().port(container.get_container_id(), port))


class LoopbackHttpWaitStrategy(WaitStrategy):
    """Ready when GET ``path`` through the port published on 127.0.0.1 answers 200."""

    def __init__(self, port: int, path: str = "/") -> None:
        super().__init__()
        self._port = port
        self._path = path
        # Refused connections, resets and non-200 answers (HTTPError) while it starts.
        self.with_transient_exceptions(OSError)

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        assert isinstance(container, DockerContainer)
        url = f"http://127.0.0.1:{loopback_port(container, self._port)}{self._path}"

        def answers() -> bool:
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)

        if not self._poll(answers):
            raise TimeoutError(f"{url} did not answer 200 within {self._startup_timeout:.0f} s")


#: The password of the tests' stand-alone PostgreSQL servers (a throwaway, for a throwaway server).
SOURCE_DB_PASSWORD = "source-db-password"


@contextmanager
def running_plain_postgres(image: str) -> Iterator[int]:
    """:func:`plain_postgres` started and answering logins; yields its 127.0.0.1 port, removed afterwards."""
    import psycopg2

    container = plain_postgres(image)
    container.start()
    try:
        port = loopback_port(container, 5432)
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg2.connect(
                    host="127.0.0.1", port=port, user="mlflow", password=SOURCE_DB_PASSWORD, dbname="mlflow"
                ).close()
                break
            except psycopg2.OperationalError:
                assert time.monotonic() < deadline, container.get_logs()
                time.sleep(0.5)
        yield port
    finally:
        container.stop()


def plain_postgres(image: str) -> DockerContainer:
    """A stand-alone PostgreSQL server (user and database `mlflow`, password auth over TCP)
    from the kit's PostgreSQL image, published on 127.0.0.1: another team's MLflow database.

    The kit's own entrypoint serves only a socket, so this one starts the server itself.
    """
    require_local_image(image)
    script = (
        'set -e; umask 077; echo "$SOURCE_DB_PASSWORD" > /tmp/pw; '
        "initdb -D /tmp/pg --username=postgres --pwfile=/tmp/pw --auth=scram-sha-256 >/dev/null; "
        "echo 'host all all 0.0.0.0/0 scram-sha-256' >> /tmp/pg/pg_hba.conf; "
        "pg_ctl -D /tmp/pg -o \"-c listen_addresses='' -c unix_socket_directories=/tmp\" -w start >/dev/null; "
        'PGPASSWORD="$SOURCE_DB_PASSWORD" psql -h /tmp -U postgres -q -c "CREATE ROLE mlflow LOGIN PASSWORD '
        "'$SOURCE_DB_PASSWORD'\" -c 'CREATE DATABASE mlflow OWNER mlflow'; "
        "pg_ctl -D /tmp/pg -w stop >/dev/null; "
        "exec postgres -D /tmp/pg -c listen_addresses='*' -c unix_socket_directories=/tmp"
    )
    container = (
        DockerContainer(image)
        .with_env("SOURCE_DB_PASSWORD", SOURCE_DB_PASSWORD)
        .with_kwargs(entrypoint=["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "bash", "-c"])
        .with_command([script])
    )
    container.ports["5432/tcp"] = ON_LOOPBACK  # type: ignore[assignment]
    return container
