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
from mlops_kit.workflows.importing import (
    IMPORT_NETWORK_OVERLAY,
    SOURCE_PASSWORD_VARIABLE,
    import_data,
    recognise_source,
)
from tests.unit.test_compose import HOST, FakeRunner

PASSWORD = "s3cr3t-Only-Here"


def test_a_database_url_loses_its_password_which_is_masked_from_then_on() -> None:
    source = recognise_source(f"postgresql://team:{PASSWORD}@db.corp:5433/mlflow?sslmode=require")
    assert source.kind == "postgresql"
    assert source.url == "postgresql://team@db.corp:5433/mlflow?sslmode=require"
    assert source.password == PASSWORD
    assert PASSWORD not in repr(source) and PASSWORD not in source.describe()
    assert PASSWORD not in mask(f"connection failed for {PASSWORD}")


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
        ("postgresql://u@db/mlflow", "s3://bucket/artifacts", "artifacts in a bucket"),
    ],
)
def test_database_sources_that_cannot_be_read_say_why(source: str, artifacts: str | None, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        recognise_source(source, artifacts)


def counts_as_running(kit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> KitConfig:
    """An initialised kit folder whose stack counts as running (the job's runner is the test's)."""
    settings = {"COMPOSE_PROJECT_NAME": "unit-import", "MLOPS_KIT_BACKUP_DIR": str(kit_dir / "b")}
    init_env_file(kit_dir, settings, host=HOST)
    monkeypatch.setattr(importing, "require_running", lambda project: None)
    monkeypatch.setattr(importing.os, "chown", lambda *a: None)  # the job's uid, in a test not run as root
    return load_config(kit_dir, environ={})


def test_the_job_reads_the_database_on_the_hosts_network_with_the_password_only_in_its_environment(
    kit_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = counts_as_running(kit_dir, monkeypatch)
    answer = {"ok": True, "dry_run": True, "plan": {"source": {"rows": {"runs": 3}}}}
    runner = FakeRunner(answers=[CommandResult(argv=[], returncode=0, stdout=json.dumps(answer))])
    source = recognise_source(f"postgresql://team:{PASSWORD}@db.corp/mlflow")

    report = import_data(ComposeProject(config, runner), source, dry_run=True)

    argv, env = runner.calls[0]
    assert PASSWORD not in " ".join(argv)
    assert env[SOURCE_PASSWORD_VARIABLE] == PASSWORD and "PGPASSWORD" not in env
    assert argv[argv.index("--env") + 1] == SOURCE_PASSWORD_VARIABLE
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "--file"]
    assert files[-1] == str(kit_dir / IMPORT_NETWORK_OVERLAY)
    assert argv[argv.index("--source") + 1] == "postgresql://team@db.corp/mlflow"
    assert report.planned_rows == {"runs": 3}


def test_file_sources_get_no_network(kit_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = counts_as_running(kit_dir, monkeypatch)
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    runner = FakeRunner(answers=[CommandResult(argv=[], returncode=0, stdout='{"ok": true, "dry_run": true}')])
    import_data(ComposeProject(config, runner), recognise_source(str(tmp_path)), dry_run=True)
    argv, env = runner.calls[0]
    assert str(IMPORT_NETWORK_OVERLAY) not in " ".join(argv) and SOURCE_PASSWORD_VARIABLE not in env
    assert f"{tmp_path / 'mlruns'}:/import/source:ro" in argv
