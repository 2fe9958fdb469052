"""`mlops-kit import`: data written by the real MLflow client into a file store and into SQLite
comes into a kit stack with the same runs, metric points, artifacts (sha256), registered
models, aliases, logged models and traces, read back through the MLflow client.

The source data is made by tests/integration/mlflow_data.py (`populate`) under this
checkout's MLflow 3.17.2, in a subprocess pointed at ``file:`` or ``sqlite:`` URIs; both
sides are digested by the same client code. What may differ is only what the import
must change: artifact URIs (now ``mlflow-artifacts:/``) and the file store's 18-digit
experiment ids, which PostgreSQL's integer cannot hold (renumbered; the old id is a tag).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import REPO_ROOT, Stack, clean_env, fresh_stack, psql
from tests.integration.mlflow_data import MODEL_NAME, digest

PREFIX = "imp"
ORIGINAL_ID_TAG = "mlops-kit.import.original-experiment-id"


def run_data_script(command: str, tracking_uri: str, cwd: Path) -> Any:
    """`mlflow_data.py populate|digest` in a fresh process (MLflow's globals stay there)."""
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), command, PREFIX]
        if command == "populate"
        else [sys.executable, str(REPO_ROOT / "tests" / "integration" / "mlflow_data.py"), command],
        # The file store is in maintenance mode in MLflow 3.x: writing one needs this opt-in.
        env=clean_env(
            {"MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(REPO_ROOT), "MLFLOW_ALLOW_FILE_STORE": "true"}
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
    # A local store's client gives version numbers as ints, the REST client as strings.
    models = {
        name: {
            "aliases": {alias: str(version) for alias, version in model["aliases"].items()},
            "versions": [[str(v[0]), *v[1:]] for v in model["versions"]],
        }
        for name, model in data["registered_models"].items()
    }
    return {"experiments": experiments, "registered_models": models}


def kit_digest(stack: Stack) -> dict[str, Any]:
    with stack.as_user("admin"):
        return digest(stack.tracking_uri)


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
    run_data_script("populate", uri, folder)
    return folder / "mlruns", run_data_script("digest", uri, folder)


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


def test_a_sqlite_store_imports_with_identical_data(stack: Stack, tmp_path: Path) -> None:
    wipe(stack)
    database = tmp_path / "mlflow.db"
    artifacts = tmp_path / "mlruns"
    # The client alone with a SQLite backend keeps artifacts in ./mlruns (the working folder).
    uri = f"sqlite:///{database}"
    run_data_script("populate", uri, tmp_path)
    before = run_data_script("digest", uri, tmp_path)
    assert artifacts.is_dir()
    report = json.loads(stack.kit("import", str(database), "--artifacts", str(artifacts), "--yes", "--json").stdout)
    assert report["new_experiment_ids"] == {}, "SQLite ids fit PostgreSQL's integer"
    after = kit_digest(stack)
    assert after["experiments"].keys() == before["experiments"].keys()
    assert comparable(after) == comparable(before)


def test_bad_sources_get_one_line_errors(stack: Stack, tmp_path: Path) -> None:
    not_a_store = tmp_path / "photos"
    not_a_store.mkdir()
    (not_a_store / "cat.jpg").write_bytes(b"\xff\xd8")
    for source, expected in (
        (str(tmp_path / "missing"), "does not exist"),
        (str(not_a_store), "holds no MLflow file store"),
        (str(not_a_store / "cat.jpg"), "neither a folder nor a SQLite database"),
        ("postgresql://someone@elsewhere/mlflow", "not supported yet"),
    ):
        result = stack.kit("import", source, "--yes", check=False)
        assert result.returncode == 2, (source, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
