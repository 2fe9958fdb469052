"""The s3 artifact mode end to end, against a real S3 server (moto, built from PyPI).

One stack is initialised with `--artifact-store s3` and reaches the S3 server over a
Docker network (MLOPS_KIT_S3_NETWORK), as it would an S3 server in another Compose
project. The test process plays the data scientist's laptop: it sees only the HTTPS
front door, never the S3 server's network name. In order: the store check refuses
wrong keys and a missing bucket in one line; `up`; the data-scientist workflow with
artifacts landing in the bucket; a 24 MiB download and a >500 MiB round trip with
proxy multipart forced on (no presigned URL ever reaches the client); backup, loss
of the bucket's objects, restore with an identical digest; a migration s3 -> volume
and back, each with an identical digest. Nothing mocks Docker, MLflow or S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO_ROOT, Stack, clean_env, cli_argv, fresh_stack
from tests.integration.gc_scenario import run_scenario
from tests.integration.mlflow_data import digest, populate
from tests.integration.moto_s3 import S3Server, running_s3_server

PREFIX = "s3t"
#: The populated experiments (the large-file test adds its own after the digest).
NAMES = [f"{PREFIX}-experiment-0", f"{PREFIX}-experiment-1"]
BUCKET = "mlkt-artifacts"
#: Bounded client retries: a wrong turn fails fast instead of retrying for minutes.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "300"}


@pytest.fixture(scope="module")
def s3_server(kit_images: None) -> Iterator[S3Server]:
    """The test S3 server (testcontainers: removed with its network when the module ends)."""
    with running_s3_server(REPO_ROOT, f"mlkt-s3-{os.getpid()}", [BUCKET]) as running:
        yield running


@pytest.fixture(scope="module")
def stack(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("s3"), prefix="mlkt-s3") as stack:
        keys = f"{s3_server.access_key_id}\n{s3_server.secret_access_key}\n"
        stack.init(
            "--artifact-store",
            "s3",
            "--s3-endpoint-url",
            s3_server.endpoint_in_network,
            "--s3-bucket",
            BUCKET,
            "--s3-region",
            s3_server.region,
            "--s3-network",
            s3_server.network,
            "--s3-credentials-stdin",
            input=keys,
        )
        yield stack


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CLIENT_ENV.items():
        monkeypatch.setenv(name, value)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def bucket_keys(server: S3Server, prefix: str = "") -> dict[str, int]:
    client = server.client()
    keys: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            keys[item["Key"]] = int(item["Size"])
    return keys


def test_wrong_keys_are_refused_in_one_line(stack: Stack) -> None:
    secret = stack.directory / "secrets" / "s3_secret_access_key"
    original = secret.read_text()
    secret.write_text("not-the-right-secret-0123456789abcdef\n")
    try:
        result = stack.kit("up", check=False)
    finally:
        secret.write_text(original)
    line = one_line_error(result)
    assert result.returncode == 3
    assert "refused the S3 keys" in line and "s3_secret_access_key" in line
    # Without whitespace: a secret the console wrapped over two lines would still be found.
    printed = "".join((result.stderr + result.stdout).split())
    assert original.strip() not in printed
    assert "not-the-right-secret" not in printed
    assert stack.containers() == []  # refused before any container was made


def test_missing_bucket_is_refused_in_one_line(stack: Stack) -> None:
    result = stack.kit("up", check=False, env={"MLOPS_KIT_S3_BUCKET": "no-such-bucket"})
    line = one_line_error(result)
    assert result.returncode == 3
    assert "bucket no-such-bucket does not exist" in line and "MLOPS_KIT_S3_BUCKET" in line
    doctor = stack.kit("doctor", "--json", check=False, env={"MLOPS_KIT_S3_BUCKET": "no-such-bucket"})
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["artifact store (s3)"]["status"] == "fail"


def test_up_is_healthy_and_proxies_every_transfer(stack: Stack) -> None:
    stack.kit("up")
    status = stack.status()
    assert status["healthy"] is True
    doctor = json.loads(stack.kit("doctor", "--json").stdout)
    store = next(c for c in doctor["checks"] if c["name"] == "artifact store (s3)")
    assert store["status"] == "ok", store
    # No presigned transfer is advertised: clients never see the S3 endpoint.
    info = stack.session(None).get(f"{stack.tracking_uri}/api/3.0/mlflow/server-info", timeout=30).json()
    assert info["multipart_uploads_enabled"] is False
    assert info["multipart_downloads_enabled"] is False


@pytest.fixture(scope="module")
def populated(stack: Stack, s3_server: S3Server) -> dict[str, Any]:
    if not stack.status().get("healthy"):
        stack.kit("up")
    with stack.as_user("admin"):
        populate(stack.tracking_uri, PREFIX)
        return digest(stack.tracking_uri, NAMES)


def test_artifacts_land_in_the_bucket(stack: Stack, s3_server: S3Server, populated: dict[str, Any]) -> None:
    keys = bucket_keys(s3_server, "artifacts/")
    assert any(key.endswith("model-weights/weights.bin") for key in keys), sorted(keys)[:20]
    # The 9 MiB file went up in parts (boto3's multipart threshold is 8 MiB).
    weights = next(key for key in keys if key.endswith("model-weights/weights.bin"))
    assert "-" in s3_server.client().head_object(Bucket=BUCKET, Key=weights)["ETag"]


def test_large_files_round_trip_through_the_front_door(stack: Stack, tmp_path: Path, populated: Any) -> None:
    """24 MiB, then 520 MiB with proxy multipart forced on, each byte-identical after download."""
    import mlflow
    from mlflow.tracking import MlflowClient

    for size_mib, forced in (
        (24, {}),
        (520, {"MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true", "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "true"}),
    ):
        source = tmp_path / f"blob-{size_mib}.bin"
        with source.open("wb") as handle:
            for _ in range(size_mib):
                handle.write(os.urandom(2**20))
        expected = hashlib.sha256(source.read_bytes()).hexdigest()
        with stack.as_user("admin"):
            saved = {k: os.environ.get(k) for k in forced}
            os.environ.update(forced)
            try:
                client = MlflowClient(stack.tracking_uri)
                experiment = mlflow.set_experiment(f"{PREFIX}-large")
                run = client.create_run(experiment.experiment_id)
                started = time.monotonic()
                client.log_artifact(run.info.run_id, str(source), "big")
                target = tmp_path / f"down-{size_mib}"
                target.mkdir()
                path = client.download_artifacts(run.info.run_id, f"big/{source.name}", str(target))
                seconds = time.monotonic() - started
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        digest_after = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert digest_after == expected, size_mib
        print(f"{size_mib} MiB up and down through the proxy in {seconds:.1f} s")
        source.unlink()
        Path(path).unlink()


def test_backup_and_restore_after_losing_the_bucket(
    stack: Stack, s3_server: S3Server, populated: dict[str, Any]
) -> None:
    first = json.loads(stack.kit("backup", "--json").stdout)
    assert first["artifact_files"] >= 8
    second = json.loads(stack.kit("backup", "--json").stdout)
    assert second["data_added_bytes"] < 2 * 2**20  # incremental: no object fetched or stored again
    # The bucket's objects are lost (and the database with the volumes).
    client = s3_server.client()
    for key in bucket_keys(s3_server, "artifacts/"):
        client.delete_object(Bucket=BUCKET, Key=key)
    stack.kit("down", "--volumes", "--yes")
    stack.kit("restore", "--yes")
    env = (stack.directory / ".env").read_text()
    assert "MLOPS_KIT_S3_PREFIX=artifacts-r" in env
    with stack.as_user("admin"):
        assert digest(stack.tracking_uri, NAMES) == populated


def test_migration_to_volume_and_back_keeps_every_artifact(
    stack: Stack, s3_server: S3Server, populated: dict[str, Any]
) -> None:
    before = populated
    # Why a migration is a copy plus a switch: no row of the tracking database names the
    # store; runs, experiments, models and traces hold the proxy's mlflow-artifacts:/ URIs.
    rows = subprocess.run(
        ["docker", "exec", "--user", "postgres", f"{stack.project}-postgres-1", "pg_dump", "--data-only", "mlflow"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "mlflow-artifacts:/" in rows
    for store_name in ("s3://", BUCKET, "/mlflow/artifacts"):
        assert store_name not in rows, store_name
    plan = json.loads(stack.kit("artifacts", "migrate", "--to", "volume", "--dry-run", "--json").stdout)
    assert plan["dry_run"] is True and plan["files"] >= 8 and plan["copied"] == 0
    # Killed mid-copy (an SSH session lost, say): nothing is switched, and running the
    # same command again carries on into the same target instead of starting another.
    generation = interrupt_migration(stack, "volume")
    assert "MLOPS_KIT_ARTIFACT_STORE=s3" in (stack.directory / ".env").read_text()
    moved = json.loads(stack.kit("artifacts", "migrate", "--to", "volume", "--yes", "--json").stdout)
    assert moved["target"].endswith(f"_artifacts-{generation}"), moved
    assert moved["copied"] + moved["skipped"] == moved["files"] == plan["files"]
    assert not (stack.directory / ".mlops-kit-migration.json").exists()
    assert "MLOPS_KIT_ARTIFACT_STORE=volume" in (stack.directory / ".env").read_text()
    assert stack.status()["healthy"] is True
    with stack.as_user("admin"):
        assert digest(stack.tracking_uri, NAMES) == before
    # The tracking database never named the store: every artifact URI is the proxy's.
    back = json.loads(stack.kit("artifacts", "migrate", "--to", "s3", "--yes", "--json").stdout)
    assert back["copied"] == back["files"] == plan["files"]
    env = (stack.directory / ".env").read_text()
    assert "MLOPS_KIT_ARTIFACT_STORE=s3" in env and "MLOPS_KIT_S3_PREFIX=artifacts-m" in env
    with stack.as_user("admin"):
        assert digest(stack.tracking_uri, NAMES) == before


def test_gc_frees_the_bucket_and_keeps_everything_else(stack: Stack, s3_server: S3Server) -> None:
    # The same cases as on the volume store (tests/integration/gc_scenario.py), with the
    # bytes counted in the bucket itself (after the migrations above: under a new prefix).
    figures = run_scenario(stack, lambda: bucket_keys(s3_server))
    print(f"gc on the s3 store: {figures}")


def test_an_import_lands_in_the_bucket(stack: Stack, s3_server: S3Server, tmp_path: Path) -> None:
    """A file store merged into the s3 stack: its files are objects under the stack's prefix.

    A file store, because its experiment's id (18 digits) is renumbered past the kit's: a
    SQLite source's experiment 1 would clash with the kit's, and --merge refuses that."""
    mlruns = tmp_path / "mlruns"
    made = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), "populate-small", "s3imp"],
        env=clean_env(
            {"MLFLOW_TRACKING_URI": mlruns.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONPATH": str(REPO_ROOT)}
        ),
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    run_ids = json.loads(made.stdout.strip().splitlines()[-1])
    where = [str(mlruns), "--merge", "--yes", "--json"]
    report = json.loads(stack.kit("import", *where).stdout)
    assert report["artifacts"]["copied_files"] == 2 and report["rows"]["runs"] == 2
    prefix = stack.env_values()["MLOPS_KIT_S3_PREFIX"]
    keys = bucket_keys(s3_server, prefix + "/")
    for run_id in run_ids:
        assert any(key.endswith(f"/{run_id}/artifacts/note.txt") for key in keys), (run_id, sorted(keys)[:5])
    from mlflow.tracking import MlflowClient

    with stack.as_user("admin"), tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(stack.tracking_uri)
        for run_id in run_ids:
            assert Path(client.download_artifacts(run_id, "note.txt", tmp)).read_text() == "s3imp"
    # The same import again is refused before anything is sent: the runs are there.
    again = stack.kit("import", *where, check=False)
    assert again.returncode == 13 and "both have" in again.stderr, again.stderr


def interrupt_migration(stack: Stack, store: str) -> str:
    """Start `artifacts migrate --to STORE`, SIGKILL it once its copy job runs; return the target's generation."""
    state = stack.directory / ".mlops-kit-migration.json"
    jobs = ["docker", "ps", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"]
    jobs += ["--filter", "label=com.docker.compose.service=backup"]
    process = subprocess.Popen(
        cli_argv("artifacts", "migrate", "--to", store, "--yes"),
        cwd=stack.directory,
        env=clean_env(None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None:
            if state.exists() and subprocess.run(jobs, capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.1)
        assert process.poll() is None, "the migration finished before it could be interrupted"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # The job container outlives its killed client: let it finish, as it would after a lost session.
    for container in subprocess.run([*jobs, "--all"], capture_output=True, text=True).stdout.split():
        subprocess.run(["docker", "wait", container], capture_output=True, check=False)
        subprocess.run(["docker", "rm", "--force", container], capture_output=True, check=False)
    generation: str = json.loads(state.read_text())["generation"]
    return generation
