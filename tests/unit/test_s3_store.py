"""s3 and minio artifact modes without an engine: settings, init, rendered Compose, verdicts, migration plans."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from mlops_kit.config.envfile import HostFacts, init_env_file
from mlops_kit.config.loader import load_config
from mlops_kit.errors import CommandError, ConfigError
from mlops_kit.services import MINIO, SERVICES
from mlops_kit.stores import fresh_prefix
from mlops_kit.stores.check import parse_verdict
from mlops_kit.workflows.lifecycle import build_error
from mlops_kit.workflows.migrate import plan_target
from tests.unit.test_compose import compose_config

HOST = HostFacts(memory_bytes=8 * 2**30, cpus=2, hostname="mlhost", fqdn="mlhost", addresses=())
KEY_ID = "AKIAUNITTESTKEY00001"
SECRET = "unit/Test+Secret0123456789abcdefghijklmnop"
S3 = {
    "MLOPS_KIT_ARTIFACT_STORE": "s3",
    "MLOPS_KIT_S3_ENDPOINT_URL": "https://s3.corp.example:9000",
    "MLOPS_KIT_S3_BUCKET": "ml-artifacts",
}


def init_s3(kit_dir: Path, **extra: str) -> None:
    init_env_file(kit_dir, {**S3, **extra}, host=HOST, s3_keys=(KEY_ID, SECRET))


def test_s3_init_writes_keys_as_private_files_and_the_overlays(kit_dir: Path) -> None:
    init_s3(kit_dir)
    for name, value in (("s3_access_key_id", KEY_ID), ("s3_secret_access_key", SECRET)):
        path = kit_dir / "secrets" / name
        assert path.read_text().strip() == value
        assert path.stat().st_mode & 0o777 == 0o600
    env = (kit_dir / ".env").read_text()
    assert "COMPOSE_FILE=compose.yaml:docker/compose/artifacts-s3.yaml\n" in env
    assert SECRET not in env and KEY_ID not in env
    config = load_config(kit_dir, environ={})
    assert config.artifacts_destination == "kit-s3://ml-artifacts/artifacts"
    assert [p.name for p in config.compose_files] == ["compose.yaml", "artifacts-s3.yaml"]


def test_s3_mode_without_keys_names_the_missing_file(kit_dir: Path) -> None:
    init_env_file(kit_dir, S3, host=HOST)
    with pytest.raises(ConfigError) as caught:
        load_config(kit_dir, environ={})
    assert "s3_access_key_id" in caught.value.message
    assert "--s3-credentials-stdin" in (caught.value.hint or "")


def test_a_bad_key_is_refused_without_showing_it(kit_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        init_env_file(kit_dir, S3, host=HOST, s3_keys=(KEY_ID, "has a space in it"))
    assert "has a space" not in caught.value.message + (caught.value.hint or "")
    assert not (kit_dir / ".env").exists()


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MLOPS_KIT_S3_BUCKET", "Bad_Bucket"), ("MLOPS_KIT_S3_ENDPOINT_URL", "s3.example.com/path")],
)
def test_bad_s3_settings_name_the_variable(kit_dir: Path, variable: str, value: str) -> None:
    init_s3(kit_dir)
    with pytest.raises(ConfigError) as caught:
        load_config(kit_dir, environ={variable: value})
    assert caught.value.message.startswith(f"{variable}=")


def test_presigned_true_hands_mlflow_the_plain_s3_scheme(kit_dir: Path) -> None:
    init_s3(kit_dir, MLOPS_KIT_S3_PRESIGNED="true", MLOPS_KIT_S3_PREFIX="team/a")
    assert load_config(kit_dir, environ={}).artifacts_destination == "s3://ml-artifacts/team/a"


def rendered(kit_dir: Path) -> dict:  # type: ignore[type-arg]
    """`docker compose config` exactly as plain Compose reads the kit folder (COMPOSE_FILE in .env)."""
    config = load_config(kit_dir, environ={})
    files = (str(p.relative_to(kit_dir)) for p in config.compose_files)
    return compose_config(kit_dir, *files, env={"COMPOSE_PROFILES": "tools"})


def test_rendered_s3_mode_checks_the_store_before_mlflow(kit_dir: Path) -> None:
    init_s3(kit_dir)
    model = rendered(kit_dir)
    services = model["services"]
    mlflow = services["mlflow"]
    assert mlflow["depends_on"]["s3-check"]["condition"] == "service_completed_successfully"
    # Its one network is the way to the store (no network at all in the disk modes).
    assert set(mlflow["networks"]) == {"storage"} and "network_mode" not in mlflow
    assert mlflow["environment"]["MLOPS_KIT_S3_BUCKET"] == "ml-artifacts"
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "https://s3.corp.example:9000"
    assert mlflow["environment"]["TMPDIR"] == "/var/tmp/mlflow"
    assert {s["source"] for s in mlflow["secrets"]} >= {"s3_access_key_id", "s3_secret_access_key", "s3_ca"}
    assert services["s3-check"]["command"] == ["mlflow-s3-check"]
    assert services["s3-check"]["read_only"] is True
    # Backups read the bucket through their mirror folder, not the (unused) volume.
    backup_targets = {v["target"]: v for v in services["backup"]["volumes"]}
    assert backup_targets["/data/artifacts"]["type"] == "bind"
    assert backup_targets["/data/artifacts"]["source"].endswith("bucket-mirror")
    # The keys are files: neither their values nor a path to them sits in an environment.
    text = str(model)
    assert SECRET not in text and KEY_ID not in text
    assert model["networks"]["storage"].get("internal") is not True
    # Only the proxy publishes a port, as in every mode.
    assert [name for name, s in services.items() if s.get("ports")] == ["proxy"]


def test_rendered_s3_mode_joins_an_existing_network(kit_dir: Path) -> None:
    init_s3(kit_dir, MLOPS_KIT_S3_NETWORK="seaweedfs_default", MLOPS_KIT_S3_ENDPOINT_URL="http://seaweed:8333")
    network = rendered(kit_dir)["networks"]["storage"]
    assert network["external"] is True and network["name"] == "seaweedfs_default"


def test_rendered_minio_mode_is_internal_and_private(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_ARTIFACT_STORE": "minio"}, host=HOST)
    for name in ("s3_access_key_id", "s3_secret_access_key"):
        assert (kit_dir / "secrets" / name).stat().st_mode & 0o777 == 0o600
    env = (kit_dir / ".env").read_text()
    assert "MLOPS_KIT_S3_ENDPOINT_URL=http://minio:9000\n" in env
    model = rendered(kit_dir)
    services = model["services"]
    minio = services["minio"]
    assert minio["image"] == "mlops-kit/minio:RELEASE.2025-10-15T17-29-55Z-kit0.11.0"
    assert minio["build"]["dockerfile"] == "minio/Dockerfile"
    assert not minio.get("ports")
    assert minio["networks"] == {"storage": None}
    assert model["networks"]["storage"]["internal"] is True
    assert {(s["source"], s["target"]) for s in minio["secrets"]} == {
        ("s3_access_key_id", "minio_root_user"),
        ("s3_secret_access_key", "minio_root_password"),
    }
    assert minio["read_only"] is True and minio["cap_drop"] == ["ALL"]
    assert services["s3-check"]["command"] == ["mlflow-s3-check", "--create-bucket"]
    assert services["s3-check"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert model["volumes"]["minio-data"]["name"].endswith("_minio-data")


def test_plain_compose_reads_the_minio_overlays_from_env(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"MLOPS_KIT_ARTIFACT_STORE": "minio"}, host=HOST)
    result = subprocess.run(
        ["docker", "compose", "config", "--services"],
        cwd=kit_dir,
        capture_output=True,
        text=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {"minio", "s3-check", "mlflow"} <= set(result.stdout.split())


def test_check_verdicts_name_what_is_wrong() -> None:
    ok = parse_verdict('noise\n{"ok": true, "checks": ["bucket b: keys accepted"], "warnings": []}\n', "")
    assert ok.ok and ok.checks == ("bucket b: keys accepted",)
    bad = parse_verdict(
        '{"ok": false, "problem": "credentials", "message": "s3 refused the S3 keys", "fix": "put the right key"}', ""
    )
    assert not bad.ok and bad.problem == "credentials" and bad.fix == "put the right key"
    silent = parse_verdict("", "Traceback...\nmlflow-entrypoint: cannot read the secret file /run/secrets/x\n")
    assert not silent.ok and "cannot read the secret file" in silent.message


def test_migration_targets_are_fresh_and_resumable(kit_dir: Path) -> None:
    init_env_file(kit_dir, {"COMPOSE_PROJECT_NAME": "unit-stack"}, host=HOST)
    config = load_config(kit_dir, environ={})
    first = plan_target(config, "s3", {"MLOPS_KIT_S3_BUCKET": "ml-artifacts", "MLOPS_KIT_S3_PREFIX": "artifacts"})
    assert first.artifact_store == "s3" and first.s3_bucket == "ml-artifacts"
    assert first.s3_prefix.startswith("artifacts-m") and first.s3_prefix != config.s3_prefix
    # An interrupted migration resumes into the same place.
    again = plan_target(config, "s3", {"MLOPS_KIT_S3_BUCKET": "ml-artifacts"})
    assert again.s3_prefix == first.s3_prefix
    with pytest.raises(ConfigError):
        plan_target(config, "volume", {})


# What `docker compose build minio` printed on a host with no route to GitHub (abridged).
MINIO_BUILD_STDERR = """\
------
 > [minio source 4/4] RUN set -eu;     git -c transfer.fsckObjects=true clone --quiet --depth 1 ...:
0.516 fatal: unable to access 'https://github.com/minio/minio.git/': Could not resolve host: github.com
------
failed to solve: executor failed running [/bin/sh -c set -eu; git clone ...]: exit code: 128
"""


def test_a_failed_minio_build_names_the_image_the_cause_and_the_mirrors() -> None:
    error = CommandError(["docker", "compose", "build", "minio"], 1, "", MINIO_BUILD_STDERR)
    failure = build_error(error, (MINIO, *SERVICES))
    assert failure.message == (
        "building the minio image (docker/minio/Dockerfile) failed: fatal: unable to access "
        "'https://github.com/minio/minio.git/': Could not resolve host: github.com"
    )
    assert "MLOPS_KIT_MINIO_GIT_URL" in (failure.hint or "")
    assert "MLOPS_KIT_MINIO_IMAGE" in (failure.hint or "")
    assert "docker compose build minio" in (failure.hint or "")


def test_a_build_failure_without_step_output_keeps_the_command_error() -> None:
    error = CommandError(["docker", "compose", "build"], 1, "", "no space left on device")
    failure = build_error(error, SERVICES)
    assert failure.message.startswith("building an image failed: `docker compose build` failed with exit code 1")
    assert failure.hint == "full output: docker compose build"


def test_restore_and_migrate_replace_the_prefix_generation_either_made() -> None:
    assert fresh_prefix("artifacts", "r20261124040000") == "artifacts-r20261124040000"
    assert fresh_prefix("artifacts-m20261124031515", "r20261124040000") == "artifacts-r20261124040000"
    assert fresh_prefix("team/a-r20261124040000", "m20261125010101") == "team/a-m20261125010101"
    # An empty prefix must not become "-m...": a key prefix starts with a letter or digit.
    assert fresh_prefix("", "m20261124031515") == "m20261124031515"
