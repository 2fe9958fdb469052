"""Secure by default, on the real engine: logins, permissions, TLS, what is reachable, where secrets go.

One stack, initialised with passwords the test knows, so it can prove they
appear nowhere they should not: `docker inspect`, container logs, CLI errors.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import Stack, fresh_stack, tcp_listeners

pytestmark = pytest.mark.usefixtures("fail_fast")

# Known values (valid secrets: 16+ characters of the secret alphabet).
KNOWN_ADMIN_PASSWORD = "Known-Admin-Password-4-Tests"
KNOWN_DB_PASSWORD = "Known-Database-Password-4-Tests"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("security"), prefix="mlkt-sec") as stack:
        secrets = stack.directory / "secrets"
        secrets.mkdir(mode=0o700)
        for name, value in (("mlflow_admin_password", KNOWN_ADMIN_PASSWORD), ("postgres_password", KNOWN_DB_PASSWORD)):
            (secrets / name).write_text(value)
            (secrets / name).chmod(0o600)
        # Keeps the existing secrets, generates the rest. A short login cache (default
        # 60 s) so that password changes are seen by every worker within the test; the
        # failed-login limit out of the way of these tests (test_attacks.py tests it).
        stack.init(env={"MLOPS_KIT_AUTH_CACHE_SECONDS": "2", "MLOPS_KIT_LOGIN_FAILURES_PER_MINUTE": "1000"})
        stack.kit("up")
        yield stack


def secret_values(stack: Stack) -> list[str]:
    """Every secret the kit holds for this stack (passwords, keys), as files."""
    root = stack.directory / "secrets"
    return [p.read_text().strip() for p in root.rglob("*") if p.is_file() and not p.name.endswith((".crt", ".old"))]


def inspect(stack: Stack) -> list[dict]:  # type: ignore[type-arg]
    ids = stack.containers()
    out = subprocess.run(["docker", "inspect", *ids], capture_output=True, text=True, check=True).stdout
    return list(json.loads(out))


# ---- authentication ----------------------------------------------------------------------


def test_anonymous_and_wrong_password_get_401(stack: Stack) -> None:
    url = stack.tracking_uri + SEARCH
    assert requests.get(url, verify=str(stack.ca_file), timeout=10).status_code == 401
    wrong = requests.get(url, verify=str(stack.ca_file), auth=("admin", "not-the-password"), timeout=10)
    assert wrong.status_code == 401
    right = requests.get(url, verify=str(stack.ca_file), auth=("admin", KNOWN_ADMIN_PASSWORD), timeout=10)
    assert right.status_code == 200


def test_users_see_only_what_they_are_granted(stack: Stack) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    stack.kit("users", "add", "alice")
    stack.kit("users", "add", "bob")
    names = {u["username"]: u for u in json.loads(stack.kit("users", "list", "--json").stdout)}
    assert names["admin"]["is_admin"] is True
    assert names["alice"]["password_stored"] is True
    assert (stack.directory / "secrets" / "users" / "alice").stat().st_mode & 0o777 == 0o600

    with stack.as_user("alice"):
        alice = MlflowClient(stack.tracking_uri)
        experiment_id = alice.create_experiment("alice-private")
        run = alice.create_run(experiment_id)
        alice.log_metric(run.info.run_id, "m", 1.0)

    with stack.as_user("bob"):
        bob = MlflowClient(stack.tracking_uri)
        with pytest.raises(MlflowException) as refused:
            bob.get_experiment(experiment_id)
        assert "403" in str(refused.value) or "PERMISSION_DENIED" in str(refused.value)
        with pytest.raises(MlflowException):
            bob.log_metric(run.info.run_id, "m", 2.0)

    stack.kit("users", "grant", "bob", "READ", "experiment", "alice-private")
    grants = json.loads(stack.kit("users", "permissions", "bob", "--json").stdout)
    assert any(g.get("permission") == "READ" for g in grants), grants
    with stack.as_user("bob"):
        bob = MlflowClient(stack.tracking_uri)
        assert bob.get_experiment(experiment_id).name == "alice-private"
        assert bob.get_run(run.info.run_id).data.metrics == {"m": 1.0}
        with pytest.raises(MlflowException):  # READ does not allow writing
            bob.log_metric(run.info.run_id, "m", 2.0)

    stack.kit("users", "revoke", "bob", "experiment", experiment_id)
    with stack.as_user("bob"), pytest.raises(MlflowException):
        MlflowClient(stack.tracking_uri).get_experiment(experiment_id)


def status_settles(url: str, stack: Stack, auth: tuple[str, str], expected: int) -> int:
    """The status every worker gives once its login cache (2 s here) has expired; bounded: 10 tries."""
    code = 0
    for _ in range(10):
        code = requests.get(url, verify=str(stack.ca_file), auth=auth, timeout=10).status_code
        if code == expected:
            break
        time.sleep(1)
    # Several more requests, so that every worker has answered with the settled state.
    codes = {requests.get(url, verify=str(stack.ca_file), auth=auth, timeout=10).status_code for _ in range(6)}
    return code if codes == {code} else -1


def test_password_change_and_removal(stack: Stack) -> None:
    stack.kit("users", "add", "dave")
    old = stack.password("dave")
    url = stack.tracking_uri + SEARCH
    assert requests.get(url, verify=str(stack.ca_file), auth=("dave", old), timeout=10).status_code == 200
    stack.kit("users", "passwd", "dave")
    new = stack.password("dave")
    assert new != old
    assert status_settles(url, stack, ("dave", old), 401) == 401
    assert requests.get(url, verify=str(stack.ca_file), auth=("dave", new), timeout=10).status_code == 200
    # A chosen password comes on stdin, never as an argument.
    chosen = "Chosen-Password-From-Stdin-1"
    piped = stack.kit("users", "passwd", "dave", "--password-stdin", input=chosen + "\n", check=False)
    assert piped.returncode == 0, piped.stderr
    assert chosen not in piped.stdout + piped.stderr
    assert requests.get(url, verify=str(stack.ca_file), auth=("dave", chosen), timeout=10).status_code == 200
    stack.kit("users", "remove", "dave", "--yes")
    assert status_settles(url, stack, ("dave", chosen), 401) == 401
    assert not (stack.directory / "secrets" / "users" / "dave").exists()


def test_every_worker_sees_a_revoked_grant_and_a_new_password_at_once(stack: Stack) -> None:
    """kit-auth keeps users, grants and verified passwords briefly per worker; a change made
    through any worker empties them in all (no waiting for a cache to expire)."""
    stack.kit("users", "add", "erin")
    stack.kit("users", "grant", "erin", "READ", "experiment", "Default")
    url = stack.tracking_uri + "/api/2.0/mlflow/experiments/get?experiment_id=0"
    ca = str(stack.ca_file)

    def statuses(password: str) -> list[int]:
        # A new connection each time: the requests spread over the workers.
        return [requests.get(url, verify=ca, auth=("erin", password), timeout=10).status_code for _ in range(12)]

    admin = ("admin", stack.password("admin"))

    def as_admin(method: str, path: str, body: dict[str, str]) -> None:
        # Straight through the API, so the check below starts within milliseconds of the
        # change (the login cache of this stack lasts 2 s, the grants cache 10 s).
        response = requests.request(method, stack.tracking_uri + path, json=body, verify=ca, auth=admin, timeout=10)
        assert response.status_code == 200, response.text

    old = stack.password("erin")
    assert statuses(old) == [200] * 12  # every worker has erin, her grant and her password cached
    as_admin(
        "POST",
        "/api/3.0/mlflow/users/permissions/revoke",
        {"username": "erin", "resource_type": "experiment", "resource_id": "0"},
    )
    assert statuses(old) == [403] * 12
    stack.kit("users", "grant", "erin", "READ", "experiment", "Default")
    assert statuses(old) == [200] * 12
    as_admin("PATCH", "/api/2.0/mlflow/users/update-password", {"username": "erin", "password": "Erin-New-Password-2"})
    assert statuses(old) == [401] * 12
    assert statuses("Erin-New-Password-2") == [200] * 12
    stack.kit("users", "remove", "erin", "--yes")


# ---- TLS -----------------------------------------------------------------------------------


def test_client_env_gives_a_working_https_client_with_the_exported_ca(stack: Stack, tmp_path: Path) -> None:
    """A data scientist's machine: the three variables and a copy of the CA, nothing else."""
    from mlflow.tracking import MlflowClient

    laptop_ca = tmp_path / "company-mlflow-ca.crt"
    stack.kit("tls", "export-ca", "--out", str(laptop_ca))
    assert laptop_ca.read_text().startswith("-----BEGIN CERTIFICATE-----")
    variables = stack.client_variables("alice")
    assert set(variables) == {
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_SERVER_CERT_PATH",
    }
    assert variables["MLFLOW_TRACKING_URI"].startswith("https://")
    saved = dict(os.environ)
    try:
        os.environ.update({**variables, "MLFLOW_TRACKING_SERVER_CERT_PATH": str(laptop_ca)})
        client = MlflowClient(variables["MLFLOW_TRACKING_URI"])
        experiment_id = client.create_experiment("over-https")
        assert client.get_experiment(experiment_id).name == "over-https"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_client_without_the_ca_is_refused(stack: Stack) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    variables = stack.client_variables("alice")
    variables.pop("MLFLOW_TRACKING_SERVER_CERT_PATH")
    saved = dict(os.environ)
    try:
        for name in ("MLFLOW_TRACKING_SERVER_CERT_PATH", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            os.environ.pop(name, None)
        os.environ.update(variables)
        with pytest.raises(MlflowException) as refused:
            MlflowClient(variables["MLFLOW_TRACKING_URI"]).search_experiments()
        assert "certificate verify failed" in str(refused.value).lower() or "SSL" in str(refused.value)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_plain_http_on_the_port_redirects_to_https(stack: Stack) -> None:
    response = requests.get(f"http://localhost:{stack.port}/", allow_redirects=False, timeout=10)
    assert response.status_code in (301, 308)
    assert response.headers["Location"] == f"https://localhost:{stack.port}/"


def test_certificate_names_this_host_and_works_by_ip(stack: Stack) -> None:
    shown = json.loads(stack.kit("tls", "show", "--json").stdout)
    assert {"localhost", "127.0.0.1"} <= set(shown["names"])
    # Clients using an IP address send no SNI: the one certificate still answers.
    url = f"https://127.0.0.1:{stack.port}" + SEARCH
    assert requests.get(url, verify=str(stack.ca_file), auth=("admin", KNOWN_ADMIN_PASSWORD), timeout=10).ok


# ---- what is reachable ---------------------------------------------------------------------


def test_only_the_proxy_publishes_a_port(stack: Stack) -> None:
    published = {
        c["Config"]["Labels"]["com.docker.compose.service"]: {
            port: bindings for port, bindings in (c["NetworkSettings"]["Ports"] or {}).items() if bindings
        }
        for c in inspect(stack)
    }
    assert {service for service, ports in published.items() if ports} == {"proxy"}
    assert published["proxy"] == {"8443/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(stack.port)}]}


def test_postgresql_has_no_network_and_listens_on_no_tcp_port(stack: Stack) -> None:
    by_service = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspect(stack)}
    postgres = by_service["postgres"]
    assert postgres["HostConfig"]["NetworkMode"] == "none"
    addresses = [n.get("IPAddress") for n in postgres["NetworkSettings"]["Networks"].values()]
    assert not any(addresses), addresses
    # No listening TCP socket at all inside its network namespace (state 0A = LISTEN).
    assert tcp_listeners(postgres["Id"]) == []
    # MLflow has no network either (test_attacks.py tries to reach it).
    assert by_service["mlflow"]["HostConfig"]["NetworkMode"] == "none"


def test_containers_run_unprivileged_and_read_only(stack: Stack) -> None:
    for container in inspect(stack):
        service = container["Config"]["Labels"]["com.docker.compose.service"]
        host = container["HostConfig"]
        assert host["ReadonlyRootfs"] is True, service
        assert "no-new-privileges:true" in host["SecurityOpt"], service
        assert host["CapDrop"] == ["ALL"], service
        assert host["PidsLimit"] and host["Memory"], service
        # PID 1 is tini (root, only to forward signals); every service process runs
        # as the service's own user. (A health check in flight runs as root, some
        # dropping to that user: leave it out, by name or by the image's check command.)
        processes = subprocess.run(
            ["docker", "top", container["Id"], "-o", "pid,user,args"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[1:]
        # The image's own health check (e.g. `kit-metrics --check`), by its command line.
        test = (container["Config"].get("Healthcheck") or {}).get("Test") or []
        probe = " ".join(test[1:]) if test[:1] == ["CMD"] else ""
        service_users = set()
        for line in processes:
            _pid, user, args = line.split(None, 2)
            # The check itself, or a program it runs (the watchdog's curl of the proxy's check).
            if "tini" in args or "healthcheck" in args or (probe and (probe in args or args in probe)):
                continue
            service_users.add(user)
        assert service_users and "root" not in service_users, (service, processes)


# ---- where secrets go ----------------------------------------------------------------------


def test_env_and_secret_files_are_private(stack: Stack) -> None:
    assert stat.S_IMODE((stack.directory / ".env").stat().st_mode) == 0o600
    root = stack.directory / "secrets"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    for path in root.rglob("*"):
        if path.is_file() and path.suffix != ".crt":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_no_secret_in_docker_inspect_or_logs(stack: Stack) -> None:
    # Generate some traffic with passwords in flight, including failures.
    for password in (KNOWN_ADMIN_PASSWORD, "wrong-" + KNOWN_ADMIN_PASSWORD):
        requests.get(stack.tracking_uri + SEARCH, verify=str(stack.ca_file), auth=("admin", password), timeout=10)
    values = secret_values(stack)
    assert KNOWN_ADMIN_PASSWORD in values and KNOWN_DB_PASSWORD in values
    # What travels in a Basic auth header.
    values.append(base64.b64encode(f"admin:{KNOWN_ADMIN_PASSWORD}".encode()).decode())
    inspected = json.dumps(inspect(stack))
    logs = "".join(
        subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=True).stdout
        + subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=True).stderr
        for cid in stack.containers()
    )
    for value in values:
        assert value not in inspected
        assert value not in logs


def test_cli_errors_never_print_a_password(stack: Stack) -> None:
    admin_file = stack.directory / "secrets" / "mlflow_admin_password"
    admin_file.write_text("Replaced-Admin-Password-Wrong-1")
    try:
        refused = stack.kit("users", "list", check=False)
    finally:
        admin_file.write_text(KNOWN_ADMIN_PASSWORD)
    assert refused.returncode == 9
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "refused the admin login" in lines[0], refused.stderr
    duplicate = stack.kit("users", "add", "alice", check=False)
    assert duplicate.returncode == 2
    outputs = refused.stdout + refused.stderr + duplicate.stdout + duplicate.stderr
    for value in [*secret_values(stack), "Replaced-Admin-Password-Wrong-1"]:
        assert value not in outputs


# ---- several workers start cleanly -----------------------------------------------------------


def test_several_workers_start_cleanly_every_time(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """Upstream's admin bootstrap raced with several workers on PostgreSQL (MLflow 19299, 9155).

    Three fresh databases in a row with 4 workers: never a restart, never a
    traceback, and the admin logs in each time.
    """
    multi: Stack = stack_factory("mlkt-workers")
    multi.kit("init", "--project-name", multi.project, "--port", str(multi.port), env={"MLOPS_KIT_MLFLOW_WORKERS": "4"})
    for attempt in range(3):
        multi.kit("up")
        by_service = {c["Config"]["Labels"]["com.docker.compose.service"]: c for c in inspect(multi)}
        mlflow = by_service["mlflow"]
        assert mlflow["RestartCount"] == 0, attempt
        log = subprocess.run(["docker", "logs", mlflow["Id"]], capture_output=True, text=True, check=True)
        text = log.stdout + log.stderr
        assert "Traceback" not in text, (attempt, text[-3000:])
        ok = multi.session("admin").get(multi.tracking_uri + SEARCH, timeout=10)
        assert ok.status_code == 200, attempt
        multi.kit("down", "--volumes", "--yes")
