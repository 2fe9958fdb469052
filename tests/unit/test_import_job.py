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
    # MLflow's own references and values that are no place at all are neither rewritten nor reported.
    assert mapping.rewrite("models:/m-123") == ("models:/m-123", None)
    assert mapping.rewrite("runs:/abc/model") == ("runs:/abc/model", None)
    assert mapping.rewrite("dummy-source") == ("dummy-source", None)
    assert mapping.kept == {"s3": 1, "a path outside the source": 1}


def test_uris_into_a_mirrored_bucket_become_the_kits_and_name_the_mirrors_files(source: Path) -> None:
    job = load_job()
    db = __import__("sqlite3").connect(":memory:")
    db.execute("CREATE TABLE experiments (experiment_id INTEGER, artifact_location TEXT)")
    db.execute("INSERT INTO experiments VALUES (1, 's3://team/mlflow/1')")
    mapping = job.find_roots(db, str(source), str(source), "s3://team/mlflow/")
    assert mapping.rewrite("s3://team/mlflow/1/abc/artifacts") == (
        "mlflow-artifacts:/1/abc/artifacts",
        str(source / "1" / "abc" / "artifacts"),
    )
    # A proxied server whose destination was the bucket: the same mirror.
    assert mapping.rewrite("mlflow-artifacts:/1/abc/artifacts")[1] == str(source / "1" / "abc" / "artifacts")
    # Another prefix of the bucket, or a key that climbs out, stays as it was.
    assert mapping.rewrite("s3://team/mlflow-old/1") == ("s3://team/mlflow-old/1", None)
    assert mapping.rewrite("s3://team/mlflow/../secret") == ("s3://team/mlflow/../secret", None)
    assert mapping.kept == {"s3": 1, job.LEAVES_ROOT: 1}


def test_a_bucket_listing_skips_folder_markers_and_refuses_keys_that_climb_out() -> None:
    job = load_job()

    class Pages:
        def __init__(self, keys: list[str]) -> None:
            self.keys = keys

        def get_paginator(self, _name: str) -> Pages:
            return self

        def paginate(self, **kwargs: str) -> list[dict[str, list[dict[str, object]]]]:
            assert kwargs == {"Bucket": "team", "Prefix": "mlflow/"}
            return [{"Contents": [{"Key": key, "Size": 1} for key in self.keys]}]

    listed = list(job.bucket_objects(Pages(["mlflow/1/", "mlflow/1/abc/artifacts/m.pkl"]), "team", "mlflow"))
    assert [relative for relative, _ in listed] == ["1/abc/artifacts/m.pkl"]
    with pytest.raises(job.SourceError, match="outside the bucket's prefix"):
        list(job.bucket_objects(Pages(["mlflow/../secret"]), "team", "mlflow"))
    assert job.plain_md5({"ETag": '"0cc175b9c0f1b6a831c399e269772661"'}) == "0cc175b9c0f1b6a831c399e269772661"
    assert job.plain_md5({"ETag": '"0cc175b9c0f1b6a831c399e269772661-3"'}) is None


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
    with pytest.raises(job.SourceError, match="leaves the kit's store"):
        store.target("../outside")


def test_the_store_never_overwrites_what_the_kit_has(tmp_path: Path) -> None:
    job = load_job()
    (tmp_path / "store" / "1").mkdir(parents=True)
    (tmp_path / "store" / "1" / "model.pkl").write_bytes(b"the kit's own")
    (tmp_path / "same").write_bytes(b"the kit's own")
    (tmp_path / "other").write_bytes(b"the source's!")  # same size, other bytes
    store = job.LocalStore(str(tmp_path / "store"))
    copied = job.Copied()
    store.copy(str(tmp_path / "same"), "1/model.pkl", copied)
    assert copied.already_there == 1 and copied.files == 0
    assert not store.differs(str(tmp_path / "other"), "1/model.pkl")  # the plan sees sizes only
    with pytest.raises(job.SourceError, match=r"already has 1/model\.pkl with other bytes"):
        store.copy(str(tmp_path / "other"), "1/model.pkl", copied)
    assert (tmp_path / "store" / "1" / "model.pkl").read_bytes() == b"the kit's own"
    (tmp_path / "longer").write_bytes(b"a longer file than the kit's")
    assert job.artifact_clashes(store, {"1/model.pkl": str(tmp_path / "longer")}) == ["artifact 1/model.pkl"]


def test_a_file_store_with_a_link_out_of_it_is_refused(tmp_path: Path) -> None:
    """MLflow's converter would read a tag through the link: the job's own files must not become tags."""
    job = load_job()
    tags = tmp_path / "mlruns" / "1" / "abc" / "tags"
    tags.mkdir(parents=True)
    (tmp_path / "password").write_text("secret")
    (tags / "inside").symlink_to(tags.parent)  # a link within the store is fine
    job.check_source_tree(str(tmp_path / "mlruns"), "file store", links_out=True)
    (tags / "leak").symlink_to(tmp_path / "password")
    with pytest.raises(job.SourceError, match=r"1/abc/tags/leak in the file store is a link to a place outside"):
        job.check_source_tree(str(tmp_path / "mlruns"), "file store", links_out=True)


def test_a_source_the_job_cannot_read_whole_is_refused_before_anything_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's converter skips an unreadable meta.yaml with a log line only: that model would be lost."""
    job = load_job()
    model = tmp_path / "mlruns" / "models" / "prompt"
    model.mkdir(parents=True)
    (model / "meta.yaml").write_text("name: prompt")
    (tmp_path / "mlruns" / "1").mkdir()
    job.check_source_tree(str(tmp_path / "mlruns"), "file store")
    (model / "meta.yaml").chmod(0o600)
    # The tests run as root, who reads everything: the job's user is asked through os.access.
    unreadable = {str(model / "meta.yaml"), str(tmp_path / "mlruns" / "1")}
    monkeypatch.setattr(job.os, "access", lambda path, mode: str(path) not in unreadable)
    with pytest.raises(job.SourceError) as refused:
        job.check_source_tree(str(tmp_path / "mlruns"), "file store")
    message = str(refused.value)
    assert message.startswith("2 file(s) or folder(s) of the file store cannot be read by the import"), message
    assert "(mode 0600, owner uid 0)" in message or "(mode 0755" in message, message
    assert "chmod -R a+rX" in message and "nothing was imported" in message and "\n" not in message


def test_database_errors_are_reported_by_their_first_line_only() -> None:
    import sqlalchemy as sa

    job = load_job()
    error = sa.exc.DataError(
        "INSERT INTO params VALUES (%(v)s)", {"v": "secret value"}, Exception("value too long\nDETAIL: x")
    )
    assert job.first_line(error) == "value too long"


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


def test_a_prompts_linked_experiments_follow_their_new_ids() -> None:
    job = load_job()
    assert job.renumber_listed(",813577761166592606,0,", {813577761166592606: 3}) == ",3,0,"
    assert job.renumber_listed(",1,", {}) == ",1,"
    assert job.renumber_listed(None, {5: 6}) is None


def test_a_step_outside_the_stack_answers_in_one_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fetch-bucket and --stage-only print their answer, or their one-line failure, as JSON."""
    import argparse
    import json

    job = load_job()
    args = argparse.Namespace(fetch_bucket="s3://team/mlflow", work=str(tmp_path), list_only=True)
    monkeypatch.setattr(job, "fetch_bucket", lambda uri, work, list_only: {"objects": 3, "uri": uri})
    assert job.fetch_only(args) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ok"] and answer["bucket"] == {"objects": 3, "uri": "s3://team/mlflow"} and "seconds" in answer

    def refused(uri: str, work: str, list_only: bool) -> None:
        raise job.SourceError("the bucket team does not exist")

    monkeypatch.setattr(job, "fetch_bucket", refused)
    assert job.fetch_only(args) == 1
    assert json.loads(capsys.readouterr().out) == {"ok": False, "error": "the bucket team does not exist"}

    def broken(source: str, uri: str) -> None:
        raise RuntimeError("connection reset\nsecond line")

    monkeypatch.setattr(job, "stage_postgres", broken)
    (tmp_path / "source.db-wal").write_text("left over")
    assert job.stage_only(argparse.Namespace(kind="postgresql", source="postgresql://x", work=str(tmp_path))) == 1
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["error"] == "RuntimeError: connection reset"
    assert not (tmp_path / "source.db-wal").exists()
