"""The S3 artifact store (s3 and minio modes): the check that runs before MLflow starts.

`mlflow-s3-check` runs in the MLflow image on MLflow's own networks, with its keys
and CA, so it sees the endpoint exactly as the server will. Compose runs it as the
one-shot `s3-check` service MLflow depends on; `up` and `doctor` run it first as a
job, to refuse a broken store with one line before any container changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mlops_kit.compose import ComposeProject
from mlops_kit.errors import CommandError, KitError, PreflightError
from mlops_kit.preflight import FAIL, OK, SKIP, WARN, CheckResult

CHECK_SERVICE = "s3-check"
CHECK_COMMAND = "mlflow-s3-check"


@dataclass(frozen=True)
class StoreCheck:
    """The check's verdict: ``problem`` names what is wrong (endpoint, tls, credentials, bucket, ...)."""

    ok: bool
    message: str
    fix: str = ""
    problem: str = ""
    checks: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)


def check_store(project: ComposeProject, *, create_bucket: bool = False) -> StoreCheck:
    """Run the store check as a job (minio mode: MinIO is started first, and the bucket created)."""
    config = project.config
    command = [CHECK_COMMAND, *(["--create-bucket"] if create_bucket else [])]
    try:
        # The job runs with --no-deps: in minio mode MinIO must be up first.
        if config.artifact_store == "minio" and not project.is_running("minio"):
            project.start_services(["minio"], wait_timeout=300)
        result = project.run_job(CHECK_SERVICE, command, check=False, timeout=180)
    except CommandError as error:
        return StoreCheck(False, f"the store check could not run: {error.message}", "see: mlops-kit logs minio")
    return parse_verdict(result.stdout, result.stderr)


def require_store(project: ComposeProject, *, error: type[KitError] = PreflightError) -> None:
    """Before anything uses the store: check it (minio mode: start MinIO, create the bucket) or raise ``error``."""
    verdict = check_store(project, create_bucket=project.config.artifact_store == "minio")
    if not verdict.ok:
        raise error(f"artifact store: {verdict.message}", hint=verdict.fix or None)


def parse_verdict(stdout: str, stderr: str) -> StoreCheck:
    """The check's JSON line (its last), or what it said when it printed none."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break
            if data.get("ok"):
                return StoreCheck(
                    True,
                    "; ".join(data.get("checks") or []),
                    checks=tuple(data.get("checks") or ()),
                    warnings=tuple(data.get("warnings") or ()),
                )
            return StoreCheck(False, str(data.get("message", "")), str(data.get("fix", "")), str(data.get("problem")))
    said = [line.strip() for line in (stderr or stdout).splitlines() if line.strip()]
    return StoreCheck(False, f"the store check failed: {said[-1] if said else 'no output'}", "run again with -vv")


def store_check_result(project: ComposeProject) -> CheckResult:
    """`doctor`'s line for the artifact store (bucket modes only)."""
    config = project.config
    name = f"artifact store ({config.artifact_store})"
    if config.artifact_store == "minio" and not project.is_running("minio"):
        return CheckResult(name, SKIP, "MinIO is not running (mlops-kit up starts it and creates the bucket)")
    if project.missing_images():
        return CheckResult(name, SKIP, "needs the kit's images (mlops-kit build)")
    verdict = check_store(project)
    if not verdict.ok:
        return CheckResult(name, FAIL, verdict.message, verdict.fix)
    if verdict.warnings:
        return CheckResult(name, WARN, "; ".join(verdict.warnings), "")
    return CheckResult(name, OK, verdict.message)
