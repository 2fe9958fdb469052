"""`mlops-kit upgrade` without Docker: the plan's verdicts, and the switch to a migrated copy and back.

A fake runner stands in for the engine (it records each command and answers the backup
agent's `facts` job with row counts); the end-to-end check is patched out. The real
thing runs in tests/integration/test_upgrade.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlops_kit.config.envfile import HostFacts, env_file_updates, init_env_file
from mlops_kit.config.loader import KitConfig, load_config, read_env_file
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.errors import CommandError, UpgradeError
from mlops_kit.runner import CommandResult, CommandRunner
from mlops_kit.workflows import upgrade
from mlops_kit.workflows.upgrade import ImageChange, SchemaChange, UpgradePlan, compare_row_counts

HOST = HostFacts(memory_bytes=2**33, cpus=2, hostname="h", fqdn="h")
OLD_IMAGE = "mlops-kit/mlflow:3.10.1-kit-test"
NEW_IMAGE = "mlops-kit/mlflow:3.17.2-kit0.11.0"
ROWS = {"experiments": 3, "runs": 10, "metrics": 300, "alembic_version": 1}


def plan(**changes: Any) -> UpgradePlan:
    base = UpgradePlan(
        kit_current="0.5.0",
        kit_target="0.5.0",
        mlflow_current="3.10.1",
        mlflow_target="3.17.2",
        postgres_current="17.6",
        postgres_target="17.6",
        images=[ImageChange("mlflow", "MLOPS_KIT_MLFLOW_IMAGE", OLD_IMAGE, NEW_IMAGE)],
        env_changes={},
        schemas=[SchemaChange("mlflow", "aaa", ("bbb",)), SchemaChange("mlflow_auth", "ccc", ("ccc",))],
        database_bytes=100 * 2**20,
        free_bytes=10 * 2**30,
    )
    return replace(base, **changes)


def test_the_plan_says_what_kind_of_upgrade_it_is() -> None:
    migrating = plan()
    assert migrating.data_migration and migrating.anything_to_do
    assert migrating.needed_bytes == 150 * 2**20
    same_images = plan(images=[ImageChange("mlflow", "MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE, NEW_IMAGE)])
    assert same_images.data_migration and same_images.anything_to_do  # a schema behind its image
    nothing = plan(
        images=[ImageChange("mlflow", "MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE, NEW_IMAGE)],
        schemas=[SchemaChange("mlflow", "bbb", ("bbb",))],
    )
    assert not nothing.anything_to_do
    assert plan(postgres_target="18.1").postgres_major_changes
    assert not plan(postgres_target="unknown").postgres_major_changes
    assert json.loads(json.dumps(migrating.to_dict()))["schemas"][0]["migrates"] is True


def test_nothing_to_do_or_too_little_disk_is_refused_before_anything(kit_dir: Path) -> None:
    init_env_file(kit_dir, {}, host=HOST)
    project = ComposeProject(load_config(kit_dir, environ={}), Recorder(kit_dir))
    nothing = plan(
        images=[ImageChange("mlflow", "MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE, NEW_IMAGE)],
        schemas=[SchemaChange("mlflow", "bbb", ("bbb",))],
    )
    full = plan(free_bytes=2**20)
    for refused, words in ((nothing, "nothing to upgrade"), (full, "free disk")):
        with pytest.raises(UpgradeError) as caught:
            upgrade.run_upgrade(project, project.config, refused)
        assert words in caught.value.message
    assert project.runner.calls == []  # type: ignore[attr-defined]


def test_rows_may_be_added_by_a_migration_but_never_lost() -> None:
    compare_row_counts({"mlflow": {"runs": 10}}, {"mlflow": {"runs": 10, "new_table": 0}})
    compare_row_counts({"mlflow": {"runs": 10}}, {"mlflow": {"runs": 12}})
    with pytest.raises(UpgradeError, match=r"mlflow\.runs had 10, has 9"):
        compare_row_counts({"mlflow": {"runs": 10}}, {"mlflow": {"runs": 9}})
    with pytest.raises(UpgradeError, match=r"mlflow_auth\.users had 2, has no such table"):
        compare_row_counts({"mlflow_auth": {"users": 2}}, {"mlflow_auth": {}})


def test_rows_mlflow_moves_into_columns_are_not_counted_as_lost() -> None:
    """MLflow 3.17 moves trace names out of trace_tags into a column: exactly those may go."""
    before = {"mlflow": {"trace_tags": 6, "runs": 10}}
    moved = {("mlflow", "trace_tags"): 3}
    compare_row_counts(before, {"mlflow": {"trace_tags": 3, "runs": 10}}, moved)
    with pytest.raises(UpgradeError, match=r"trace_tags had 6, has 2"):
        compare_row_counts(before, {"mlflow": {"trace_tags": 2, "runs": 10}}, moved)


def test_moved_rows_are_counted_only_for_pending_migrations_and_existing_tables(kit_dir: Path) -> None:
    from mlops_kit.workflows.schema import moved_rows

    init_env_file(kit_dir, {}, host=HOST)
    runner = Recorder(kit_dir)
    project = ComposeProject(load_config(kit_dir, environ={}), runner)
    assert moved_rows(project, ["somethingelse"], {"mlflow": {"trace_tags": 6}}) == {}
    moved = moved_rows(project, ["75868b020152"], {"mlflow": {"trace_tags": 6}})
    assert moved == {("mlflow", "trace_tags"): 0}  # the fake psql answers nothing
    [query] = [c for c in runner.calls if "psql" in c]
    assert "trace_tags WHERE key = 'mlflow.traceName'" in query[-1]


def test_env_file_updates_reads_without_writing(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_MLFLOW_IMAGE": "mlops-kit/mlflow:3.17.2-kit0.4.0"}, host=HOST)
    env_file = kit_dir / ".env"
    text = env_file.read_text()
    assert env_file_updates(env_file, HOST)["MLOPS_KIT_MLFLOW_IMAGE"] == NEW_IMAGE
    assert env_file.read_text() == text


def test_dropped_denies_are_noted_and_refused_only_where_access_would_widen(kit_dir: Path) -> None:
    harmless = plan(dropped_denies={"bob": 2})
    assert not harmless.widens_access
    assert not plan(dropped_denies=None, default_permission="READ").widens_access  # unknown: noted, not refused
    upgrade.refuse_unsafe_plan(harmless)  # with no default permission, a dropped deny opens nothing
    widening = plan(dropped_denies={"bob": 2, "carol": 1}, default_permission="READ")
    assert widening.widens_access and json.loads(json.dumps(widening.to_dict()))["widens_access"] is True
    with pytest.raises(UpgradeError) as caught:
        upgrade.refuse_unsafe_plan(widening)
    said = caught.value.message + " " + (caught.value.hint or "")
    assert "bob: 2, carol: 1" in said and "MLOPS_KIT_AUTH_DEFAULT_PERMISSION=READ" in said
    assert "--accept-dropped-denies" in said
    upgrade.refuse_unsafe_plan(widening, accept_dropped_denies=True)


def test_dropped_denies_are_counted_per_user_in_the_tables_the_migration_leaves_behind(kit_dir: Path) -> None:
    from mlops_kit.workflows.schema import dropped_denies

    class Answers(CommandRunner):
        def __init__(self) -> None:
            super().__init__()
            self.queries: list[str] = []

        def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> CommandResult:
            sql = str(list(argv)[-1])
            self.queries.append(sql)
            answer = '{"bob": 2, "odd|name\\n": 1}' if "experiment_permissions" in sql else '{"bob": 1}'
            return CommandResult([str(a) for a in argv], 0, answer, "")

    init_env_file(kit_dir, {}, host=HOST)
    runner = Answers()
    project = ComposeProject(load_config(kit_dir, environ={}), runner)
    tables = {"experiment_permissions": 4, "registered_model_permissions": 1, "scorer_permissions": 0}
    assert dropped_denies(project, ["aaa", "e5f6a7b8c9d0"], tables) == {"bob": 3, "odd|name\n": 1}
    # Only tables that exist and have rows are read; revisions that drop nothing read nothing.
    assert len(runner.queries) == 2 and all("NO_PERMISSIONS" in q for q in runner.queries)
    assert dropped_denies(project, ["aaa"], tables) == {}


class Recorder(CommandRunner):
    """Answers like a healthy engine; the agent's `facts` job reports ``rows`` (after the migration:
    ``rows_after``); the command whose argv contains ``fail_on`` fails with ``stderr``."""

    def __init__(self, kit_dir: Path, *, fail_on: str = "", stderr: str = "", rows_after: dict[str, int] | None = None):
        super().__init__()
        self.kit_dir = kit_dir
        self.fail_on = fail_on
        self.stderr = stderr
        self.rows_after = rows_after
        self.calls: list[list[str]] = []
        self.env_at: list[dict[str, str]] = []

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> CommandResult:
        args = [str(a) for a in argv]
        self.calls.append(args)
        self.env_at.append(dict(kwargs.get("env") or {}))
        if self.fail_on and self.fail_on in " ".join(args):
            raise CommandError(args, 1, "", self.stderr)
        if "facts" in args:
            migrated = (kwargs.get("env") or {}).get("MLOPS_KIT_POSTGRES_VOLUME", "").count("-u") > 0
            rows = self.rows_after if migrated and self.rows_after is not None else ROWS
            return CommandResult(args, 0, json.dumps({"ok": True, "row_counts": rows}) + "\n", "")
        if "prepare" in args or "load" in args:
            return CommandResult(args, 0, '{"ok": true}\n', "")
        return CommandResult(args, 0, "", "")

    def did(self, words: str) -> bool:
        return any(words in " ".join(call) for call in self.calls)


def _configs(kit_dir: Path, runner: CommandRunner) -> tuple[ComposeProject, KitConfig]:
    init_env_file(kit_dir, {"MLOPS_KIT_MLFLOW_IMAGE": NEW_IMAGE}, host=HOST)
    target = load_config(kit_dir, environ={})
    current = replace(target, mlflow_image=OLD_IMAGE)
    return ComposeProject(current, runner), target


@pytest.fixture
def no_smoke_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrade, "run_smoke_check", lambda access: [])


def test_a_migration_that_succeeds_switches_env_and_keeps_the_old_volume(kit_dir: Path, no_smoke_check: None) -> None:
    runner = Recorder(kit_dir)
    project, target = _configs(kit_dir, runner)
    before = read_env_file(kit_dir / ".env")
    rows_before, rows_after, volume = upgrade._migrate_on_a_copy(project, target, lambda _s: None)
    assert rows_before == rows_after == sum(ROWS.values()) * 2
    after = read_env_file(kit_dir / ".env")
    assert after["MLOPS_KIT_POSTGRES_VOLUME"] == volume != project.config.postgres_volume
    assert after["MLOPS_KIT_MLFLOW_IMAGE"] == before["MLOPS_KIT_MLFLOW_IMAGE"] == NEW_IMAGE
    # The copy is cold (PostgreSQL stopped first) and read-only on the old side.
    copy = next(c for c in runner.calls if "cp" in c)
    assert f"{project.config.postgres_volume}:/copy/from:ro" in copy
    assert runner.calls.index(copy) > next(i for i, c in enumerate(runner.calls) if c[-2:] == ["stop", "postgres"])
    # Both databases are migrated, with the new image's configuration.
    assert runner.did("mlflow db upgrade") and runner.did("mlflow.server.auth db upgrade")
    state = json.loads((kit_dir / upgrade.STATE_FILE).read_text())
    assert state["previous_volume"] == project.config.postgres_volume
    assert state["previous_env"]["MLOPS_KIT_MLFLOW_IMAGE"] == OLD_IMAGE
    assert state["previous_env"]["MLOPS_KIT_POSTGRES_VOLUME"] == ""
    # Nothing removed the old volume.
    assert not any(c[:3] == ["docker", "volume", "rm"] and project.config.postgres_volume in c for c in runner.calls)


@pytest.mark.parametrize(
    ("fail_on", "stderr", "step"),
    [
        ("mlflow db upgrade", "sqlalchemy.exc.ProgrammingError: relation x does not exist", "migrating the tracking"),
        ("mlflow.server.auth", "alembic.util.exc.CommandError: Can't locate revision", "migrating the user database"),
        ("cp -a", "cp: cannot create regular file: No space left on device", "copying the database volume"),
    ],
)
def test_a_failing_step_switches_back_and_says_which_step_and_why(
    kit_dir: Path, no_smoke_check: None, fail_on: str, stderr: str, step: str
) -> None:
    runner = Recorder(kit_dir, fail_on=fail_on, stderr=f"some noise\n{stderr}")
    project, target = _configs(kit_dir, runner)
    before = (kit_dir / ".env").read_text()
    with pytest.raises(UpgradeError) as caught:
        upgrade._migrate_on_a_copy(project, target, lambda _s: None)
    assert step in caught.value.message and stderr in caught.value.message
    assert "previous version serves again" in caught.value.message
    assert (kit_dir / ".env").read_text() == before
    assert not (kit_dir / upgrade.STATE_FILE).exists()
    removed = next(c for c in runner.calls if c[:3] == ["docker", "volume", "rm"])
    assert "-u" in removed[-1] and removed[-1] != project.config.postgres_volume
    # The previous version is started last, on its own volume and image.
    assert "up" in runner.calls[-1]
    assert runner.env_at[-1]["MLOPS_KIT_MLFLOW_IMAGE"] == OLD_IMAGE
    assert runner.env_at[-1]["MLOPS_KIT_POSTGRES_VOLUME"] == project.config.postgres_volume


def test_lost_rows_stop_the_switch(kit_dir: Path, no_smoke_check: None) -> None:
    runner = Recorder(kit_dir, rows_after={**ROWS, "metrics": 299})
    project, target = _configs(kit_dir, runner)
    with pytest.raises(UpgradeError) as caught:
        upgrade._migrate_on_a_copy(project, target, lambda _s: None)
    assert "comparing row counts" in caught.value.message
    assert "mlflow.metrics had 300, has 299" in caught.value.message
    # The new version never started: the only full `up` is the previous version's, last.
    full_ups = [i for i, c in enumerate(runner.calls) if "up" in c and "--remove-orphans" in c]
    assert full_ups == [len(runner.calls) - 1]
    assert runner.env_at[-1]["MLOPS_KIT_MLFLOW_IMAGE"] == OLD_IMAGE


def test_a_new_postgres_major_is_dumped_and_loaded_not_copied(kit_dir: Path, no_smoke_check: None) -> None:
    runner = Recorder(kit_dir)
    project, target = _configs(kit_dir, runner)
    upgrade._migrate_on_a_copy(project, target, lambda _s: None, major_change=True)
    assert not runner.did("cp -a")
    prepare = next(c for c in runner.calls if "prepare" in c)
    load = next(c for c in runner.calls if "load" in c)
    # Dumped from the old PostgreSQL with the writers stopped; loaded into the new one on the fresh volume.
    assert runner.calls.index(prepare) < runner.calls.index(load)
    assert runner.env_at[runner.calls.index(prepare)]["MLOPS_KIT_POSTGRES_VOLUME"] == project.config.postgres_volume
    assert "-u" in runner.env_at[runner.calls.index(load)]["MLOPS_KIT_POSTGRES_VOLUME"]
    assert prepare[prepare.index("--out") + 1] == load[load.index("--set") + 1]
    assert not list((project.config.backup_path / "staging").glob("upgrade-*"))  # the dump is removed


class PsRunner(CommandRunner):
    """The engine as `up`'s guard sees it: containers (`ps`, `inspect`), each image's PostgreSQL
    version and MLflow schema heads (``heads``: image -> tracking head)."""

    def __init__(
        self, containers: list[dict[str, str]], majors: dict[str, str], heads: dict[str, str] | None = None
    ) -> None:
        super().__init__()
        self.containers = containers
        self.majors = majors
        self.heads = heads or {}

    def run(self, argv: Sequence[str | os.PathLike[str]], **kwargs: Any) -> CommandResult:
        args = [str(a) for a in argv]
        if "ps" in args:
            return CommandResult(args, 0, "\n".join(json.dumps(c) for c in self.containers), "")
        if args[:2] == ["docker", "inspect"]:
            image = next(c["Image"] for c in self.containers if c["Name"] == args[-1])
            return CommandResult(args, 0, image + "\n", "")
        if "--version" in args:
            image = args[args.index("--version") - 1]
            return CommandResult(args, 0, f"postgres (PostgreSQL) {self.majors.get(image, '17.6')}\n", "")
        if "python" in args:
            image = args[args.index("python") + 1]
            answer = {"mlflow_version": "x", "tracking": [self.heads.get(image, "h")], "auth": ["a"]}
            return CommandResult(args, 0, json.dumps(answer) + "\n", "")
        return CommandResult(args, 0, "", "")


def _guarded_config(kit_dir: Path) -> KitConfig:
    init_env_file(kit_dir, {"MLOPS_KIT_MLFLOW_IMAGE": NEW_IMAGE}, host=HOST)
    return load_config(kit_dir, environ={})


def test_up_refuses_a_new_mlflow_image_on_existing_data(kit_dir: Path) -> None:
    from mlops_kit.errors import StackError
    from mlops_kit.workflows.schema import refuse_unplanned_migration

    config = _guarded_config(kit_dir)
    running = [{"Service": "mlflow", "Name": "m", "State": "running", "Image": OLD_IMAGE}]
    heads = {OLD_IMAGE: "old-head", NEW_IMAGE: "new-head"}
    with pytest.raises(StackError) as caught:
        refuse_unplanned_migration(ComposeProject(config, PsRunner(running, {}, heads)), wait_timeout=10)
    assert f"changes from {OLD_IMAGE} to {NEW_IMAGE}" in caught.value.message
    assert "mlops-kit upgrade" in (caught.value.hint or "")
    # The same image, or another tag with the same migrations (a kit release), is no upgrade of the data.
    same = [{"Service": "mlflow", "Name": "m", "State": "running", "Image": NEW_IMAGE}]
    refuse_unplanned_migration(ComposeProject(config, PsRunner(same, {})), wait_timeout=10)
    retagged = {OLD_IMAGE: "same-head", NEW_IMAGE: "same-head"}
    refuse_unplanned_migration(ComposeProject(config, PsRunner(running, {}, retagged)), wait_timeout=10)
    # A job's container (`compose run`) is not the service's own.
    oneoff = [
        *same,
        {
            "Service": "mlflow",
            "Name": "z",
            "State": "exited",
            "Image": OLD_IMAGE,
            "Labels": "com.docker.compose.oneoff=True",
        },
    ]
    refuse_unplanned_migration(ComposeProject(config, PsRunner(oneoff, {}, heads)), wait_timeout=10)


def test_up_refuses_a_new_postgres_major_but_not_a_rebuilt_minor(kit_dir: Path) -> None:
    from mlops_kit.errors import StackError
    from mlops_kit.workflows.schema import refuse_unplanned_migration

    config = _guarded_config(kit_dir)
    old_pg = "mlops-kit/postgres:15-kit-test"
    containers = [
        {"Service": "postgres", "Name": "p", "State": "running", "Image": old_pg},
        {"Service": "mlflow", "Name": "m", "State": "running", "Image": NEW_IMAGE},
    ]
    majors = {old_pg: "15.14", config.postgres_image: "17.6"}
    with pytest.raises(StackError, match=r"PostgreSQL 15\.14 to 17\.6 \(a new major\)"):
        refuse_unplanned_migration(ComposeProject(config, PsRunner(containers, majors)), wait_timeout=10)
    majors[old_pg] = "17.2"
    refuse_unplanned_migration(ComposeProject(config, PsRunner(containers, majors)), wait_timeout=10)


def test_a_rollback_refuses_a_record_the_stack_has_moved_on_from(kit_dir: Path) -> None:
    """After a restore (or any change of the database volume) the record would drop what happened since."""
    init_env_file(kit_dir, {}, host=HOST)
    runner = Recorder(kit_dir)
    project = ComposeProject(load_config(kit_dir, environ={}), runner)
    upgrade.write_state(
        project.config,
        {"previous_volume": "old-volume", "upgraded_volume": "mlops-kit_postgres-data-u1", "previous_env": {}},
    )
    with pytest.raises(UpgradeError, match="no longer runs on the upgraded volume"):
        upgrade.rollback_upgrade(project)
    assert runner.calls == []
