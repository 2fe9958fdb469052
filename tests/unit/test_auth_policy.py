"""The kit's login and request policy in the MLflow image (docker/mlflow/plugin/mlops_kit_auth.py).

Pure parts here (what is refused, what an error may say, the failed-login counts);
the integration tests (test_attacks.py) send the same requests to a real server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from tests.conftest import REPO_ROOT, load_image_module

PLUGIN = "docker/mlflow/plugin"


@pytest.fixture(scope="module")
def policy() -> ModuleType:
    # The image installs the plugin's modules side by side in site-packages.
    sys.path.insert(0, str(REPO_ROOT / PLUGIN))
    try:
        return load_image_module("mlops_kit_auth", f"{PLUGIN}/mlops_kit_auth.py")
    finally:
        sys.path.remove(str(REPO_ROOT / PLUGIN))


@pytest.fixture
def app():  # type: ignore[no-untyped-def]
    from flask import Flask

    app = Flask("policy-test")
    with app.test_request_context("/"):
        yield app


def refused(policy: ModuleType, method: str, path: str, body: dict[str, Any] | None = None, admin: bool = False):  # type: ignore[no-untyped-def]
    return policy.refusal(method, path, lambda _kind: body or {}, is_admin=lambda: admin)


@pytest.mark.parametrize("version", ["2.0", "3.0"])
@pytest.mark.parametrize("prefix", ["api", "ajax-api"])
def test_trace_location_tags_are_never_a_clients(policy: ModuleType, app, version: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    path = f"/{prefix}/{version}/mlflow/traces/tr-1/tags"
    for method in ("PATCH", "DELETE"):
        for admin in (False, True):
            answer = refused(policy, method, path, {"key": "mlflow.artifactLocation", "value": "file:///etc"}, admin)
            assert answer is not None and answer.status_code == 400
            assert "mlflow.artifactLocation" in answer.get_json()["message"]
    assert refused(policy, "PATCH", path, {"key": "team", "value": "a"}) is None


def test_the_deprecated_end_trace_call_cannot_set_them_either(policy: ModuleType, app) -> None:  # type: ignore[no-untyped-def]
    body = {"request_id": "tr-1", "tags": [{"key": "mlflow.artifactLocation", "value": "file:///etc"}]}
    assert refused(policy, "PATCH", "/api/2.0/mlflow/traces/tr-1", body).status_code == 400
    assert refused(policy, "PATCH", "/api/2.0/mlflow/traces/tr-1", {"request_id": "tr-1", "tags": []}) is None


@pytest.mark.parametrize(
    "sent",
    [
        {"name": "e", "artifactLocation": "file:///etc"},  # protobuf's JSON name
        json.dumps({"name": "e", "artifact_location": "file:///etc"}),  # a body sent as a JSON string
    ],
)
def test_bodies_are_read_as_mlflow_reads_them(policy: ModuleType, sent: Any) -> None:
    from flask import Flask

    with Flask("t").test_request_context("/api/2.0/mlflow/experiments/create", method="POST", json=sent):
        assert policy._request_message("create_experiment")["artifact_location"] == "file:///etc"
        answer = policy.refusal(
            "POST", "/api/2.0/mlflow/experiments/create", policy._request_message, is_admin=lambda: False
        )
        assert answer is not None and answer.status_code == 403


def test_a_new_trace_cannot_bring_its_own_location(policy: ModuleType, app) -> None:  # type: ignore[no-untyped-def]
    v3 = {"trace": {"trace_info": {"tags": {"mlflow.artifactLocation": "mlflow-artifacts:/1/traces/x/artifacts"}}}}
    assert refused(policy, "POST", "/api/3.0/mlflow/traces", v3).status_code == 400
    v2 = {"tags": [{"key": "mlflow.trace.spansLocation", "value": "elsewhere"}]}
    assert refused(policy, "POST", "/api/2.0/mlflow/traces", v2).status_code == 400
    plain = {"trace": {"trace_info": {"tags": {"mlflow.traceName": "t"}}}}
    assert refused(policy, "POST", "/api/3.0/mlflow/traces", plain) is None


@pytest.mark.parametrize("location", ["file:///etc", "/mlflow/artifacts/2", "/tmp/x", "mlflow-artifacts:/9"])
def test_only_the_admin_chooses_an_artifact_location(policy: ModuleType, app, location: str) -> None:  # type: ignore[no-untyped-def]
    body = {"name": "e", "artifact_location": location}
    for path in ("/api/2.0/mlflow/experiments/create", "/ajax-api/2.0/mlflow/experiments/create"):
        answer = refused(policy, "POST", path, body)
        assert answer is not None and answer.status_code == 403
        assert "artifact_location" in answer.get_json()["message"]
        assert refused(policy, "POST", path, body, admin=True) is None
    assert refused(policy, "POST", "/api/2.0/mlflow/experiments/create", {"name": "e"}) is None


def test_user_list_and_genai_endpoints_are_the_admins(policy: ModuleType, app, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MLOPS_KIT_GENAI_ENDPOINTS", raising=False)
    for path in (
        "/api/2.0/mlflow/users/list",
        "/ajax-api/2.0/mlflow/users/list",
        "/api/3.0/mlflow/gateway/secrets/create",
        "/ajax-api/2.0/mlflow/gateway-proxy",
        "/gateway/chat/mlflow/invocations",
        "/ajax-api/3.0/mlflow/assistant/message",
        "/ajax-api/3.0/mlflow/demo/generate",
        "/ajax-api/3.0/mlflow/assistant",
    ):
        assert refused(policy, "POST", path).status_code == 403, path
        assert refused(policy, "POST", path, admin=True) is None, path
    monkeypatch.setenv("MLOPS_KIT_GENAI_ENDPOINTS", "users")
    assert refused(policy, "POST", "/ajax-api/3.0/mlflow/demo/generate") is None
    assert refused(policy, "GET", "/api/2.0/mlflow/users/list").status_code == 403
    # Ordinary tracking calls are never asked about.
    assert refused(policy, "POST", "/api/2.0/mlflow/runs/log-metric", {"run_id": "r"}) is None
    assert refused(policy, "GET", "/api/2.0/mlflow/gateway-like/experiments/search") is None
    # Artifacts in folders that happen to be called gateway or assistant are just artifacts.
    for path in (
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/gateway/app.py",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/src/mlflow/assistant",
        "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts/demo/big.bin",
    ):
        assert refused(policy, "PUT", path) is None, path


def test_error_messages_lose_their_internals(policy: ModuleType) -> None:
    duplicate = (
        "Experiment(name=o2) already exists. Error: (psycopg2.errors.UniqueViolation) duplicate key value "
        'violates unique constraint "experiments_name_key"\n[SQL: INSERT INTO experiments (name) VALUES (%(name)s)]'
        "\n[parameters: {'name': 'o2'}]"
    )
    cleaned = policy.public_message(400, duplicate)
    assert cleaned.startswith("Experiment(name=o2) already exists.")
    for leak in ("psycopg2", "INSERT", "[SQL", "parameters", "experiments_name_key"):
        assert leak not in cleaned
    assert policy.public_message(404, "Run 'abc' not found") == "Run 'abc' not found"
    assert "minio" not in policy.public_message(400, "Could not reach http://minio:9000/bucket")
    assert "/mlflow/artifacts" not in policy.public_message(404, "No such file: /mlflow/artifacts/1/x")
    assert policy.public_message(500, "KeyError: 'x' at /opt/mlflow/...") == (
        "The server failed to handle this request; its log has the details."
    )
    # A 501 "not supported" is a signal clients act on (multipart uploads fall back to one request).
    unsupported = "Multipart upload is not supported for the current artifact repository"
    assert policy.public_message(501, unsupported, "NOT_IMPLEMENTED") == unsupported
    assert "minio" not in policy.public_message(503, "http://minio:9000 is down", "TEMPORARILY_UNAVAILABLE")


def test_error_answers_are_rewritten_but_keep_their_code(policy: ModuleType, app) -> None:  # type: ignore[no-untyped-def]
    from flask import jsonify

    response = jsonify({"error_code": "RESOURCE_ALREADY_EXISTS", "message": "x. Error: (psycopg2.errors.X) [SQL: ...]"})
    response.status_code = 400
    body = json.loads(policy.sanitise_error(response).get_data())
    assert body == {"error_code": "RESOURCE_ALREADY_EXISTS", "message": "x. (Details are in the server log.)"}
    ok = jsonify({"message": "(psycopg2. in a successful answer is data"})
    assert policy.sanitise_error(ok).get_json()["message"].startswith("(psycopg2.")


def test_failed_logins_are_counted_per_address_for_a_minute(policy: ModuleType, tmp_path: Path) -> None:
    counter = policy.FailureCounter(str(tmp_path / "failures.sqlite"), limit=3)
    other = policy.FailureCounter(str(tmp_path / "failures.sqlite"), limit=3)  # another worker process
    now = 1_000_000.0
    for second in range(3):
        assert counter.retry_after("10.0.0.9", now + second) == 0
        reservation = other.reserve("10.0.0.9", now + second)
        assert reservation.wait == 0
        other.confirm(reservation.attempt)
    assert counter.retry_after("10.0.0.9", now + 3) == pytest.approx(57.0)
    assert counter.reserve("10.0.0.9", now + 3) == (pytest.approx(57.0), None, False)  # refused, not counted
    assert counter.retry_after("10.0.0.7", now + 3) == 0  # other addresses are not slowed
    assert counter.retry_after("10.0.0.9", now + 60.5) == 0  # the first failure left the window
    # A good login gives its attempt back.
    wait, attempt, _ = counter.reserve("10.0.0.5", now)
    assert wait == 0 and attempt is not None
    counter.release(attempt)
    for _ in range(2):
        counter.confirm(counter.reserve("10.0.0.5", now).attempt)
    assert counter.retry_after("10.0.0.5", now) == 0


def test_checks_in_progress_hold_an_address_back_for_a_second_not_a_minute(policy: ModuleType, tmp_path: Path) -> None:
    """32 workers of a sweep log in at once: the ones past the limit retry in a second."""
    counter = policy.FailureCounter(str(tmp_path / "failures.sqlite"), limit=3)
    now = 1_000_000.0
    checking = [counter.reserve("10.0.0.9", now) for _ in range(3)]
    assert all(r.wait == 0 for r in checking)
    held = counter.reserve("10.0.0.9", now + 0.1)
    assert held == (policy.FailureCounter.IN_FLIGHT_WAIT, None, True)
    # Two of them turn out good, one a failure: the address may go on.
    counter.release(checking[0].attempt)
    counter.release(checking[1].attempt)
    counter.confirm(checking[2].attempt)
    assert counter.retry_after("10.0.0.9", now + 0.2) == 0
    # Failures and checks in progress together: still only a short wait while any is in progress.
    counter.confirm(counter.reserve("10.0.0.9", now + 0.3).attempt)
    pending = counter.reserve("10.0.0.9", now + 0.4)
    assert counter.reserve("10.0.0.9", now + 0.5).in_flight
    # A check whose worker died never answers: after STALE_SECONDS it counts as a failure.
    stale = now + 0.4 + policy.FailureCounter.STALE_SECONDS + 1
    assert counter.retry_after("10.0.0.9", stale) == pytest.approx(now + 60 - stale)  # the first failure, at now
    assert pending.attempt is not None


def test_concurrent_guesses_cannot_slip_past_the_limit(policy: ModuleType, tmp_path: Path) -> None:
    import threading

    path = str(tmp_path / "failures.sqlite")
    policy.FailureCounter(path, limit=3)
    results: list[tuple[float, int | None, bool]] = []
    start = threading.Barrier(12)

    def guess() -> None:
        counter = policy.FailureCounter(path, limit=3)
        start.wait()
        results.append(counter.reserve("10.0.0.9", 1_000_000.0))

    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(1 for wait, _attempt, _in_flight in results if wait == 0) == 3


def test_a_cached_login_is_free_only_for_the_address_that_was_checked(
    policy: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(policy, "_cache_seconds", lambda: 60.0)
    right, other = ("bob", b"hmac-of-right"), ("bob", b"hmac-of-other")  # MLflow's cache keys
    policy._remember_check("10.0.0.5", right)
    assert policy._checked_from("10.0.0.5", right)
    assert not policy._checked_from("10.0.0.9", right)  # another address: counted again
    assert not policy._checked_from("10.0.0.5", other)
    assert not policy._checked_from("10.0.0.5", None)  # MLflow caches no login
    monkeypatch.setattr(policy, "_cache_seconds", lambda: 0.0)  # past MLflow's cache time
    assert not policy._checked_from("10.0.0.5", right)


def test_clients_are_counted_by_address_and_ipv6_by_its_64(policy: ModuleType) -> None:
    from flask import Flask

    for forwarded, expected in (
        ("203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::7", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
    ):
        with Flask("t").test_request_context("/", headers={"X-Forwarded-For": forwarded}):
            assert policy.client_address() == expected


def test_an_upload_body_is_never_read(policy: ModuleType, app) -> None:  # type: ignore[no-untyped-def]
    """Reading a body consumes the stream an artifact upload handler reads: only JSON calls are parsed."""

    def unreadable(_kind: str) -> dict[str, Any]:
        raise AssertionError("the policy read a body it has no business with")

    for method, path in (
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/abc/artifacts/model.bin"),
        ("POST", "/ajax-api/2.0/mlflow/upload-artifact"),
        ("POST", "/api/2.0/mlflow/runs/log-batch"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/abc/artifacts/big"),
    ):
        assert policy.refusal(method, path, unreadable, is_admin=lambda: False) is None


def test_webhooks_go_through_the_egress_proxy_with_mlflows_own_session(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mlflow.webhooks import delivery
    from mlflow.webhooks.ssrf import SSRFProtectedHTTPAdapter

    hooks = load_image_module("mlops_kit_webhooks", f"{PLUGIN}/mlops_kit_webhooks.py")
    monkeypatch.setattr(delivery, "_webhook_session", None)
    monkeypatch.delenv("MLOPS_KIT_WEBHOOK_PROXY", raising=False)
    # No host allowed: no delivery leaves, and the refusal says which setting opens it.
    assert hooks.route_through_egress() is False
    with pytest.raises(requests.ConnectionError, match="MLOPS_KIT_WEBHOOK_ALLOWED_HOSTS"):
        delivery._get_or_create_webhook_session().post("https://ci.example/hook", data=b"{}", timeout=5)
    monkeypatch.setenv("MLOPS_KIT_WEBHOOK_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("MLOPS_KIT_WEBHOOK_CA_BUNDLE", "/tmp/webhook-cas.pem")
    assert hooks.route_through_egress() is True
    session = delivery._get_or_create_webhook_session()
    assert session.proxies == {"http": "http://127.0.0.1:3128", "https": "http://127.0.0.1:3128"}
    assert session.verify == "/tmp/webhook-cas.pem"
    assert session.trust_env is False  # still MLflow's session: no other environment leaks in
    assert isinstance(session.get_adapter("https://ci.example/hook"), SSRFProtectedHTTPAdapter)


def test_trace_files_are_read_only_from_the_traces_own_folder() -> None:
    guard = load_image_module("mlops_kit_trace_guard", f"{PLUGIN}/mlops_kit_trace_guard.py")
    from mlflow.exceptions import MlflowException

    class Info:
        trace_id = "tr-bob"
        experiment_id = "7"

    folder = "mlflow-artifacts:/7/traces/tr-bob"
    for uri in (f"{folder}/artifacts", f"{folder}/archive/spans.pb", folder):
        assert guard.guarded(lambda _info, u=uri: u, folder_of=lambda _info: folder)(Info()) == uri
    for uri in (
        "mlflow-artifacts:/3/traces/tr-alice/artifacts",  # another user's trace
        "file:///etc",
        f"{folder}/../../../3/traces/tr-alice/artifacts",
        f"{folder}-evil/artifacts",
    ):
        with pytest.raises(MlflowException) as refused_read:
            guard.guarded(lambda _info, u=uri: u, folder_of=lambda _info: folder)(Info())
        assert refused_read.value.get_http_status_code() == 403, uri


def test_the_trace_guard_wraps_mlflows_resolvers_once(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from mlflow.server import handlers
    from mlflow.store.tracking import sqlalchemy_store
    from mlflow.tracing.utils import artifact_utils

    guard = load_image_module("mlops_kit_trace_guard", f"{PLUGIN}/mlops_kit_trace_guard.py")
    for module in (artifact_utils, handlers, sqlalchemy_store):
        for name in guard.RESOLVERS:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, getattr(module, name))
    wrapped = guard.install()
    # Where MLflow 3.17.2 reads a trace's locations: a future release that moves them fails here.
    assert "mlflow.server.handlers.get_artifact_uri_for_trace" in wrapped
    assert "mlflow.server.handlers.get_archive_uri_for_trace" in wrapped
    assert "mlflow.store.tracking.sqlalchemy_store.get_archive_uri_for_trace" in wrapped
    first = handlers.get_artifact_uri_for_trace
    guard.install()
    assert handlers.get_artifact_uri_for_trace is first  # installed twice, wrapped once
