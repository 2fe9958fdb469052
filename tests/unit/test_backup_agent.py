"""The backup agent (docker/backup/agent.py, baked into the backup image): verifying artifacts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType

from tests.conftest import load_image_module


def load_agent() -> ModuleType:
    return load_image_module("kit_backup_agent", "docker/backup/agent.py")


def entry(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def test_file_written_during_the_backup_is_not_damage(tmp_path: Path) -> None:
    agent = load_agent()
    growing = tmp_path / "upload.bin"
    growing.write_bytes(b"partial")
    files = {"upload.bin": entry(growing)}
    growing.write_bytes(b"partial and then the rest")  # finished after it was hashed
    result = agent.verify_artifacts(tmp_path, files)
    assert result == {"problems": [], "checked": 1, "changed": 1}


def test_same_size_and_mtime_but_other_bytes_is_damage(tmp_path: Path) -> None:
    agent = load_agent()
    stored = tmp_path / "model.pkl"
    stored.write_bytes(b"A" * 100)
    files = {"model.pkl": entry(stored)}
    stat = stored.stat()
    stored.write_bytes(b"B" * 100)
    os.utime(stored, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    result = agent.verify_artifacts(tmp_path, files)
    assert result["problems"] == ["artifact model.pkl does not match its checksum"]
    missing = agent.verify_artifacts(tmp_path, {"gone.bin": {"sha256": "0", "size": 1, "mtime_ns": 1}})
    assert missing["problems"] == ["artifact gone.bin is missing"]
