"""`mlops-kit import` on the host side: recognising sources, and how the job is started (runner patched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_kit.config.envfile import init_env_file
from mlops_kit.config.loader import KitConfig, load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import ConfigError
from mlops_kit.masking import mask
from mlops_kit.runner import CommandResult
from mlops_kit.workflows import importing
from mlops_kit.workflows.importing import SOURCE_PASSWORD_VARIABLE, import_data, recognise_source
from tests.unit.test_compose import HOST, FakeRunner

PASSWORD = "s3cr3t-Only-Here"


def test_a_database_url_loses_its_password_which_is_masked_from_then_on() -> None:
    source = recognise_source(f"postgresql://team:{PASSWORD}@db.corp:5433/mlflow?sslmode=require")
    assert source.kind == "postgresql"
    assert source.url == "postgresql://team@db.corp:5433/mlflow?sslmode=require"
    assert source.password == PASSWORD
    assert PASSWORD not in repr(source) and PASSWORD not in source.describe()
    assert PASSWORD not in mask(f"connection failed for {PASSWORD}")


def test_a_password_in_the_query_or_one_that_breaks_the_url_never_shows() -> None:
    source = recognise_source(f"postgresql://team@db/mlflow?sslmode=require&password={PASSWORD}")
    assert source.password == PASSWORD and source.url == "postgresql://team@db/mlflow?sslmode=require"
    with pytest.raises(ConfigError) as broken:
        recognise_source("postgresql://team:se/cr3t@db:5432/mlflow")
    assert "does not parse" in str(broken.value) and "cr3t" not in str(broken.value) + str(broken.value.hint)


def test_the_password_may_come_from_pgpassword_and_the_url_wins() -> None:
    assert recognise_source("postgres://team@db/mlflow", password="from-env").password == "from-env"
    assert recognise_source("postgresql+psycopg2://team:in-url@db/mlflow", password="from-env").password == "in-url"
    assert recognise_source("postgresql+psycopg2://team@db/mlflow").url == "postgresql://team@db/mlflow"


@pytest.mark.parametrize(
    ("source", "artifacts", "expected"),
    [
        ("mysql://u@db/mlflow", None, "only PostgreSQL databases"),
        ("postgresql://u@db/", None, "needs a host and a database name"),
        ("postgresql:///mlflow", None, "needs a host and a database name"),
        ("postgresql://u@db/mlflow", "gs://bucket/artifacts", "a folder or an s3:// bucket"),
        ("postgresql://u@db/mlflow", "s3://Bad_Bucket/artifacts", "the bucket 'Bad_Bucket' must be an S3 bucket"),
    ],
)
def test_database_sources_that_cannot_be_read_say_why(source: str, artifacts: str | None, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        recognise_source(source, artifacts, environ=BUCKET_KEYS)


BUCKET_KEYS = {"AWS_ACCESS_KEY_ID": "AKIDSOURCE", "AWS_SECRET_ACCESS_KEY": PASSWORD, "HOME": "/root"}


def test_a_bucket_as_artifact_root_takes_its_keys_from_the_environment_and_masks_them() -> None:
    endpoint = "https://s3.corp:9000"
    source = recognise_source(
        "postgresql://u@db/mlflow", "s3://team-bucket/mlflow/", s3_endpoint_url=endpoint, environ=BUCKET_KEYS
    )
    assert source.bucket is not None and source.bucket.uri == "s3://team-bucket/mlflow"
    assert source.bucket.endpoint_url == "https://s3.corp:9000"
    # Only the AWS keys are kept, and they never show.
    assert source.bucket.environment == {"AWS_ACCESS_KEY_ID": "AKIDSOURCE", "AWS_SECRET_ACCESS_KEY": PASSWORD}
    assert PASSWORD not in repr(source) and "(artifacts: s3://team-bucket/mlflow)" in source.describe()
    assert PASSWORD not in mask(f"denied for {PASSWORD}")


@pytest.mark.parametrize(
    ("environ", "endpoint", "expected"),
    [
        ({}, None, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set"),
        ({"AWS_ACCESS_KEY_ID": "x"}, None, "^AWS_SECRET_ACCESS_KEY not set"),
        (
            BUCKET_KEYS,
            "ftp://s3.corp",
            r"--artifacts-endpoint-url \(MLOPS_KIT_IMPORT_S3_ENDPOINT_URL\) must be an http",
        ),
    ],
)
def test_a_bucket_that_cannot_be_read_says_which_setting_is_wrong(
    environ: dict[str, str], endpoint: str | None, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        recognise_source("postgresql://u@db/mlflow", "s3://team-bucket", s3_endpoint_url=endpoint, environ=environ)


def counts_as_running(kit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> KitConfig:
    """An initialised kit folder whose stack counts as running (the job's runner is the test's)."""
    settings = {"COMPOSE_PROJECT_NAME": "unit-import", "MLOPS_KIT_BACKUP_DIR": str(kit_dir / "b")}
    init_env_file(kit_dir, settings, host=HOST)
    monkeypatch.setattr(importing, "require_running", lambda project: None)
    monkeypatch.setattr(importing.os, "chown", lambda *a: None)  # the job's uid, in a test not run as root
    return load_config(kit_dir, environ={})


def test_the_database_is_read_by_a_container_without_the_stacks_secrets_on_the_hosts_network(
    kit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = counts_as_running(kit_dir, monkeypatch)
    staged = {"ok": True, "staged": "/import/work/source.db"}
    answer = {"ok": True, "dry_run": True, "plan": {"source": {"kind": "postgresql", "rows": {"runs": 3}}}}
    runner = FakeRunner(
        answers=[
            CommandResult(argv=[], returncode=0, stdout=json.dumps(staged)),
            CommandResult(argv=[], returncode=0, stdout=json.dumps(answer)),
        ]
    )
    source = recognise_source(f"postgresql://team:{PASSWORD}@db.corp/mlflow")

    report = import_data(ComposeProject(config, runner), source, dry_run=True)

    (stage, stage_env), (job, job_env) = runner.calls
    assert stage[:2] == ["docker", "run"] and stage[stage.index("--network") + 1] == "host"
    assert stage[stage.index("--env") + 1] == SOURCE_PASSWORD_VARIABLE
    assert stage_env[SOURCE_PASSWORD_VARIABLE] == PASSWORD
    assert "--stage-only" in stage and stage[stage.index("--source") + 1] == "postgresql://team@db.corp/mlflow"
    # Only the scratch folder is mounted; no secret, no stack volume, no capability.
    assert [stage[i + 1].split(":")[1] for i, a in enumerate(stage) if a == "--volume"] == ["/import/work"]
    assert "/run/secrets" not in " ".join(stage) and stage[stage.index("--cap-drop") + 1] == "ALL"
    # The import itself is the usual job, with no network and without the password.
    assert job[:2] == ["docker", "compose"] and "--network" not in job and SOURCE_PASSWORD_VARIABLE not in job_env
    assert job[job.index("--kind") + 1] == "sqlite" and job[job.index("--origin") + 1] == "postgresql"
    assert PASSWORD not in " ".join(stage + job)
    assert report.planned_rows == {"runs": 3}


def test_a_source_bucket_is_mirrored_by_a_container_holding_only_its_keys(
    kit_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = counts_as_running(kit_dir, monkeypatch)
    listed = {"ok": True, "bucket": {"uri": "s3://team-bucket/mlflow", "objects": 7, "bytes": 4096}}
    runner = FakeRunner(
        answers=[
            CommandResult(argv=[], returncode=0, stdout=json.dumps(listed)),
            CommandResult(argv=[], returncode=0, stdout='{"ok": true, "dry_run": true}'),
        ]
    )
    database = tmp_path / "mlflow.db"
    database.write_bytes(importing.SQLITE_HEADER)
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    source = recognise_source(
        str(database), "s3://team-bucket/mlflow", s3_endpoint_url="http://127.0.0.1:9000", s3_ca_file=str(ca),
        environ=BUCKET_KEYS,
    )  # fmt: skip

    report = import_data(ComposeProject(config, runner), source, dry_run=True)

    (fetch, fetch_env), (job, job_env) = runner.calls
    assert fetch[:2] == ["docker", "run"] and fetch[fetch.index("--network") + 1] == "host"
    assert fetch[fetch.index("--fetch-bucket") + 1] == "s3://team-bucket/mlflow" and "--list-only" in fetch
    passed = {fetch[i + 1] for i, a in enumerate(fetch) if a == "--env"}
    assert passed == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLOPS_KIT_IMPORT_S3_ENDPOINT_URL", "AWS_CA_BUNDLE"}
    assert fetch_env["AWS_SECRET_ACCESS_KEY"] == PASSWORD and PASSWORD not in " ".join(fetch + job)
    assert f"{ca}:/import/bucket-ca.pem:ro" in fetch
    # The import reads the mirror as the bucket's stand-in, with none of the bucket's keys.
    assert job[job.index("--artifacts") + 1] == "/import/work/bucket"
    assert job[job.index("--artifacts-uri") + 1] == "s3://team-bucket/mlflow"
    assert "AWS_SECRET_ACCESS_KEY" not in job_env
    assert report.bucket == listed["bucket"]


def test_file_sources_get_no_network(kit_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = counts_as_running(kit_dir, monkeypatch)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    runner = FakeRunner(answers=[CommandResult(argv=[], returncode=0, stdout='{"ok": true, "dry_run": true}')])
    import_data(ComposeProject(config, runner), recognise_source(str(tmp_path)), dry_run=True)
    assert len(runner.calls) == 1
    argv, env = runner.calls[0]
    assert argv[:2] == ["docker", "compose"] and SOURCE_PASSWORD_VARIABLE not in env
    assert f"{tmp_path / 'mlruns'}:/import/source:ro" in argv
