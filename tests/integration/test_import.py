"""`mlops-kit import`: data written by the real MLflow client into a file store and into SQLite
comes into a kit stack with the same runs, metric points, artifacts (sha256), registered
models, aliases, logged models and traces, read back through the MLflow client.

The source data is made by tests/integration/mlflow_data.py (`populate-full`: the backup
tests' data set plus a run with a dataset input and, on MLflow 3, a prompt with two
versions and an alias) under this
checkout's MLflow 3.17.2, in a subprocess pointed at ``file:`` or ``sqlite:`` URIs; both
sides are digested by the same client code. What may differ is only what the import
must change: artifact URIs (now ``mlflow-artifacts:/``) and the file store's 18-digit
experiment ids, which PostgreSQL's integer cannot hold (renumbered; the old id is a tag).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from mlops_kit.config.settings import SETTINGS_BY_ENV
from tests.harness import REPO_ROOT, Stack, clean_env, cli_argv, free_port, fresh_stack, psql
from tests.integration.containers import SOURCE_DB_PASSWORD, running_plain_postgres
from tests.integration.mlflow_data import MODEL_NAME, digest
from tests.integration.moto_s3 import running_s3_server
from tests.integration.old_releases import MLFLOW2, OLD_PYTHON, build_mlflow2_image

PREFIX = "imp"
ORIGINAL_ID_TAG = "mlops-kit.import.original-experiment-id"
#: An artifact location from the run's folder on: `file:///a/mlruns/1/<run id>/artifacts/model`
#: (a 2.x model version's source) and its rewritten `mlflow-artifacts:/...` name the same files.
RUN_FOLDER = re.compile(r"^(?:file:|mlflow-artifacts:).*?/([0-9a-f]{32}/artifacts(?:/.*)?)$")
HERE = Path(__file__).resolve().parent


def run_data_script(
    command: str, tracking_uri: str, cwd: Path, prefix: str = PREFIX, env: dict[str, str] | None = None
) -> Any:
    """`mlflow_data.py populate[-full|-small]|digest[-full]` in a fresh process (MLflow's globals stay there)."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), command, prefix]
        if command.startswith("populate")
        else [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), command],
        # The file store is in maintenance mode in MLflow 3.x: writing one needs this opt-in.
        env=clean_env(
            {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "PYTHONPATH": str(REPO_ROOT),
                "MLFLOW_ALLOW_FILE_STORE": "true",
                **(env or {}),
            }
        ),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def comparable(data: dict[str, Any]) -> dict[str, Any]:
    """A digest keyed by experiment name, without what an import rewrites (checked separately)."""
    experiments = {}
    for experiment in data["experiments"].values():
        tags = {k: v for k, v in experiment["tags"].items() if k != ORIGINAL_ID_TAG}
        runs = {
            run_id: {k: v for k, v in run.items() if k != "artifact_uri"} for run_id, run in experiment["runs"].items()
        }
        experiments[experiment["name"]] = {**experiment, "tags": tags, "runs": runs, "artifact_location": None}
    # A local store's client gives version numbers as ints, the REST client as strings; a
    # version's source in the artifact store is compared from its run's folder on.
    models = {
        name: {
            "aliases": {alias: str(version) for alias, version in model["aliases"].items()},
            "versions": [[str(v[0]), RUN_FOLDER.sub(r"\1", v[1]), *v[2:]] for v in model["versions"]],
        }
        for name, model in data["registered_models"].items()
    }
    return {"experiments": experiments, "registered_models": models, "prompts": data.get("prompts")}


def kit_digest(stack: Stack) -> dict[str, Any]:
    with stack.as_user("admin"):
        return digest(stack.tracking_uri, inputs_and_prompts=True)


@pytest.fixture(scope="module")
def stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with fresh_stack(tmp_path_factory.mktemp("import"), "mlkt-imp") as stack:
        stack.init()
        stack.kit("up")
        yield stack


@pytest.fixture(scope="module")
def file_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("filestore")
    uri = (folder / "mlruns").as_uri()
    run_data_script("populate-full", uri, folder)
    made_readable(folder / "mlruns")
    return folder / "mlruns", run_data_script("digest-full", uri, folder)


def made_readable(mlruns: Path) -> None:
    """What docs/import.md tells users to do first. MLflow's client can leave a ``meta.yaml``
    only its owner reads (two of its threads rewriting one file at once: the prompt's link to
    its experiment, here), and the import refuses such a store (test_bad_sources_...)."""
    subprocess.run(["chmod", "-R", "a+rX", str(mlruns)], check=True)


def wipe(stack: Stack) -> None:
    """Back to a fresh stack's database (and an empty store) between imports."""
    stack.kit("down", "--volumes", "--yes")
    stack.kit("up")


def test_a_file_store_imports_with_identical_data(stack: Stack, file_store: tuple[Path, dict[str, Any]]) -> None:
    mlruns, before = file_store
    files_before = sorted(p.relative_to(mlruns).as_posix() for p in mlruns.rglob("*"))
    plan = json.loads(stack.kit("import", str(mlruns), "--dry-run", "--json").stdout)
    assert plan["dry_run"] and plan["rows"] == {}
    assert plan["planned_rows"]["runs"] == sum(len(e["runs"]) for e in before["experiments"].values())
    assert plan["artifacts"]["bytes"] > 8 * 2**20
    assert psql(stack, "SELECT count(*) FROM runs").strip() == "0", "a dry run must change nothing"

    report = json.loads(stack.kit("import", str(mlruns), "--yes", "--json").stdout)
    assert report["rows"]["runs"] == plan["planned_rows"]["runs"]
    assert report["artifacts"]["copied_files"] == plan["artifacts"]["files"]
    after = kit_digest(stack)
    assert comparable(after) == comparable(before)
    # Every artifact location is the kit's; the file store's ids came back as tags.
    for experiment in after["experiments"].values():
        assert experiment["artifact_location"].startswith("mlflow-artifacts:/"), experiment["artifact_location"]
        for run in experiment["runs"].values():
            assert run["artifact_uri"].startswith("mlflow-artifacts:/"), run["artifact_uri"]
    old_ids = {e["tags"].get(ORIGINAL_ID_TAG) for e in after["experiments"].values()} - {None}
    assert old_ids == set(before["experiments"]) - {"0"}
    # The source was only read.
    assert sorted(p.relative_to(mlruns).as_posix() for p in mlruns.rglob("*")) == files_before


def test_the_imported_model_loads_by_its_alias(stack: Stack, tmp_path: Path) -> None:
    """The registered model's files came along: the champion loads and predicts through the kit."""
    script = (
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{MODEL_NAME}@champion')\n"
        "print(model.predict(pd.DataFrame({'x': [1, 2]}))['x'].tolist())\n"
    )
    variables = stack.client_variables("admin")
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=clean_env({**variables, "PYTHONPATH": str(REPO_ROOT)}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[2, 4]"


def test_an_import_into_a_stack_with_data_is_refused_without_merge(
    stack: Stack, file_store: tuple[Path, dict[str, Any]]
) -> None:
    mlruns, _ = file_store
    runs = psql(stack, "SELECT count(*) FROM runs").strip()
    result = stack.kit("import", str(mlruns), "--yes", check=False)
    assert result.returncode == 13, result.stdout + result.stderr
    assert "already holds data" in result.stderr and "--merge" in result.stderr
    merged = stack.kit("import", str(mlruns), "--yes", "--merge", check=False)
    assert merged.returncode == 13 and "both have" in merged.stderr, merged.stderr
    assert psql(stack, "SELECT count(*) FROM runs").strip() == runs


def test_a_merge_adds_to_the_data_already_there(stack: Stack, tmp_path: Path) -> None:
    """Another file store (with a run in its Default experiment) joins the imported one."""
    before = kit_digest(stack)
    uri = (tmp_path / "mlruns").as_uri()
    run_ids = run_data_script("populate-small", uri, tmp_path, prefix="merged")
    added = run_data_script("digest-full", uri, tmp_path)
    report = json.loads(stack.kit("import", str(tmp_path / "mlruns"), "--merge", "--yes", "--json").stdout)
    assert report["rows"]["runs"] == 2
    after = kit_digest(stack)
    # What was there is unchanged; the source's Default runs join the kit's Default experiment.
    default = next(k for k, e in after["experiments"].items() if e["name"] == "Default")
    for experiment_id, experiment in before["experiments"].items():
        runs = after["experiments"][experiment_id]["runs"]
        if experiment_id == default:
            runs = {k: v for k, v in runs.items() if k != run_ids[0]}
        assert {**after["experiments"][experiment_id], "runs": runs} == experiment
    source_runs = {k: v for e in comparable(added)["experiments"].values() for k, v in e["runs"].items()}
    kit_runs = {k: v for e in comparable(after)["experiments"].values() for k, v in e["runs"].items()}
    assert {k: kit_runs[k] for k in run_ids} == {k: source_runs[k] for k in run_ids}
    assert after["registered_models"] == before["registered_models"]


def test_a_sqlite_store_imports_with_identical_data(stack: Stack, tmp_path: Path) -> None:
    wipe(stack)
    database = tmp_path / "mlflow.db"
    artifacts = tmp_path / "mlruns"
    # The client alone with a SQLite backend keeps artifacts in ./mlruns (the working folder).
    uri = f"sqlite:///{database}"
    run_data_script("populate-full", uri, tmp_path)
    before = run_data_script("digest-full", uri, tmp_path)
    assert artifacts.is_dir()
    report = json.loads(stack.kit("import", str(database), "--artifacts", str(artifacts), "--yes", "--json").stdout)
    assert report["new_experiment_ids"] == {}, "SQLite ids fit PostgreSQL's integer"
    after = kit_digest(stack)
    assert after["experiments"].keys() == before["experiments"].keys()
    assert comparable(after) == comparable(before)


#: The interrupted import's extra artifacts: enough bytes that the copy takes a while to kill.
BULK_FILES = 128
BULK_FILE_BYTES = 4 << 20


def artifact_store(stack: Stack) -> Path:
    """Where the stack's artifacts volume is on this host (the tests run as root)."""
    found = subprocess.run(
        ["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{stack.project}_artifacts"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return Path(found.stdout.strip())


def one_off_containers(stack: Stack) -> list[str]:
    """The stack's `docker compose run` containers (the import job) now running."""
    labels = [f"label=com.docker.compose.project={stack.project}", "label=com.docker.compose.oneoff=True"]
    found = subprocess.run(
        ["docker", "ps", "-q", *[arg for label in labels for arg in ("--filter", label)]],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return found.stdout.split()


def test_an_interrupted_import_goes_on_where_it_stopped(
    stack: Stack, file_store: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The job is killed while it copies artifacts; the rerun finishes, copies nothing twice, doubles nothing."""
    wipe(stack)
    mlruns = tmp_path / "mlruns"
    shutil.copytree(file_store[0], mlruns)
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    for i in range(BULK_FILES):
        (bulk / f"part-{i:03}.bin").write_bytes(os.urandom(BULK_FILE_BYTES))
    script = (
        "import sys, mlflow\nmlflow.set_experiment('imp-bulk')\n"
        "with mlflow.start_run(run_name='bulk'):\n    mlflow.log_artifacts(sys.argv[1], artifact_path='bulk')\n"
    )
    logged = subprocess.run(
        [sys.executable, "-c", script, str(bulk)],
        env=clean_env({"MLFLOW_TRACKING_URI": mlruns.as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true"}),
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert logged.returncode == 0, logged.stderr[-3000:]
    shutil.rmtree(bulk)
    before = run_data_script("digest-full", mlruns.as_uri(), tmp_path)
    store = artifact_store(stack)

    importing = subprocess.Popen(
        cli_argv("import", str(mlruns), "--yes", "--json"),
        cwd=stack.directory, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    job: list[str] = []
    killed = False
    deadline = time.monotonic() + 600
    while importing.poll() is None and time.monotonic() < deadline:
        job = job or one_off_containers(stack)
        if job and any(store.rglob("part-*.bin")):
            killed = subprocess.run(["docker", "kill", *job], capture_output=True, check=False).returncode == 0
            break
        time.sleep(0.02)
    out, err = importing.communicate(timeout=300)
    assert killed, f"the import ended (exit {importing.returncode}) before it could be killed: {err[-2000:]}"
    assert importing.returncode == 13, out + err
    assert "Traceback" not in err, err
    present = len(list(store.rglob("part-*.bin")))
    assert 0 < present < BULK_FILES, f"the kill came after {present} of {BULK_FILES} files, not mid-copy"
    assert psql(stack, "SELECT count(*) FROM runs").strip() == "0", "no row may arrive before the artifacts"

    report = json.loads(stack.kit("import", str(mlruns), "--yes", "--json").stdout)
    files = report["artifacts"]
    # Every file the first attempt finished is kept (a file is renamed into place only once checked).
    assert files["already_there"] >= present, files
    assert files["copied_files"] + files["already_there"] == files["files"], files
    assert not list(store.rglob("*.mlops-kit-import")), "a partial copy was left behind"
    assert report["rows"]["runs"] == report["planned_rows"]["runs"]
    assert psql(stack, "SELECT count(*) FROM runs").strip() == str(report["planned_rows"]["runs"])
    assert comparable(kit_digest(stack)) == comparable(before)


@pytest.fixture
def source_server(kit_images: None) -> Iterator[int]:
    """Another team's PostgreSQL (the kit's image, serving TCP with a password); its 127.0.0.1 port."""
    with running_plain_postgres(SETTINGS_BY_ENV["MLOPS_KIT_POSTGRES_IMAGE"].default) as port:
        yield port


def test_another_servers_postgresql_imports_with_identical_data(
    stack: Stack, source_server: int, tmp_path: Path
) -> None:
    """A PostgreSQL database written by MLflow 3.17.2 (artifacts in a folder) is read, never written."""
    wipe(stack)
    # The client alone with a database backend keeps artifacts in ./mlruns (the working folder).
    source = f"postgresql+psycopg2://mlflow:{SOURCE_DB_PASSWORD}@127.0.0.1:{source_server}/mlflow"
    run_data_script("populate-full", source, tmp_path)
    before = run_data_script("digest-full", source, tmp_path)

    # A wrong password: one line that names the reason, and never the password tried.
    wrong = stack.kit(
        "import",
        f"postgresql://mlflow@127.0.0.1:{source_server}/mlflow",
        "--yes",
        env={"PGPASSWORD": "not-it-42"},
        check=False,
    )
    assert wrong.returncode == 13, wrong.stdout + wrong.stderr
    assert "cannot read the source database" in wrong.stderr, wrong.stderr
    assert "password authentication failed" in wrong.stderr and "Traceback" not in wrong.stderr, wrong.stderr
    assert "not-it-42" not in wrong.stdout + wrong.stderr

    # The password in the URL (as operators paste it): the job gets it by environment only.
    url = f"postgresql://mlflow:{SOURCE_DB_PASSWORD}@127.0.0.1:{source_server}/mlflow"
    result = stack.kit("-v", "import", url, "--artifacts", str(tmp_path / "mlruns"), "--yes", "--json")
    assert SOURCE_DB_PASSWORD not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["new_experiment_ids"] == {} and report["kept_uris"] == {}
    after = kit_digest(stack)
    assert after["experiments"].keys() == before["experiments"].keys()
    assert comparable(after) == comparable(before)
    assert run_data_script("digest-full", source, tmp_path) == before, "the source must be unchanged"


@pytest.fixture(scope="module")
def mlflow2_file_store(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A file store written by MLflow 2.22's own client (in its image), and what that client reads back."""
    image = build_mlflow2_image()
    folder = tmp_path_factory.mktemp("filestore2")
    folder.chmod(0o777)  # the image's user writes it

    def old_client(*arguments: str) -> Any:
        result = subprocess.run(
            [
                "docker", "run", "--rm", "--network", "none",
                "-v", f"{folder}:/work", "-v", f"{HERE}:/data:ro", "-w", "/work",
                "--env", "MLFLOW_TRACKING_URI=file:///work/mlruns",
                "--entrypoint", OLD_PYTHON, image, "/data/mlflow_data.py", *arguments,
            ],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    old_client("populate-full", PREFIX)
    return folder / "mlruns", old_client("digest-full")


def test_a_file_store_from_mlflow_2_imports_with_identical_data(
    stack: Stack, mlflow2_file_store: tuple[Path, dict[str, Any]]
) -> None:
    """MLflow 2.x wrote it, 2.x read it back; the kit's 3.x reads the same after the import."""
    mlruns, before = mlflow2_file_store
    wipe(stack)
    report = json.loads(stack.kit("import", str(mlruns), "--yes", "--json").stdout)
    assert report["rows"]["runs"] == sum(len(e["runs"]) for e in before["experiments"].values())
    after = kit_digest(stack)
    assert comparable(after) == comparable(before), f"MLflow {MLFLOW2} data changed on the way"


@contextmanager
def mlflow_server(folder: Path, artifacts: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """A temporary `mlflow server` (this checkout's MLflow) on ``folder``/mlflow.db, as a team runs
    it, with ``artifacts`` its artifact options; yields its URL."""
    port = free_port()
    log = (folder / "server.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", *artifacts, "--workers", "1",
        ],
        cwd=folder, env=clean_env(env), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (folder / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture
def served_source(tmp_path: Path) -> Iterator[str]:
    """A server with its own --artifacts-destination: clients log mlflow-artifacts:/ URIs."""
    with mlflow_server(tmp_path, ["--artifacts-destination", str(tmp_path / "mlartifacts")]) as url:
        yield url


def test_a_servers_database_imports_with_its_artifact_destination(
    stack: Stack, served_source: str, tmp_path: Path
) -> None:
    """The source is digested through the server that wrote it; its mlflow-artifacts:/ files
    come from --artifacts, and without it the import refuses rather than lose them."""
    wipe(stack)
    run_data_script("populate-full", served_source, tmp_path)
    before = run_data_script("digest-full", served_source, tmp_path)
    database = tmp_path / "mlflow.db"

    plan = json.loads(stack.kit("import", str(database), "--dry-run", "--json").stdout)
    assert plan["unresolved_uris"] > 0
    refused = stack.kit("import", str(database), "--yes", check=False)
    assert refused.returncode == 13 and "--artifacts" in refused.stderr, refused.stderr
    assert psql(stack, "SELECT count(*) FROM runs").strip() == "0"

    report = json.loads(
        stack.kit("import", str(database), "--artifacts", str(tmp_path / "mlartifacts"), "--yes", "--json").stdout
    )
    assert report["unresolved_uris"] == 0 and report["kept_uris"] == {}
    assert comparable(kit_digest(stack)) == comparable(before)


def test_a_servers_database_with_its_artifacts_in_a_bucket_imports_with_identical_data(
    stack: Stack, tmp_path: Path
) -> None:
    """A server with --default-artifact-root s3://...: its clients wrote straight into the bucket
    (a real S3 server enforcing signatures), and the kit reads it with the keys in the environment."""
    wipe(stack)
    with running_s3_server(REPO_ROOT, f"mlkt-imp-s3-{uuid.uuid4().hex[:6]}", ["team-artifacts"]) as s3:
        keys = {
            "AWS_ACCESS_KEY_ID": s3.access_key_id,
            "AWS_SECRET_ACCESS_KEY": s3.secret_access_key,
            "AWS_DEFAULT_REGION": s3.region,
            "MLFLOW_S3_ENDPOINT_URL": s3.host_endpoint,
        }
        root = ["--default-artifact-root", "s3://team-artifacts/mlflow", "--no-serve-artifacts"]
        with mlflow_server(tmp_path, root, env=keys) as url:
            run_data_script("populate-full", url, tmp_path, env=keys)
            before = run_data_script("digest-full", url, tmp_path, env=keys)
        objects = s3.client().list_objects_v2(Bucket="team-artifacts", Prefix="mlflow/")["KeyCount"]
        source = [str(tmp_path / "mlflow.db"), "--artifacts", "s3://team-artifacts/mlflow"]

        wrong_key = {**keys, "AWS_SECRET_ACCESS_KEY": "not-the-key"}
        wrong = stack.kit("import", *source, "--dry-run", env=wrong_key, check=False)
        assert wrong.returncode == 13 and "SignatureDoesNotMatch" in wrong.stderr, wrong.stderr
        assert "not-the-key" not in wrong.stderr + wrong.stdout and "Traceback" not in wrong.stderr
        plan = json.loads(stack.kit("import", *source, "--dry-run", "--json", env=keys).stdout)
        assert plan["bucket"]["objects"] == objects > 0 and plan["kept_uris"] == {}
        assert psql(stack, "SELECT count(*) FROM runs").strip() == "0"

        report = json.loads(stack.kit("import", *source, "--yes", "--json", env=keys).stdout)
        assert report["bucket"]["fetched"] == objects and report["kept_uris"] == {}
        assert report["artifacts"]["bytes"] > 8 * 2**20
    assert comparable(kit_digest(stack)) == comparable(before)
    # The bucket's copy was scratch: nothing of it stays on the host.
    assert not any((stack.directory / "backups" / "import-work").glob("*"))


def test_bad_sources_get_one_line_errors(stack: Stack, file_store: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    # A file store with a file only its owner (root, not the job's user) may read: MLflow's
    # converter would skip that model without a word; the import refuses, naming the file.
    private = tmp_path / "private" / "mlruns"
    shutil.copytree(file_store[0], private)
    meta = next(private.glob("models/*/meta.yaml"))
    meta.chmod(0o600)
    refused = stack.kit("import", str(private), "--dry-run", check=False)
    said = " ".join(refused.stderr.split())
    assert refused.returncode == 13 and "Traceback" not in refused.stderr, refused.stderr
    assert "cannot be read by the import" in said and meta.relative_to(private).as_posix() in said, said
    assert "chmod -R a+rX" in said, said
    not_a_store = tmp_path / "photos"
    not_a_store.mkdir()
    (not_a_store / "cat.jpg").write_bytes(b"\xff\xd8")
    for source, expected in (
        (str(tmp_path / "missing"), "does not exist"),
        (str(not_a_store), "holds no MLflow file store"),
        (str(not_a_store / "cat.jpg"), "neither a folder nor a SQLite database"),
        ("mysql://someone@elsewhere/mlflow", "only PostgreSQL databases"),
        ("postgresql://someone@/mlflow", "needs a host and a database name"),
    ):
        result = stack.kit("import", source, "--yes", check=False)
        assert result.returncode == 2, (source, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
