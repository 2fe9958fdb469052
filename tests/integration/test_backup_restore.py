"""Backups that restore, byte for byte, and refuse what they should.

One populated stack ("A") is backed up, wiped and restored; then a second stack
("B", a new host with only the kit, the repository and its key) restores from
A's repository. Every refusal leaves the running stack as it was.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_kit.config.loader import load_config
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.runner import CommandRunner
from tests.harness import Stack, StackFactory, clean_env, cli_argv, new_stack, psql, running_stack
from tests.integration.mlflow_data import digest, populate

PREFIX = "bk"


@pytest.fixture(scope="module")
def stack_a(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("backup-a"), "mlkt-a") as stack:
        yield stack


@pytest.fixture(scope="module")
def populated(stack_a: Stack) -> dict[str, Any]:
    with stack_a.as_user("admin"):
        populate(stack_a.tracking_uri, PREFIX)
    # A user with a grant: the user database is backed up and restored too.
    stack_a.kit("users", "add", "carol")
    stack_a.kit("users", "grant", "carol", "READ", "experiment", f"{PREFIX}-experiment-0")
    return digest_of(stack_a)


def digest_of(stack: Stack, **options: Any) -> dict[str, Any]:
    """The stack's data as its admin reads it, plus its users and their grants."""
    with stack.as_user("admin"):
        data = digest(stack.tracking_uri, **options)
    users = json.loads(stack.kit("users", "list", "--json").stdout)
    data["users"] = sorted((u["username"], u["is_admin"]) for u in users)
    data["grants"] = json.loads(stack.kit("users", "permissions", "carol", "--json", check=False).stdout or "[]")
    return data


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")


def stack_volumes(stack: Stack) -> list[str]:
    """The volumes of this stack and of the stacks it made (a drill's ``<project>-drill``); not
    those of other tests, which another worker creates and removes meanwhile."""
    listed = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    return [name for name in listed.split() if name.startswith((f"{stack.project}_", f"{stack.project}-"))]


def job(stack: Stack, script: str) -> str:
    """Run a shell script in the stack's backup job container (the real image, real repository)."""
    project = ComposeProject(load_config(stack.directory, environ=clean_env()), CommandRunner())
    return project.run_job("backup", ["sh", "-c", script]).stdout


def assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 7, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_backup_writes_a_manifested_set(stack_a: Stack, populated: dict[str, Any]) -> None:
    result = json.loads(stack_a.kit("backup", "--json").stdout)
    assert result["artifact_files"] >= 8
    assert result["database_rows"] > 100
    assert result["snapshot_id"]
    sets = json.loads(stack_a.kit("backup", "list", "--json").stdout)
    assert [s["set_id"] for s in sets] == [result["set_id"]]
    status = json.loads(stack_a.kit("status", "--json").stdout)
    assert status["last_backup"]["set_id"] == result["set_id"]
    # The key lives apart from the backups.
    key = stack_a.directory / "secrets" / "restic_password"
    assert key.stat().st_mode & 0o777 == 0o600
    assert not list((stack_a.directory / "backups").rglob("restic_password"))


def test_second_backup_is_incremental(stack_a: Stack) -> None:
    result = json.loads(stack_a.kit("backup", "--json").stdout)
    assert result["files_new"] <= 3  # the new dump and manifest, not the artifacts again
    assert result["data_added_bytes"] < 2 * 2**20


def test_offsite_copy_holds_the_same_sets(stack_a: Stack, tmp_path: Path) -> None:
    offsite = tmp_path / "offsite-disk"
    result = json.loads(stack_a.kit("backup", "--json", env={"MLOPS_KIT_BACKUP_OFFSITE": str(offsite)}).stdout)
    assert result["offsite"] == str(offsite)
    project = ComposeProject(load_config(stack_a.directory, environ=clean_env()), CommandRunner())
    listed = project.run_job(
        "backup", ["restic", "--repo", "/offsite", "snapshots", "--json"], mounts=(f"{offsite}:/offsite",)
    ).stdout
    copied = json.loads(listed.strip().splitlines()[-1])
    # restic copy gives the copy a new id and keeps the source id in "original".
    assert result["snapshot_id"] in {s.get("original") for s in copied}
    assert f"set:{result['set_id']}" in {tag for s in copied for tag in s["tags"]}


def test_round_trip_down_volumes_restore_gives_identical_digest(stack_a: Stack, populated: dict[str, Any]) -> None:
    stack_a.kit("down", "--volumes", "--yes")
    assert stack_a.volumes() == []
    stack_a.kit("restore", "--yes")
    assert digest_of(stack_a) == populated


def test_wrong_key_is_refused_and_the_stack_untouched(stack_a: Stack, populated: dict[str, Any]) -> None:
    key = stack_a.directory / "secrets" / "restic_password"
    original = key.read_text()
    key.write_text("a-different-key-that-opens-nothing-123")
    try:
        result = stack_a.kit("restore", "--yes", check=False)
    finally:
        key.write_text(original)
    assert_refused(result, "does not open the backup repository")
    assert original not in result.stderr
    assert stack_a.status()["healthy"] is True
    assert digest_of(stack_a) == populated


def test_corrupt_repository_byte_is_refused(stack_a: Stack, populated: dict[str, Any]) -> None:
    packs = sorted((stack_a.directory / "backups" / "repository" / "data").rglob("*"), key=lambda p: p.stat().st_size)
    pack = [p for p in packs if p.is_file()][-1]  # the largest pack holds artifact data
    data = bytearray(pack.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF
    pack.write_bytes(bytes(data))
    volumes_before = set(stack_volumes(stack_a))
    try:
        result = stack_a.kit("restore", "--yes", check=False)
        drill = stack_a.kit("backup", "verify", check=False)
    finally:
        data[middle] ^= 0xFF
        pack.write_bytes(bytes(data))
    assert_refused(result)
    # restic's structure check, or the restore's own MAC verification, catches it.
    assert "cannot be restored" in result.stderr or "failed its integrity check" in result.stderr
    # A failed drill removes its throwaway stack too, volumes included.
    assert_refused(drill)
    assert set(stack_volumes(stack_a)) == volumes_before
    assert stack_a.status()["healthy"] is True
    assert digest_of(stack_a) == populated


def _doctored_latest(stack: Stack, edit: str) -> str:
    """Store a new latest set whose staged files were changed by ``edit`` (shell, in /tmp/x/staging/current)."""
    out = job(
        stack,
        (
            "set -e; restic restore latest --target /tmp/x --include /staging/current >/dev/null; "
            f"cd /tmp/x/staging/current && {edit}; "
            "rm -rf /staging/current && cp -a /tmp/x/staging/current /staging/current; "
            f"restic backup --json --quiet --host {stack.project} --tag mlops-kit --tag set:doctored "
            "/staging/current /data/artifacts; rm -rf /staging/current"
        ),
    )
    return str(json.loads(out.strip().splitlines()[-1])["snapshot_id"])


def _forget(stack: Stack, snapshot_id: str) -> None:
    job(stack, f"restic forget {snapshot_id} >/dev/null")


def test_truncated_dump_is_refused(stack_a: Stack, populated: dict[str, Any]) -> None:
    doctored = _doctored_latest(stack_a, "truncate -s 4096 postgres/mlflow.dump")
    try:
        result = stack_a.kit("restore", "--yes", check=False)
    finally:
        _forget(stack_a, doctored)
    assert_refused(result, "dump of mlflow does not match its checksum")
    assert digest_of(stack_a) == populated


def test_set_from_a_newer_mlflow_is_refused(stack_a: Stack) -> None:
    edit = (
        "python3 -c \"import json; p = 'manifest.json'; m = json.load(open(p)); "
        "m['mlflow_version'] = '9.0.0'; json.dump(m, open(p, 'w'))\""
    )
    doctored = _doctored_latest(stack_a, edit)
    try:
        result = stack_a.kit("restore", "--yes", check=False)
    finally:
        _forget(stack_a, doctored)
    assert_refused(result, "made by MLflow 9.0.0, newer than this MLflow 3.17.2")
    assert stack_a.status()["healthy"] is True


def test_two_backups_at_once_one_is_refused(stack_a: Stack) -> None:
    lock = stack_a.directory / "backups" / ".lock"
    first = subprocess.Popen(
        cli_argv("backup"),
        cwd=stack_a.directory,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while f"pid {first.pid}" not in (lock.read_text() if lock.exists() else ""):
            assert time.monotonic() < deadline, "the first backup never took the lock"
            time.sleep(0.05)
        second = stack_a.kit("backup", check=False)
    finally:
        _out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 8
    assert "holds the backup lock" in second.stderr
    assert "Traceback" not in second.stderr


def test_backup_while_a_client_writes_and_restore_on_a_new_host(
    stack_a: Stack, populated: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    finished: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        client = MlflowClient(stack_a.tracking_uri)
        experiment_id = client.create_experiment("concurrent-writes")
        payload = tmp_path_factory.mktemp("writer") / "payload.bin"
        for index in range(200):  # bounded in count and (below) in time
            if stop.is_set():
                break
            run = client.create_run(experiment_id, run_name=f"w{index}")
            payload.write_bytes(bytes([index % 256]) * 65536)
            client.log_artifact(run.info.run_id, str(payload))
            client.set_terminated(run.info.run_id)
            finished.append(run.info.run_id)

    # Secrets MLflow encrypts in the database: an AI-gateway key (under the passphrase
    # in secrets/mlflow_kek_passphrase) and a webhook's HMAC secret (a key derived from it).
    secret = {"secret_name": "backup-gateway-key", "secret_value": {"api_key": "sk-not-real"}, "provider": "openai"}
    created = stack_a.session("admin").post(
        stack_a.tracking_uri + "/api/3.0/mlflow/gateway/secrets/create", json=secret, timeout=30
    )
    assert created.status_code == 200, created.text
    with stack_a.as_user("admin"):
        MlflowClient(stack_a.tracking_uri).create_webhook(
            name="backup-hook", url="https://ci.example.invalid/hook", events=["model_version.created"], secret="s" * 24
        )

    with stack_a.as_user("admin"):
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(2)
        try:
            stack_a.kit("backup")
        finally:
            stop.set()
            thread.join(timeout=120)
    assert finished

    # A new host: the kit, a copy of the repository and its key, nothing else.
    stack_b = new_stack(tmp_path_factory.mktemp("backup-b"), prefix="mlkt-b")
    try:
        stack_b.init()
        shutil.copytree(stack_a.directory / "backups" / "repository", stack_b.directory / "backups" / "repository")
        shutil.copyfile(
            stack_a.directory / "secrets" / "restic_password", stack_b.directory / "secrets" / "restic_password"
        )
        stack_b.kit("restore", "--yes")
        restored = digest_of(stack_b, experiment_names=[f"{PREFIX}-experiment-0", f"{PREFIX}-experiment-1"])
        original = {
            k: v
            for k, v in populated["experiments"].items()
            if v["name"] in (f"{PREFIX}-experiment-0", f"{PREFIX}-experiment-1")
        }
        assert restored["experiments"] == original
        assert restored["registered_models"] == populated["registered_models"]
        # The users came along; the kit's admin logs in with the new host's password.
        assert restored["users"] == populated["users"]
        assert restored["grants"] == populated["grants"]
        # The stored secrets still decrypt on the new host: the set brought the passphrase.
        passphrase = (stack_a.directory / "secrets" / "mlflow_kek_passphrase").read_text()
        assert (stack_b.directory / "secrets" / "mlflow_kek_passphrase").read_text() == passphrase
        assert stat.S_IMODE((stack_b.directory / "secrets" / "mlflow_kek_passphrase").stat().st_mode) == 0o600
        wrapped, version = gateway_secret(stack_b, "backup-gateway-key")
        from mlflow.utils.crypto import KEKManager, unwrap_dek

        unwrap_dek(wrapped, KEKManager(passphrase=passphrase, kek_version=version).get_kek())
        with stack_b.as_user("admin"):
            hooks = MlflowClient(stack_b.tracking_uri).list_webhooks()  # reads (decrypts) each secret
        assert [h.name for h in hooks] == ["backup-hook"]

        with stack_b.as_user("admin"):
            mlflow.set_tracking_uri(stack_b.tracking_uri)
            client = MlflowClient(stack_b.tracking_uri)
            experiment = client.get_experiment_by_name("concurrent-writes")
            restored_runs = client.search_runs([experiment.experiment_id], max_results=1000)
            done = [r for r in restored_runs if r.info.status == "FINISHED"]
            assert done, "the backup should have caught some finished runs"
            for run in done:
                names = [a.path for a in client.list_artifacts(run.info.run_id)]
                assert names == ["payload.bin"], (run.info.run_name, names)
    finally:
        stack_b.destroy()


def test_scheduled_line_runs_under_a_cron_like_environment(stack_a: Stack, tmp_path: Path) -> None:
    cron_dir = tmp_path / "cron.d"
    cron_dir.mkdir()
    stack_a.kit("backup", "schedule", "--at", "03:00", "--verify-weekly", "sun", "--cron-dir", str(cron_dir))
    text = (cron_dir / f"mlops-kit-{stack_a.project}").read_text()
    path = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("PATH="))
    nightly = next(line for line in text.splitlines() if line.startswith("0 3 * * * root "))
    command = nightly.split(None, 6)[6]
    before = json.loads(stack_a.kit("status", "--json").stdout)["last_backup"]["set_id"]
    # What cron gives a job: these four variables, / as working folder, no virtualenv.
    cron_env = {"PATH": path, "SHELL": "/bin/sh", "HOME": "/root", "LOGNAME": "root"}
    result = subprocess.run(
        ["/bin/sh", "-c", command], cwd="/", env=cron_env, capture_output=True, text=True, timeout=900, check=False
    )
    log = (stack_a.directory / "backups" / "logs" / "backup.log").read_text()
    assert result.returncode == 0, log
    assert "== exit 0" in log
    after = json.loads(stack_a.kit("status", "--json").stdout)["last_backup"]["set_id"]
    assert after != before
    stack_a.kit("backup", "schedule", "--remove", "--cron-dir", str(cron_dir))
    assert not list(cron_dir.iterdir())


def test_down_volumes_also_deletes_volumes_a_restore_kept(stack_factory: StackFactory, tmp_path: Path) -> None:
    stack = stack_factory("mlkt-c")
    stack.init()
    stack.kit("up")
    stack.kit("backup")
    restored = json.loads(stack.kit("restore", "--yes", "--json").stdout)
    kept = restored["previous_volumes"]
    assert sorted(kept) == sorted([f"{stack.project}_postgres-data", f"{stack.project}_artifacts"])
    assert set(kept) <= set(stack.volumes())
    stack.kit("down", "--volumes", "--yes")
    assert stack.volumes() == []


def test_restore_drill_reports_rto_and_removes_its_stack(stack_a: Stack) -> None:
    report = json.loads(stack_a.kit("backup", "verify", "--json").stdout)
    assert report["artifacts_sampled"] >= 1
    assert report["rto_seconds"] > 0
    drill_project = f"{stack_a.project}-drill"
    leftovers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={drill_project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert leftovers == []
    volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True).stdout
    assert drill_project not in volumes


def gateway_secret(stack: Stack, name: str) -> tuple[bytes, int]:
    """(wrapped data key, kek version) of an AI-gateway secret, read straight from PostgreSQL."""
    query = f"SELECT encode(wrapped_dek, 'hex') || ' ' || kek_version FROM secrets WHERE secret_name = '{name}'"
    wrapped, version = psql(stack, query).split()
    return bytes.fromhex(wrapped), int(version)
