"""The gc job's rules that need no database: which paths are the kit's, what a deletion may touch."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_image_module


def load_job() -> ModuleType:
    return load_image_module("kit_gc_job", "docker/mlflow/gc.py")


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("mlflow-artifacts:/1/abc/artifacts", "1/abc/artifacts"),
        ("mlflow-artifacts://mlflow.example:5000/1/abc/artifacts", "1/abc/artifacts"),
        ("mlflow-artifacts:/", ""),
        # Not the kit's store: never touched.
        ("s3://other-bucket/1/abc", None),
        ("file:///tmp/x", None),
        (None, None),
        # A path that climbs out is nobody's.
        ("mlflow-artifacts:/1/../../etc", None),
    ],
)
def test_store_path(uri: str | None, path: str | None) -> None:
    assert load_job().store_path(uri) == path


def test_a_deletion_is_unsafe_when_something_live_is_at_or_below_it() -> None:
    job = load_job()
    live = job.LiveSet(["1", "2/abc/artifacts/model", "20"])
    assert live.inside("2") == "2/abc/artifacts/model"
    assert live.inside("2/abc") == "2/abc/artifacts/model"
    assert live.inside("2/abd") is None
    # "2" is a prefix of "20" as text, not as a folder.
    assert job.LiveSet(["20"]).inside("2") is None
    assert live.inside("1") == "1"
    assert live.inside("") is not None


def test_entity_folder_is_the_items_own_folder_only() -> None:
    job = load_job()
    assert job.entity_folder("1/abc/artifacts", "abc") == "1/abc"
    assert job.entity_folder("1/models/m-1/artifacts", "m-1") == "1/models/m-1"
    # An unusual layout: only what the URI names.
    assert job.entity_folder("shared/artifacts", "abc") == "shared/artifacts"


def test_local_store_counts_deletes_and_tolerates_a_missing_folder(tmp_path: Path) -> None:
    job = load_job()
    (tmp_path / "1" / "abc" / "artifacts").mkdir(parents=True)
    (tmp_path / "1" / "abc" / "artifacts" / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "1" / "keep.txt").write_bytes(b"y")
    store = job.LocalArtifacts(str(tmp_path))
    freed = store.delete("1/abc")
    assert (freed.files, freed.bytes) == (1, 10)
    assert not (tmp_path / "1" / "abc").exists() and (tmp_path / "1" / "keep.txt").exists()
    # mlflow#15461: a folder that does not exist is nothing to free, at once.
    missing = store.delete("1/never-written")
    assert (missing.files, missing.bytes) == (0, 0)
    with pytest.raises(ValueError):
        store.delete("")
    with pytest.raises(ValueError):
        store.delete("../outside")


def test_trace_folders_report_their_newest_change(tmp_path: Path) -> None:
    job = load_job()
    folder = tmp_path / "1" / "traces" / "tr-1" / "artifacts"
    folder.mkdir(parents=True)
    (folder / "traces.json").write_text("{}")
    os.utime(folder / "traces.json", (1000, 1000))
    os.utime(folder, (2000, 2000))
    os.utime(folder.parent, (500, 500))
    found = job.LocalArtifacts(str(tmp_path)).children("1/traces")
    assert found == {"tr-1": 2000}


def test_a_link_is_removed_never_followed(tmp_path: Path) -> None:
    job = load_job()
    live = tmp_path / "7" / "run7" / "artifacts"
    live.mkdir(parents=True)
    (live / "model.pkl").write_bytes(b"live")
    (tmp_path / "5").mkdir()
    # An operator's link: the doomed run's folder points at a live experiment.
    os.symlink(tmp_path / "7", tmp_path / "5" / "run1")
    store = job.LocalArtifacts(str(tmp_path))
    store.delete("5/run1")
    assert not os.path.lexists(tmp_path / "5" / "run1")
    assert (live / "model.pkl").read_bytes() == b"live"
    # A link inside a doomed folder goes as a link; what it points at stays.
    os.symlink(tmp_path / "7", tmp_path / "5" / "inner")
    store.delete("5")
    assert not (tmp_path / "5").exists() and (live / "model.pkl").exists()


@pytest.mark.parametrize(
    ("uri", "destination", "path"),
    [
        ("/mlflow/artifacts/1/abc/artifacts/model", "/mlflow/artifacts", "1/abc/artifacts/model"),
        ("file:///mlflow/artifacts/1/abc", "/mlflow/artifacts", "1/abc"),
        ("/mlflow/artifacts-other/1", "/mlflow/artifacts", None),
        ("s3://bucket/prefix/1/abc/artifacts", "kit-s3://bucket/prefix", "1/abc/artifacts"),
        ("kit-s3://bucket/prefix/1/abc", "kit-s3://bucket/prefix", "1/abc"),
        ("s3://bucket/prefix2/1/abc", "kit-s3://bucket/prefix", None),
        ("s3://other/prefix/1", "s3://bucket/prefix", None),
    ],
)
def test_model_version_sources_in_the_stores_own_form(uri: str, destination: str, path: str | None) -> None:
    assert load_job().direct_path(uri, destination) == path


@pytest.mark.parametrize(
    ("raw", "days"), [("30", 30), (" 90 ", 90), ("0", 0), ("off", 0), ("30 days", None), ("²", None), ("-5", None)]
)
def test_retention_tag_values(raw: str, days: int | None) -> None:
    assert load_job()._days(raw) == days
