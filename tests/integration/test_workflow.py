"""Fresh folder → init → up → healthy → what a data scientist does → restart keeps it → --volumes deletes it.

The tests in this module run in order on one stack, as an operator's day would.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Stack, fresh_stack

ARTIFACT_SIZE = 9 * 2**20  # over 8 MiB: the client's multipart/chunking threshold
MODEL_NAME = "kit-adder"
# The name other machines would use; requests reach it through loopback with this Host header.
PUBLIC_HOST = "mlflow.kit-test.example"


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("workflow")) as stack:
        stack.init("--public-host", PUBLIC_HOST)
        yield stack


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    """What the workflow wrote, to compare after a restart."""
    return {}


@pytest.fixture(autouse=True)
def _mlflow_client_env(monkeypatch: pytest.MonkeyPatch, stack: Stack) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    if (stack.directory / ".env").exists():
        # Logged in as the admin, trusting the kit's CA: what `client-env --user admin` prints.
        for name, value in stack.client_variables("admin").items():
            monkeypatch.setenv(name, value)


def test_up_from_a_fresh_folder_reaches_healthy(stack: Stack) -> None:
    assert (stack.directory / ".env").stat().st_mode & 0o777 == 0o600
    result = stack.kit("up")
    assert "is healthy" in " ".join(result.stdout.split())  # the console wraps at 80 columns
    status = stack.status()
    assert status["healthy"] is True
    by_name = {s["service"]: s for s in status["services"]}
    assert by_name["mlflow"]["health"] == "healthy"
    assert by_name["postgres"]["health"] == "healthy"
    assert by_name["proxy"]["health"] == "healthy"
    assert by_name["mlflow"]["version"] == "3.17.2"
    # The proxy is the only published service.
    assert by_name["proxy"]["ports"] == [f"127.0.0.1:{stack.port}->8443"]
    assert by_name["mlflow"]["ports"] == []
    assert by_name["postgres"]["ports"] == []


def test_logs_show_requests_but_not_healthcheck_probes(stack: Stack) -> None:
    stack.session().get(f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    log = stack.kit("logs", "mlflow", "--tail", "all").stdout
    assert "GET /api/2.0/mlflow/experiments/search?max_results=1" in log
    assert "GET /health" not in log
    proxy_log = stack.kit("logs", "proxy", "--tail", "all").stdout
    assert "/api/2.0/mlflow/experiments/search" in proxy_log
    assert "probe=proxy" not in proxy_log


def test_clients_using_the_public_name_are_accepted_and_unknown_names_refused(stack: Stack) -> None:
    session = stack.session()
    url = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/get?experiment_id=0"
    accepted = session.get(url, headers={"Host": f"{PUBLIC_HOST}:{stack.port}"}, timeout=10)
    assert accepted.status_code == 200
    refused = session.get(url, headers={"Host": f"attacker.example:{stack.port}"}, timeout=10)
    assert refused.status_code == 403
    # The UI's writes carry an Origin header: the stack's own HTTPS name is accepted,
    # another site's is refused (a browser's stored login must not work for it).
    create = f"{stack.tracking_uri}/api/2.0/mlflow/experiments/create"
    own = {"Host": f"{PUBLIC_HOST}:{stack.port}", "Origin": f"https://{PUBLIC_HOST}:{stack.port}"}
    assert session.post(create, json={"name": "from-the-ui"}, headers=own, timeout=10).status_code == 200
    foreign = {**own, "Origin": "https://attacker.example"}
    assert session.post(create, json={"name": "from-elsewhere"}, headers=foreign, timeout=10).status_code == 403
    # The public name is on the proxy's certificate, so clients using it verify TLS.
    names = stack.kit("tls", "show", "--json").stdout
    assert PUBLIC_HOST in json.loads(names)["names"]


def test_mlflow_image_gives_uvicorns_listener_tcp_nodelay(stack: Stack) -> None:
    """Regression check for the ~40 ms kept-alive stall (uvicorn issue 3149, docs/performance.md).

    In the running image, uvicorn configured the way `mlflow server` runs it
    (our --log-config, several workers) must bind a socket whose connections
    asyncio gives TCP_NODELAY: protocol IPPROTO_TCP (6), not 0.
    """
    probe = (
        "import os, shlex, socket; from uvicorn.config import Config; "
        "opts = shlex.split(os.environ['MLFLOW_UVICORN_OPTS']); "
        "c = Config('mlflow.server.fastapi_app:app', host='127.0.0.1', port=0, workers=2, "
        "log_config=opts[opts.index('--log-config') + 1]); "
        "s = c.bind_socket(); print(s.proto)"
    )
    out = subprocess.run(
        [
            "docker",
            "compose",
            "--project-name",
            stack.project,
            "exec",
            "-T",
            "-u",
            "mlflow",
            "mlflow",
            "python",
            "-c",
            probe,
        ],
        cwd=stack.directory,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().splitlines()[-1] == str(socket.IPPROTO_TCP)


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_data_scientist_workflow(stack: Stack, tmp_path: Path, recorded: dict[str, Any]) -> None:
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    class AddN(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            return model_input + 5

    mlflow.set_tracking_uri(stack.tracking_uri)
    client = MlflowClient(stack.tracking_uri)
    experiment = mlflow.set_experiment("ds-workflow")

    payload = tmp_path / "weights.bin"
    payload.write_bytes(os.urandom(ARTIFACT_SIZE))
    with mlflow.start_run(run_name="parent") as parent:
        mlflow.log_params({"lr": "0.01", "layers": "3"})
        mlflow.set_tags({"team": "vision", "stage": "dev"})
        for step in range(50):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        with mlflow.start_run(run_name="child", nested=True) as child:
            mlflow.log_metric("accuracy", 0.93)
        mlflow.log_artifact(str(payload), artifact_path="data")
        model_info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AddN(),
            registered_model_name=MODEL_NAME,
            pip_requirements=["mlflow==3.17.2", "pandas"],
        )

    version = model_info.registered_model_version
    client.set_registered_model_alias(MODEL_NAME, "champion", str(version))

    @mlflow.trace(name="predict-pipeline")
    def pipeline(x: int) -> int:
        with mlflow.start_span(name="inner"):
            return x * 2

    assert pipeline(21) == 42
    mlflow.flush_trace_async_logging()

    recorded.update(
        experiment_id=experiment.experiment_id,
        parent_id=parent.info.run_id,
        child_id=child.info.run_id,
        payload_sha=_sha256(payload),
        model_version=str(version),
    )
    _assert_workflow_data(stack, tmp_path, recorded)


def _assert_workflow_data(stack: Stack, tmp_path: Path, recorded: dict[str, Any]) -> None:
    """Everything the workflow wrote reads back through the public API, bytes included."""
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(stack.tracking_uri)
    client = MlflowClient(stack.tracking_uri)

    parent = client.get_run(recorded["parent_id"])
    assert parent.data.params == {"lr": "0.01", "layers": "3"}
    assert parent.data.tags["team"] == "vision"
    history = client.get_metric_history(parent.info.run_id, "loss")
    assert [m.step for m in history] == list(range(50))
    assert history[-1].value == pytest.approx(1 / 50)

    child = client.get_run(recorded["child_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["accuracy"] == pytest.approx(0.93)

    downloaded = client.download_artifacts(parent.info.run_id, "data/weights.bin", dst_path=str(tmp_path / "dl"))
    assert Path(downloaded).stat().st_size == ARTIFACT_SIZE
    assert _sha256(downloaded) == recorded["payload_sha"]

    alias_version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert alias_version.version == recorded["model_version"]
    loaded = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    prediction = loaded.predict(pd.DataFrame({"x": [1, 2]}))
    assert list(prediction["x"]) == [6, 7]

    traces = mlflow.search_traces(locations=[recorded["experiment_id"]], return_type="list")
    names = [t.info.request_metadata.get("mlflow.traceName", "") or t.data.spans[0].name for t in traces]
    assert len(traces) >= 1, names
    root_spans = [s for t in traces for s in t.data.spans if s.parent_id is None]
    assert any(s.name == "predict-pipeline" for s in root_spans)
    assert any(s.name == "inner" for t in traces for s in t.data.spans)


def test_check_passes(stack: Stack) -> None:
    result = stack.kit("check")
    assert "works end to end" in " ".join(result.stdout.split())


def _in_container(stack: Stack, service: str, user: str, script: str) -> str:
    return subprocess.run(
        ["docker", "exec", "--user", user, f"{stack.project}-{service}-1", "sh", "-c", script],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _index_check(stack: Stack) -> dict[str, str]:
    answer = json.loads(stack.kit("doctor", "--json", check=False).stdout)
    return next(c for c in answer["checks"] if c["name"] == "database indexes")


def test_doctor_finds_a_missing_index_and_builds_it(stack: Stack) -> None:
    """MLflow issue 14465: a database without an index MLflow's queries need (a bad migration)."""
    _in_container(stack, "postgres", "postgres", "psql -q -d mlflow -c 'DROP INDEX index_latest_metrics_run_uuid'")
    check = _index_check(stack)
    assert "latest_metrics(run_uuid)" in check["detail"]
    assert "--fix-indexes" in check["fix"]
    stack.kit("doctor", "--fix-indexes", "--json", check=False)
    check = _index_check(stack)
    assert check["status"] == "ok" and "all" in check["detail"] and "present" in check["detail"], check
    indexes = _in_container(stack, "postgres", "postgres", "psql -qAt -d mlflow -c '\\di mlops_kit_*'")
    assert "mlops_kit_latest_metrics_run_uuid" in indexes


def test_mlflow_runs_without_job_runners_and_within_postgres_connections(stack: Stack) -> None:
    """Job runners (GenAI only) are off by default; the workers' pools fit max_connections."""
    commands = _in_container(stack, "mlflow", "mlflow", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo")
    assert "uvicorn" in commands
    assert "huey" not in commands and "job_runner" not in commands
    environ = _in_container(
        stack, "mlflow", "mlflow", "for p in /proc/[0-9]*; do tr '\\0' '\\n' <$p/environ; done 2>/dev/null | sort -u"
    )
    settings = dict(line.split("=", 1) for line in environ.splitlines() if line.startswith("MLFLOW_SQLALCHEMYSTORE_"))
    workers = int(next(line for line in environ.splitlines() if line.startswith("MLFLOW_WORKERS=")).split("=")[1])
    per_engine = int(settings["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]) + int(
        settings["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]
    )
    max_connections = int(_in_container(stack, "postgres", "postgres", "psql -qAt -c 'SHOW max_connections'"))
    # Tracking, model registry and users: one pool each per worker, with a reserve left over.
    assert workers * 3 * per_engine + 20 <= max_connections
    assert int(settings["MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE"]) > 0


def test_bench_measures_the_stack_as_a_user_and_cleans_up(stack: Stack, tmp_path: Path) -> None:
    """`mlops-kit bench`: every measurement runs; its user, experiments and artifacts are gone afterwards."""
    result = stack.kit(
        "bench", "--quick", "--search-runs", "40", "--artifact-mb", "9", "--workdir", str(tmp_path), "--json"
    )
    figures = json.loads(result.stdout)
    assert figures["log_metric"]["sync"]["calls"] == 200
    assert figures["log_batch"]["metrics"] == 80 * 100
    assert figures["insert_ceiling"]["rows"] == 80 * 100 and figures["insert_ceiling"]["rows_per_second"] > 0
    assert figures["search_runs"]["newest_100"]["runs_returned"] == 40
    assert figures["artifacts"][0]["sha256_identical"] is True
    assert {"mlflow", "postgres", "proxy"} <= {name.split("-")[-2] for name in figures["idle_memory_bytes"]}
    users = json.loads(stack.kit("users", "list", "--json").stdout)
    assert not [u for u in users if u["username"].startswith("mlops-kit-bench-")]
    assert not list((stack.directory / "secrets" / "users").glob("mlops-kit-bench-*"))
    from mlflow import MlflowClient

    assert not [e for e in MlflowClient().search_experiments() if e.name.startswith("mlops-kit-bench-")]
    assert not list(tmp_path.iterdir())


def container_ids(stack: Stack) -> dict[str, str]:
    out = subprocess.run(
        [
            "docker",
            "inspect",
            "--format",
            '{{index .Config.Labels "com.docker.compose.service"}} {{.Id}}',
            *stack.containers(),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in out.splitlines())


def test_up_again_keeps_a_running_stack_and_applies_a_changed_secret(stack: Stack) -> None:
    """`up` is safe to repeat (e.g. from cron to renew the certificate); a changed secret file is applied."""
    before = container_ids(stack)
    stack.kit("up")
    assert container_ids(stack) == before
    (stack.directory / "secrets" / "mlflow_flask_secret_key").write_text("A-New-Csrf-Key-From-The-Test-1")
    stack.kit("up")
    after = container_ids(stack)
    assert after["mlflow"] != before["mlflow"]  # MLflow reads that secret at start
    assert after["proxy"] == before["proxy"] and after["postgres"] == before["postgres"]


def test_down_then_up_keeps_everything(stack: Stack, tmp_path: Path, recorded: dict[str, Any]) -> None:
    assert recorded, "the workflow test must run first"
    stopped = {service: stack.container(service)["Id"] for service in ("proxy", "mlflow", "metrics", "postgres")}
    # `docker compose stop` is what `down` does first: each service must get the stop signal
    # (tini forwards it) and end on its own, not be SIGKILLed with its container's init.
    subprocess.run(
        ["docker", "compose", "--project-name", stack.project, "stop"],
        cwd=stack.directory,
        check=True,
        capture_output=True,
    )
    for service, cid in stopped.items():
        log = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=True)
        assert "[FATAL tini" not in log.stdout + log.stderr, (service, log.stderr[-500:])
    stack.kit("down")
    assert stack.volumes(), "down without --volumes must keep the data volumes"
    stack.kit("up")
    # PostgreSQL's first words after a clean shutdown; after a kill it recovers from its WAL.
    started = stack.logs("postgres")
    assert "database system was shut down at" in started and "not properly shut down" not in started, started
    _assert_workflow_data(stack, tmp_path, recorded)


def test_down_volumes_deletes_the_data(stack: Stack, recorded: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    stack.kit("down", "--volumes", "--yes")
    assert stack.volumes() == []
    stack.kit("up")
    client = MlflowClient(stack.tracking_uri)
    assert client.get_experiment_by_name("ds-workflow") is None
    assert client.search_registered_models() == []
