"""The import job's rules that need no database: where a source URI's files are, and what it becomes."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_image_module


def load_job() -> ModuleType:
    return load_image_module("kit_import_job", "docker/mlflow/importer.py")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A source's artifact root with one run's files, and a secret next to it."""
    (tmp_path / "mlruns" / "1" / "abc" / "artifacts").mkdir(parents=True)
    (tmp_path / "mlruns" / "1" / "abc" / "artifacts" / "model.pkl").write_bytes(b"m")
    (tmp_path / "secret").write_text("do not copy")
    return tmp_path / "mlruns"


def test_uris_into_the_source_root_become_the_kits_and_name_their_files(source: Path) -> None:
    job = load_job()
    mapping = job.Mapping(roots={"/old/server/mlruns": str(source)}, served_root=str(source))
    assert mapping.rewrite("file:///old/server/mlruns/1/abc/artifacts") == (
        "mlflow-artifacts:/1/abc/artifacts",
        str(source / "1" / "abc" / "artifacts"),
    )
    assert mapping.rewrite("/old/server/mlruns/1/abc/artifacts/model.pkl")[0] == (
        "mlflow-artifacts:/1/abc/artifacts/model.pkl"
    )
    # A server's proxied URIs, with or without its address.
    assert mapping.rewrite("mlflow-artifacts://old:5000/1/abc/artifacts")[0] == "mlflow-artifacts:/1/abc/artifacts"
    assert mapping.rewrite("mlflow-artifacts:/1/abc/artifacts")[1] == str(source / "1" / "abc" / "artifacts")
    # Elsewhere: kept as it is, counted by kind.
    assert mapping.rewrite("s3://bucket/1/abc") == ("s3://bucket/1/abc", None)
    assert mapping.rewrite("/somewhere/else/1") == ("/somewhere/else/1", None)
    assert mapping.kept == {"s3": 1, "a path outside the source": 1}


@pytest.mark.parametrize(
    "uri",
    [
        "file:///old/server/mlruns/1/../../secret",
        "/old/server/mlruns/../secret",
        "mlflow-artifacts:/../secret",
        "mlflow-artifacts://old:5000/1/../../secret",
    ],
)
def test_a_uri_that_climbs_out_of_the_root_reads_nothing(source: Path, uri: str) -> None:
    job = load_job()
    mapping = job.Mapping(roots={"/old/server/mlruns": str(source)}, served_root=str(source))
    assert mapping.rewrite(uri) == (uri, None)
    assert sum(mapping.kept.values()) == 1  # and counted as kept


def test_a_symlink_in_the_source_that_points_elsewhere_reads_nothing(source: Path) -> None:
    job = load_job()
    (source / "1" / "evil").symlink_to(source.parent / "secret")
    (source / "2").symlink_to(source.parent)
    mapping = job.Mapping(roots={"/old/mlruns": str(source)}, served_root=str(source))
    assert mapping.rewrite("/old/mlruns/1/evil") == ("/old/mlruns/1/evil", None)
    assert mapping.rewrite("mlflow-artifacts:/2/secret") == ("mlflow-artifacts:/2/secret", None)
    # A file of the source reached through a symlink inside the source is fine.
    (source / "1" / "same").symlink_to(source / "1" / "abc")
    assert mapping.rewrite("/old/mlruns/1/same")[1] == str(source / "1" / "same")


def test_the_store_refuses_a_target_outside_it(tmp_path: Path) -> None:
    job = load_job()
    store = job.LocalStore(str(tmp_path / "store"))
    (tmp_path / "store").mkdir()
    with pytest.raises(ValueError, match="leaves the artifact store"):
        store.target("../outside")


def test_tables_that_refer_to_a_skipped_table_stay_behind_with_it() -> None:
    import sqlalchemy as sa

    job = load_job()
    metadata = sa.MetaData()
    sa.Table("experiments", metadata, sa.Column("experiment_id", sa.Integer, primary_key=True))
    sa.Table("secrets", metadata, sa.Column("secret_id", sa.String, primary_key=True))
    sa.Table(
        "model_definitions",
        metadata,
        sa.Column("model_definition_id", sa.String, primary_key=True),
        sa.Column("secret_id", sa.String, sa.ForeignKey("secrets.secret_id")),
    )
    sa.Table(
        "endpoint_model_mappings",
        metadata,
        sa.Column("mapping_id", sa.String, primary_key=True),
        sa.Column("model_definition_id", sa.String, sa.ForeignKey("model_definitions.model_definition_id")),
    )
    skipped = job.skipped_tables(job.Target(engine=None, metadata=metadata))
    assert set(skipped) == {"secrets", "model_definitions", "endpoint_model_mappings"}
    assert "source server's key" in skipped["endpoint_model_mappings"]
