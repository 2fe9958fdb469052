"""The cron entry `backup schedule` writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.errors import ConfigError
from mlops_kit.workflows.schedule import install_schedule, remove_schedule, render_gc_schedule, render_schedule

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")


def config_for(kit_dir: Path):  # type: ignore[no-untyped-def]
    init_env_file(kit_dir, {"COMPOSE_PROJECT_NAME": "nightly"}, host=HOST)
    return load_config(kit_dir, environ={})


def test_nightly_line_names_everything_by_absolute_path(kit_dir: Path, tmp_path: Path) -> None:
    schedule = render_schedule(config_for(kit_dir), "02:30", verify_day=None, cron_dir=tmp_path)
    assert schedule.path == tmp_path / "mlops-kit-nightly"
    lines = schedule.text.splitlines()
    assert "SHELL=/bin/sh" in lines
    assert any(line.startswith("PATH=/usr/local/sbin:") for line in lines)
    job = [line for line in lines if line[0].isdigit()]
    assert len(job) == 1
    assert job[0].startswith("30 2 * * * root ")
    command = schedule.commands()[0]
    assert sys.executable in command
    assert f"--project-dir {kit_dir}" in command
    assert str(kit_dir / "backups" / "logs" / "backup.log") in command
    assert "%" not in command  # cron would cut the line there


def test_weekly_drill_runs_an_hour_after_the_backup(kit_dir: Path, tmp_path: Path) -> None:
    schedule = render_schedule(config_for(kit_dir), "23:15", verify_day="Sunday", cron_dir=tmp_path)
    jobs = [line for line in schedule.text.splitlines() if line[0].isdigit()]
    assert jobs[1].startswith("15 0 * * 0 root ")
    assert "backup verify" in jobs[1]


@pytest.mark.parametrize("bad", ["2:3", "24:00", "noon", "12:60"])
def test_bad_time_names_the_option(kit_dir: Path, tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        render_schedule(config_for(kit_dir), bad, verify_day=None, cron_dir=tmp_path)
    assert "--at" in caught.value.message


def test_install_and_remove(kit_dir: Path, tmp_path: Path) -> None:
    config = config_for(kit_dir)
    schedule = render_schedule(config, "01:00", verify_day=None, cron_dir=tmp_path)
    install_schedule(schedule)
    assert schedule.path.stat().st_mode & 0o777 == 0o644
    assert remove_schedule(config, tmp_path) == schedule.path
    assert not schedule.path.exists()
    with pytest.raises(ConfigError) as caught:
        install_schedule(render_schedule(config, "01:00", verify_day=None, cron_dir=tmp_path / "missing"))
    assert "cron" in caught.value.message


def test_percent_in_paths_is_escaped_for_cron(tmp_path: Path) -> None:
    kit_dir = tmp_path / "kit%dir"
    from tests.conftest import copy_kit

    copy_kit(kit_dir)
    init_env_file(kit_dir, {}, host=HOST)
    command = render_schedule(load_config(kit_dir, environ={}), "01:00", verify_day=None, cron_dir=tmp_path).commands()
    assert "kit\\%dir" in command[0]
    assert "kit%dir" not in command[0].replace("\\%", "")


def test_nightly_gc_has_its_own_file_and_log(kit_dir: Path, tmp_path: Path) -> None:
    config = config_for(kit_dir)
    backup = render_schedule(config, "02:30", verify_day=None, cron_dir=tmp_path)
    schedule = render_gc_schedule(config, "03:45", cron_dir=tmp_path)
    assert schedule.path == tmp_path / "mlops-kit_gc_nightly" != backup.path
    jobs = [line for line in schedule.text.splitlines() if line[0].isdigit()]
    assert len(jobs) == 1 and jobs[0].startswith("45 3 * * * root ")
    command = schedule.commands()[0]
    # Unattended: --yes, the settings from .env, the kit's exit code to cron.
    assert " gc --yes;" in command and f"--env-file {config.env_file}" in command
    assert str(kit_dir / "backups" / "logs" / "gc.log") in command and "exit $rc" in command
    install_schedule(backup)
    install_schedule(schedule)
    # Removing one kind of job leaves the other.
    assert remove_schedule(config, tmp_path, "gc") == schedule.path
    assert backup.path.exists() and not schedule.path.exists()
