"""`mlops-kit gc` on the host side: options, confirmation, the lock, the report (the job itself is patched)."""

from __future__ import annotations

import fcntl
import json
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops_kit.cli.gc import last_gc_line
from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.config.settings import parse_duration
from mlops_kit.errors import BackupLockedError, GcError
from mlops_kit.workflows import gc as gc_workflow
from tests.harness import run_cli

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")

ANSWER: dict[str, Any] = {
    "ok": True,
    "dry_run": False,
    "older_than_seconds": 86400,
    "retention": {"enabled": True, "runs": 1, "listed": [{"run_id": "r1", "experiment_id": "1", "days": 30}]},
    "removed": {"experiments": 1, "runs": 3, "logged_models": 1, "traces": 2, "files": 7, "bytes": 4096},
    "items": [{"kind": "run", "id": "r2", "experiment_id": "1", "bytes": 4096}],
    "kept": [{"kind": "run", "id": "r3", "experiment_id": "1", "reason": "backs model version m/1"}],
    "kept_count": 1,
    "skipped": [],
}


def kit(kit_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(kit_dir, *args, env=env, input="", timeout=120)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2592000), ("12h", 43200), ("1d12h", 129600), ("90m", 5400), ("1s", 1), ("0", 0)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "30", "3x", "1.5d", "d", "-1d", "30 days"])
def test_bad_durations_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="30d"):
        parse_duration(bad)


def test_bad_older_than_names_the_option(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, "gc", "--older-than", "3 weeks", "--dry-run")
    assert result.returncode == 2
    assert "--older-than" in one_line(result)


def test_bad_setting_names_the_variable(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, "gc", "--dry-run", env={"MLOPS_KIT_GC_OLDER_THAN": "a month"})
    assert result.returncode == 2
    assert "MLOPS_KIT_GC_OLDER_THAN" in one_line(result)


def test_gc_confirms_first(kit_dir: Path) -> None:
    assert kit(kit_dir, "init").returncode == 0
    result = kit(kit_dir, "gc")
    assert result.returncode == 1
    line = one_line(result)
    assert "confirmation" in line and "--yes" in line


@pytest.fixture
def project(kit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    init_env_file(kit_dir, {"COMPOSE_PROJECT_NAME": "gcunit"}, host=HOST)
    monkeypatch.setattr(gc_workflow, "require_running", lambda project: None)
    return SimpleNamespace(config=load_config(kit_dir, environ={}))


def test_the_job_gets_the_settings_and_the_report_is_kept(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def job(project: Any, service: str, command: list[str], **kwargs: Any) -> dict[str, Any]:
        calls.append({"service": service, "command": command, **kwargs})
        return ANSWER

    monkeypatch.setattr(gc_workflow, "run_json_job", job)
    report = gc_workflow.collect_garbage(project, older_than_seconds=86400, retention_days=30)
    assert calls[0]["service"] == "mlflow" and calls[0]["read_only"] is False
    assert calls[0]["command"] == ["mlflow-gc", "--older-than-seconds", "86400", "--retention-days", "30"]
    assert report.bytes_freed == 4096 and report.retention_runs == 1 and report.kept_count == 1
    saved = gc_workflow.last_gc(project.config)
    assert saved is not None and saved["bytes_freed"] == 4096
    assert (project.config.backup_path / "last-gc.json").stat().st_mode & 0o777 == 0o600
    line = last_gc_line(saved, saved["finished_at"] + 7200)
    assert "2.0 h ago" in line and "freed 4.0 KiB" in line and "3 runs" in line


def test_a_dry_run_is_read_only_and_keeps_no_report(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def job(project: Any, service: str, command: list[str], **kwargs: Any) -> dict[str, Any]:
        seen.update(command=command, **kwargs)
        return {**ANSWER, "dry_run": True}

    monkeypatch.setattr(gc_workflow, "run_json_job", job)
    gc_workflow.collect_garbage(project, older_than_seconds=60, retention_days=0, retention=False, dry_run=True)
    assert seen["read_only"] is True
    assert seen["command"][-2:] == ["--no-retention", "--dry-run"]
    assert gc_workflow.last_gc(project.config) is None


def test_items_that_stayed_fail_after_the_report_is_written(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    failed = {
        **ANSWER,
        "ok": False,
        "skipped": [
            {"kind": "run", "id": "r8", "reason": "restored or changed since the plan", "failed": False},
            {"kind": "run", "id": "r9", "reason": "ClientError: AccessDenied", "failed": True},
        ],
    }
    monkeypatch.setattr(gc_workflow, "run_json_job", lambda *a, **k: failed)
    report = gc_workflow.collect_garbage(project, older_than_seconds=60, retention_days=0)
    with pytest.raises(GcError) as caught:
        report.raise_if_incomplete()
    assert caught.value.exit_code == 12 and "r9" in caught.value.message and "AccessDenied" in caught.value.message
    assert "2 item" not in caught.value.message and "1 item" in caught.value.message
    assert [s["id"] for s in json.loads((project.config.backup_path / "last-gc.json").read_text())["skipped"]] == [
        "r8",
        "r9",
    ]


def test_gc_and_backup_exclude_each_other(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc_workflow, "run_json_job", lambda *a, **k: pytest.fail("the job must not run"))
    project.config.backup_path.mkdir(parents=True, exist_ok=True)
    with (project.config.backup_path / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BackupLockedError) as caught:
            gc_workflow.collect_garbage(project, older_than_seconds=60, retention_days=0)
    assert caught.value.exit_code == 8
    # And a backup meets gc's lock the same way.
    from mlops_kit.workflows.lock import backup_lock

    with (
        backup_lock(project.config, "collect garbage"),
        pytest.raises(BackupLockedError) as held,
        backup_lock(project.config, "back up"),
    ):
        pass
    assert "collect garbage" in held.value.message


def test_the_human_report_names_what_stays_and_escapes_database_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from mlops_kit import console as ui
    from mlops_kit.cli import gc as gc_cli

    recorded = Console(record=True, width=200, theme=ui.THEME)
    monkeypatch.setattr(ui, "out", recorded)
    monkeypatch.setattr(ui, "err", recorded)
    kept = {"kind": "run", "id": "r3", "experiment_id": "1", "reason": "backs model version [bold]m[/bold]/1"}
    removed = {**ANSWER["removed"], "runs": 28}  # with 1 experiment and 1 logged model: 30 items
    answer = {**ANSWER, "dry_run": True, "kept": [kept], "items": ANSWER["items"] * 30, "removed": removed}
    ignored = [{"experiment_id": "4", "value": "[red]30 days", "reason": "x"}]
    answer["retention"] = {**ANSWER["retention"], "ignored": ignored}
    gc_cli._print_report(gc_workflow.GcReport.from_answer(answer, started=0.0, retention_days=30))
    text = recorded.export_text()
    assert "would be removed" in text and "and 10 more (all of them: --json)" in text
    assert "backs model version [bold]m[/bold]/1" in text  # markup from the database is shown, not applied
    assert "experiment 4" in text and "'[red]30 days'" in text
    assert "dry run: would remove 1 experiment(s), 28 run(s)" in text and "nothing was changed" in text
