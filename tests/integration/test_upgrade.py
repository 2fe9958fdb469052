"""`mlops-kit upgrade` on a stack an older MLflow (3.10.1) created and filled.

One stack, in order, as an operator would live it:
1. the stack runs MLflow 3.10.1 (the kit's image with that release); a data scientist's
   whole workflow is written through the MLflow client, plus a user with a grant;
2. `upgrade --dry-run` shows the plan and changes nothing;
3. the operator points `.env` at a release whose migration fails: `upgrade` fails in one
   line naming the step and the migration's error, and 3.10.1 serves again with every
   byte as before, nothing half-done (no copy volume, `.env` as the operator left it);
4. the operator fixes the cause (the kit's 3.17.2 image): `upgrade` migrates both
   databases on a copy and switches; every byte, every login and grant is there, and the
   new release writes;
5. `upgrade --rollback` brings 3.10.1 back on the untouched old volume, with the data as
   it was before the upgrade;
6. `up` refuses a new MLflow image on existing data (the container's image differs, or,
   after `down`, the database's schema is behind the image's) and changes nothing.

MLflow 2.22 (the last 2.x, where the first 3.x migrations wait) gets its own stack: its data
is written and read back by 2.22's own client (run in the old image), and after `upgrade`
read back by the current client, which must see the same.
Two PostgreSQL majors: 15 (bookworm's) is dumped and loaded into the kit's 17.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Stack, new_stack
from tests.integration.mlflow_data import digest, populate
from tests.integration.old_releases import (
    BROKEN_MIGRATION_IMAGE,
    MLFLOW2,
    OLD_MLFLOW3,
    OLD_MLFLOW3_IMAGE,
    OLD_PYTHON,
    build_broken_migration_image,
    build_mlflow2_image,
    build_old_mlflow3_image,
    build_pg15_image,
)

OLD_MLFLOW = OLD_MLFLOW3
OLD_IMAGE = OLD_MLFLOW3_IMAGE
BROKEN_IMAGE = BROKEN_MIGRATION_IMAGE
NEW_IMAGE = "mlops-kit/mlflow:3.17.2-kit0.11.0"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def images(kit_images: None) -> None:
    """The kit's image with MLflow 3.10.1, and one whose migration fails."""
    build_old_mlflow3_image()
    build_broken_migration_image()


@pytest.fixture(scope="module")
def mlflow2_image(kit_images: None) -> str:
    """The kit's image with MLflow 2.22, which serves with gunicorn (on the kit's socket)."""
    return build_mlflow2_image()


def _old_client(stack: Stack, image: str, *arguments: str) -> Any:
    """`mlflow_data.py ARGUMENTS` run by the old release's own client (in its image), as the admin.

    The container shares the host's network only to reach the stack's published loopback
    port; the password travels in its environment (`--env NAME`), never in argv.
    """
    variables = stack.client_variables("admin")
    mounts = ["-v", f"{stack.ca_file}:/kit-ca.pem:ro", "-v", f"{HERE}:/data:ro"]
    login = [
        f"--env={name}" for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    ]
    command = ["--entrypoint", OLD_PYTHON, image, "/data/mlflow_data.py", *arguments]
    result = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "host",
            *mounts,
            *login,
            "--env=MLFLOW_TRACKING_SERVER_CERT_PATH=/kit-ca.pem",
            *command,
        ],
        env={**os.environ, **{k: v for k, v in variables.items() if k != "MLFLOW_TRACKING_SERVER_CERT_PATH"}},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _mlflow_version(stack: Stack) -> str:
    services = {s["service"]: s for s in stack.status()["services"]}
    assert services["mlflow"]["health"] == "healthy", services
    return str(services["mlflow"]["version"])


#: The data set's experiments (`check`, which every upgrade runs, leaves a deleted experiment of its own).
EXPERIMENTS = ["Default", "upg-experiment-0", "upg-experiment-1"]


def _digest_as_admin(stack: Stack) -> dict[str, Any]:
    with stack.as_user("admin"):
        return digest(stack.tracking_uri, EXPERIMENTS)


def _grant(stack: Stack, experiment_id: str) -> str:
    """Alice's permission on the experiment, through the API both releases have."""
    response = stack.session("admin").get(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/permissions/get",
        params={"experiment_id": experiment_id, "username": "alice"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["experiment_permission"]["permission"])


def _legacy_grant(stack: Stack, user: str, experiment_id: str, permission: str) -> None:
    """A per-experiment grant through the permission API every release has (2.x to 3.16; 3.17 keeps it)."""
    created = stack.session("admin").post(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/permissions/create",
        json={"experiment_id": experiment_id, "username": user, "permission": permission},
        timeout=30,
    )
    assert created.status_code == 200, created.text


@pytest.fixture(scope="module")
def old_stack(images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on MLflow 3.10.1 for this module's tests (in order), removed with its volumes at the end."""
    stack = new_stack(tmp_path_factory.mktemp("upgrade"), "mlkt-upg")
    try:
        stack.init(env={"MLOPS_KIT_MLFLOW_IMAGE": OLD_IMAGE})
        stack.kit("up")
        yield stack
    finally:
        stack.destroy()


def test_upgrade_from_an_older_mlflow_keeps_every_byte_and_login(old_stack: Stack, fail_fast: None) -> None:
    stack = old_stack
    assert _mlflow_version(stack) == OLD_MLFLOW

    # 1. A data scientist's workflow on 3.10.1, and a second user with a grant.
    with stack.as_user("admin"):
        experiment_ids = populate(stack.tracking_uri, prefix="upg")
    stack.kit("users", "add", "alice")
    alice = stack.password("alice")
    # 3.10.1 has only the per-resource permission API (the kit's `users grant` uses 3.17's).
    _legacy_grant(stack, "alice", experiment_ids[0], "READ")
    grant_before = _grant(stack, experiment_ids[0])
    assert grant_before == "READ"
    before = _digest_as_admin(stack)
    assert before["experiments"] and before["registered_models"]
    assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)

    # 2. The plan names both versions and changes nothing.
    stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", BROKEN_IMAGE)
    env_before = stack.env_values()
    volumes_before = stack.volumes()
    plan = json.loads(stack.kit("upgrade", "--dry-run", "--json").stdout)
    assert plan["mlflow"] == {"current": OLD_MLFLOW, "target": "3.17.2"}
    assert plan["data_migration"] is True
    tracking = next(s for s in plan["schemas"] if s["database"] == "mlflow")
    assert tracking["migrates"] and tracking["current"] not in tracking["target"]
    assert any(i["service"] == "mlflow" and i["changed"] for i in plan["images"])
    assert plan["database_bytes"] > 0 and plan["free_bytes"] > plan["needed_bytes"]
    assert (stack.env_values(), stack.volumes(), _mlflow_version(stack)) == (env_before, volumes_before, OLD_MLFLOW)
    # `up` refuses what is an upgrade (a new MLflow on existing data), and changes nothing either.
    refused = stack.kit("up", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "MLOPS_KIT_MLFLOW_IMAGE changes from" in refused.stderr and "mlops-kit upgrade" in refused.stderr
    assert _mlflow_version(stack) == OLD_MLFLOW

    # 3. A release whose migration fails: one line, the old version serves, nothing half-done.
    failed = stack.kit("upgrade", "--yes", check=False)
    assert failed.returncode == 11, failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in failed.stderr
    assert "migrating the tracking database" in errors[0]
    assert "injected failure in a migration step" in errors[0]
    assert "previous version serves again" in errors[0]
    assert _mlflow_version(stack) == OLD_MLFLOW
    assert stack.env_values() == env_before
    assert [v for v in stack.volumes() if v not in volumes_before] == []
    assert not (stack.directory / ".mlops-kit-upgrade.json").exists()
    assert _digest_as_admin(stack) == before
    assert stack.kit("check").returncode == 0

    # 4. The cause fixed: the upgrade migrates a copy and switches to it.
    stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE)
    done = json.loads(stack.kit("upgrade", "--yes", "--json").stdout)
    assert done["upgraded"] is True
    assert done["rows_after"] >= done["rows_before"] > 0
    assert done["previous_images"]["mlflow"] == OLD_IMAGE
    assert _mlflow_version(stack) == "3.17.2"
    env_after = stack.env_values()
    assert env_after["MLOPS_KIT_POSTGRES_VOLUME"] == done["upgraded_volume"] != done["previous_volume"]
    assert env_after["MLOPS_KIT_MLFLOW_IMAGE"] == NEW_IMAGE
    assert done["previous_volume"] in stack.volumes()  # kept for the way back
    sets = json.loads(stack.kit("backup", "list", "--json").stdout)
    assert any(s["set_id"] == done["backup_set"] for s in sets)
    assert _digest_as_admin(stack) == before
    # The grant moved into 3.17's roles: the kit's `users permissions` (3.17's API) shows it, and it acts.
    grants = json.loads(stack.kit("users", "permissions", "alice", "--json").stdout)
    assert any(str(g.get("resource_pattern")) == experiment_ids[0] and g.get("permission") == "READ" for g in grants), (
        grants
    )
    assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)
    assert stack.kit("check").returncode == 0
    with stack.as_user("admin"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(stack.tracking_uri)
        run = client.create_run(experiment_ids[0], run_name="after-upgrade")
        client.log_metric(run.info.run_id, "written_by_new_release", 1.0)
    upgraded = _digest_as_admin(stack)
    assert upgraded != before

    # 5. The way back: 3.10.1 on the untouched old volume, the data as before the upgrade.
    back = json.loads(stack.kit("upgrade", "--rollback", "--yes", "--json").stdout)
    assert back["restored_volume"] == done["previous_volume"]
    assert back["kept_volume"] == done["upgraded_volume"] in stack.volumes()
    assert _mlflow_version(stack) == OLD_MLFLOW
    assert _digest_as_admin(stack) == before
    assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)
    again = stack.kit("upgrade", "--rollback", "--yes", check=False)
    assert again.returncode == 11 and "no upgrade to roll back" in again.stderr

    # 6. After `down` (no container to compare with), `up` compares the schema itself.
    stack.kit("down")
    stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE)
    refused = stack.kit("up", check=False)
    assert refused.returncode == 5, refused.stderr
    assert "is not what MLflow 3.17.2" in " ".join(refused.stderr.split())
    stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", OLD_IMAGE)
    stack.kit("up")
    assert _mlflow_version(stack) == OLD_MLFLOW
    assert _digest_as_admin(stack) == before


def test_upgrade_refuses_while_a_backup_holds_the_lock(old_stack: Stack) -> None:
    """A backup or restore in progress: the upgrade waits for nothing and changes nothing (exit 8)."""
    import fcntl

    lock = old_stack.directory / "backups" / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    old_stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE)
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("back up (pid 1, test)")
        handle.flush()
        refused = old_stack.kit("upgrade", "--yes", check=False)
    assert refused.returncode == 8, refused.stderr
    assert "holds the backup lock" in refused.stderr
    assert _mlflow_version(old_stack) == OLD_MLFLOW


KIT_POSTGRES_IMAGE = "mlops-kit/postgres:17-kit0.11.0"


@pytest.fixture(scope="module")
def pg15_image(kit_images: None) -> str:
    """The kit's PostgreSQL image built FROM Debian bookworm, which carries PostgreSQL 15."""
    return build_pg15_image()


def _server_version(stack: Stack) -> str:
    from tests.harness import psql

    return psql(stack, "SHOW server_version").strip().split()[0]


def test_a_new_postgresql_major_is_dumped_and_loaded_with_every_byte(
    pg15_image: str, tmp_path_factory: pytest.TempPathFactory, fail_fast: None
) -> None:
    """PostgreSQL 15 (bookworm) -> 17 (the kit's): a dump and load into a fresh volume, and back."""
    stack = new_stack(tmp_path_factory.mktemp("pg15"), "mlkt-pg15")
    try:
        stack.init(env={"MLOPS_KIT_POSTGRES_IMAGE": pg15_image})
        stack.kit("up")
        assert _server_version(stack).startswith("15.")
        with stack.as_user("admin"):
            experiment_ids = populate(stack.tracking_uri, prefix="upg")
        stack.kit("users", "add", "alice")
        alice = stack.password("alice")
        stack.kit("users", "grant", "alice", "READ", "experiment", experiment_ids[0])
        grants = json.loads(stack.kit("users", "permissions", "alice", "--json").stdout)
        before = _digest_as_admin(stack)

        stack.set_env("MLOPS_KIT_POSTGRES_IMAGE", KIT_POSTGRES_IMAGE)
        # `up` would start PostgreSQL 17 on 15's data folder: refused, nothing changed.
        refused = stack.kit("up", check=False)
        assert refused.returncode == 5 and "a new major" in refused.stderr, refused.stderr
        assert _server_version(stack).startswith("15.")

        plan = json.loads(stack.kit("upgrade", "--dry-run", "--json").stdout)
        assert plan["postgres"]["current"].startswith("15.") and plan["postgres"]["target"].startswith("17.")
        assert plan["data_migration"] is False and plan["anything_to_do"] is True
        assert any("dumped and loaded" in note for note in plan["notes"])

        done = json.loads(stack.kit("upgrade", "--yes", "--json").stdout)
        assert done["rows_after"] >= done["rows_before"] > 0
        assert _server_version(stack).startswith("17.")
        assert _digest_as_admin(stack) == before
        assert json.loads(stack.kit("users", "permissions", "alice", "--json").stdout) == grants
        assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)
        assert stack.kit("check").returncode == 0

        back = json.loads(stack.kit("upgrade", "--rollback", "--yes", "--json").stdout)
        assert back["restored_volume"] == done["previous_volume"]
        assert _server_version(stack).startswith("15.")
        assert _digest_as_admin(stack) == before
    finally:
        stack.destroy()


def test_upgrade_from_mlflow_2_keeps_every_byte_and_login(
    mlflow2_image: str, tmp_path_factory: pytest.TempPathFactory, fail_fast: None
) -> None:
    """MLflow 2.22 -> the kit's: every 3.x migration of both databases, on a copy."""
    stack = new_stack(tmp_path_factory.mktemp("mlflow2"), "mlkt-upg2")
    try:
        stack.init(env={"MLOPS_KIT_MLFLOW_IMAGE": mlflow2_image})
        stack.kit("up")
        assert _mlflow_version(stack) == MLFLOW2
        experiment_ids = _old_client(stack, mlflow2_image, "populate", "upg")
        stack.kit("users", "add", "alice")
        alice = stack.password("alice")
        _legacy_grant(stack, "alice", experiment_ids[0], "READ")
        # Bob is denied the experiment explicitly: MLflow's move to roles drops such denies.
        stack.kit("users", "add", "bob")
        bob = stack.password("bob")
        _legacy_grant(stack, "bob", experiment_ids[0], "NO_PERMISSIONS")
        assert stack.reads_experiments("bob", bob, experiment_ids[0]) == (403,)
        # What 2.22 serves, read by 2.22's client: runs, metric points, artifacts, models, traces.
        before = _old_client(stack, mlflow2_image, "digest", *EXPERIMENTS)
        runs = [run for e in before["experiments"].values() for run in e["runs"].values()]
        assert len(runs) >= 15 and any(run["artifacts"] for run in runs)
        assert before["registered_models"]["digest-model"]["aliases"] == {"champion": "1"}
        assert sum(len(e["traces"]) for e in before["experiments"].values()) == 3
        assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)

        stack.set_env("MLOPS_KIT_MLFLOW_IMAGE", NEW_IMAGE)
        # With a default permission that grants READ, bob's dropped deny would let him read: refused.
        stack.set_env("MLOPS_KIT_AUTH_DEFAULT_PERMISSION", "READ")
        refused = stack.kit("upgrade", "--yes", check=False)
        said = " ".join(refused.stderr.split())
        assert refused.returncode == 11 and "would widen access" in said and "bob: 1" in said, refused.stderr
        assert _mlflow_version(stack) == MLFLOW2
        stack.set_env("MLOPS_KIT_AUTH_DEFAULT_PERMISSION", "NO_PERMISSIONS")
        plan = json.loads(stack.kit("upgrade", "--dry-run", "--json").stdout)
        assert plan["mlflow"] == {"current": MLFLOW2, "target": "3.17.2"} and plan["data_migration"] is True
        assert plan["dropped_denies"] == {"bob": 1} and plan["widens_access"] is False
        done = json.loads(stack.kit("upgrade", "--yes", "--json").stdout)
        assert done["upgraded"] is True and done["rows_after"] >= done["rows_before"] > 0
        assert _mlflow_version(stack) == "3.17.2"

        # The same data through the current client; the old logins and grant act, bob is still kept out.
        assert _digest_as_admin(stack) == before
        assert stack.reads_experiments("bob", bob, *experiment_ids[:2]) == (403, 403)
        assert stack.reads_experiments("alice", alice, *experiment_ids[:2]) == (200, 403)
        assert stack.kit("check").returncode == 0
    finally:
        stack.destroy()
