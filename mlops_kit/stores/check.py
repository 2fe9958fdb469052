"""The bucket modes' store check (s3, minio): the job that runs before MLflow starts.

`mlflow-s3-check` runs in the MLflow image on MLflow's own networks, with its keys
and CA, so it sees the endpoint exactly as the server will. Compose runs it as the
one-shot `s3-check` service MLflow depends on; `up` and `doctor` run it first as a
job, to refuse a broken store with one line before any container changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlops_kit.checks import FAIL, OK, SKIP, WARN, CheckResult
from mlops_kit.engine.compose import ComposeProject
from mlops_kit.engine.jobs import last_json, last_line
from mlops_kit.errors import CommandError, KitError, PreflightError

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
    """Run the store check as a job (a store with its own services, MinIO, has them started first)."""
    store = project.config.store
    command = [CHECK_COMMAND, *(["--create-bucket"] if create_bucket else [])]
    try:
        # The job runs with --no-deps: the store's own services must be up first.
        for service in store.extra_services:
            if not project.is_running(service.name):
                project.start_services([service.name], wait_timeout=300)
        result = project.run_job(CHECK_SERVICE, command, check=False, timeout=180)
    except CommandError as error:
        hint = f"see: mlops-kit logs {store.extra_services[0].name}" if store.extra_services else "see: mlops-kit logs"
        return StoreCheck(False, f"the store check could not run: {error.message}", hint)
    return parse_verdict(result.stdout, result.stderr)


def require_store(project: ComposeProject, *, error: type[KitError] = PreflightError) -> None:
    """Before anything uses a bucket: check it (the kit's MinIO: start it, create the bucket) or raise ``error``.

    Volume modes have nothing to check here.
    """
    store = project.config.store
    if not store.in_bucket:
        return
    verdict = check_store(project, create_bucket=store.creates_bucket)
    if not verdict.ok:
        raise error(f"artifact store: {verdict.message}", hint=verdict.fix or None)


def parse_verdict(stdout: str, stderr: str) -> StoreCheck:
    """The check's JSON line (its last), or what it said when it printed none."""
    data = last_json(stdout)
    if isinstance(data, dict):
        if data.get("ok"):
            return StoreCheck(
                True,
                "; ".join(data.get("checks") or []),
                checks=tuple(data.get("checks") or ()),
                warnings=tuple(data.get("warnings") or ()),
            )
        return StoreCheck(False, str(data.get("message", "")), str(data.get("fix", "")), str(data.get("problem")))
    said = last_line(stderr or stdout) or "no output"
    return StoreCheck(False, f"the store check failed: {said}", "run again with -vv")


def store_check_result(project: ComposeProject) -> CheckResult | None:
    """`doctor`'s line for the artifact store (None in volume modes: nothing to check beyond the volume)."""
    config = project.config
    store = config.store
    if not store.in_bucket:
        return None
    name = f"artifact store ({config.artifact_store})"
    stopped = [s.name for s in store.extra_services if not project.is_running(s.name)]
    if stopped:
        running = "is" if len(stopped) == 1 else "are"
        return CheckResult(
            name, SKIP, f"{', '.join(stopped)} {running} not running (mlops-kit up starts it and creates the bucket)"
        )
    if project.missing_images():
        return CheckResult(name, SKIP, "needs the kit's images (mlops-kit build)")
    verdict = check_store(project)
    if not verdict.ok:
        return CheckResult(name, FAIL, verdict.message, verdict.fix)
    if verdict.warnings:
        return CheckResult(name, WARN, "; ".join(verdict.warnings), "")
    return CheckResult(name, OK, verdict.message)
