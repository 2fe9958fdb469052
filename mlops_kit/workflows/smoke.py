"""`mlops-kit check`: an end-to-end smoke test through the public MLflow client API.

It does what a data scientist does (experiment, run, param, metric, artifact
upload and download) through the HTTPS proxy, logged in, checks that an
anonymous request is refused, and cleans up after itself. A failure names the step.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mlops_kit.errors import SmokeCheckError
from mlops_kit.services.metrics import SCRAPE_USER
from mlops_kit.services.mlflow import ServerAccess, as_mlflow_client, is_ready, patched_environ

logger = logging.getLogger(__name__)

ARTIFACT_BYTES = 2 * 2**20


@dataclass(frozen=True)
class StepResult:
    name: str
    seconds: float
    detail: str = ""

    def to_dict(self) -> dict[str, object]:
        return {"step": self.name, "seconds": round(self.seconds, 3), "detail": self.detail}


#: Fail fast: the MLflow client otherwise retries an unreachable server for minutes.
#: And it prints "View run ... at" lines to stdout, which would break --json.
CLIENT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def run_smoke_check(
    access: ServerAccess, on_step: Callable[[str], None] = lambda _s: None, *, metrics_password: str | None = None
) -> list[StepResult]:
    """Run every step against the server ``access`` names, as its user.

    With ``metrics_password``, also `/metrics`: refused without a login, answered for the
    `metrics` login, every service reachable from the metrics service.
    Raises :class:`SmokeCheckError` at the first failure.
    """
    tracking_uri = access.base_url
    results: list[StepResult] = []

    def step(name: str, action: Callable[[], Any], detail: str = "") -> Any:
        on_step(name)
        started = time.monotonic()
        try:
            value = action()
        except SmokeCheckError:
            raise
        except Exception as exc:  # any client error fails the named step
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise SmokeCheckError(name, message[:300], hint="see: mlops-kit logs mlflow") from exc
        results.append(StepResult(name, time.monotonic() - started, detail))
        return value

    def connect() -> None:
        if not is_ready(access):
            raise SmokeCheckError(
                "connect", f"no healthy MLflow server at {tracking_uri}", hint="is the stack up? mlops-kit status"
            )

    step("connect", connect, tracking_uri)

    def login_required() -> None:
        anonymous = replace(access, username=None, password=None)
        code = anonymous.request("GET", "/api/2.0/mlflow/experiments/search", params={"max_results": "1"}).status_code
        if code != 401:
            raise SmokeCheckError(
                "login required", f"an anonymous request got HTTP {code}, not 401", hint="see docs/security.md"
            )

    step("login required", login_required, "anonymous request refused (401)")

    if metrics_password is not None:
        scraper = replace(access, username=SCRAPE_USER, password=metrics_password)
        step("metrics", lambda: check_metrics(access, scraper), "login required; every service up")

    with (
        patched_environ(CLIENT_SETTINGS),
        as_mlflow_client(access),
        tempfile.TemporaryDirectory(prefix="mlops-kit-check-") as workdir,
    ):
        from mlflow.tracking import MlflowClient  # imported late: it is slow to import

        client = MlflowClient(tracking_uri=tracking_uri)
        name = f"mlops-kit-check-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        experiment_id = step("create experiment", lambda: client.create_experiment(name), name)
        run_ids: list[str] = []

        def clean_up() -> None:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            for run_id in run_ids:
                artifact_uri = client.get_run(run_id).info.artifact_uri
                get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).delete_artifacts()  # type: ignore[no-untyped-call]
                client.delete_run(run_id)
            client.delete_experiment(experiment_id)

        try:
            run = step("create run", lambda: client.create_run(experiment_id, run_name="smoke"))
            run_id = run.info.run_id
            run_ids.append(run_id)
            step("log param", lambda: client.log_param(run_id, "kit_check", "ok"))
            step(
                "log metric",
                lambda: [client.log_metric(run_id, "kit_metric", v, step=i) for i, v in enumerate((0.5, 0.25))],
            )

            def verify_logged() -> None:
                data = client.get_run(run_id).data
                if data.params.get("kit_check") != "ok" or data.metrics.get("kit_metric") != 0.25:
                    raise SmokeCheckError(
                        "read back run", f"param/metric not stored as logged: {data.params} {data.metrics}"
                    )
                history = client.get_metric_history(run_id, "kit_metric")
                if [m.value for m in history] != [0.5, 0.25]:
                    raise SmokeCheckError("read back run", "metric history differs from what was logged")

            step("read back run", verify_logged)

            payload = os.urandom(ARTIFACT_BYTES)
            upload_dir = Path(workdir, "upload")
            upload_dir.mkdir()
            (upload_dir / "payload.bin").write_bytes(payload)
            step(
                "upload artifact",
                lambda: client.log_artifacts(run_id, str(upload_dir), artifact_path="check"),
                f"{ARTIFACT_BYTES // 2**20} MiB",
            )

            def download_and_compare() -> None:
                local = client.download_artifacts(run_id, "check/payload.bin", dst_path=str(Path(workdir, "download")))
                got = hashlib.sha256(Path(local).read_bytes()).hexdigest()
                want = hashlib.sha256(payload).hexdigest()
                if got != want:
                    raise SmokeCheckError(
                        "download artifact", f"downloaded bytes differ (sha256 {got[:12]} != {want[:12]})"
                    )

            step("download artifact", download_and_compare, "sha256 matches")
            step("finish run", lambda: client.set_terminated(run_id))
        except BaseException:
            try:  # best effort: the step that failed is what the user needs to see
                clean_up()
            except Exception as exc:
                logger.warning("clean-up after a failed check also failed: %s", exc)
            raise
        step("clean up", clean_up, "artifacts, run and experiment deleted")
    return results


def check_metrics(access: ServerAccess, scraper: ServerAccess) -> None:
    """`/metrics` refuses an anonymous request, answers the scrape login, and reports every service up."""
    anonymous = replace(access, username=None, password=None)
    code = anonymous.request("GET", "/metrics").status_code
    if code != 401:
        raise SmokeCheckError(
            "metrics", f"/metrics without a login got HTTP {code}, not 401", hint="see docs/security.md"
        )
    response = scraper.request("GET", "/metrics")
    if response.status_code != 200:
        raise SmokeCheckError(
            "metrics",
            f"/metrics answered HTTP {response.status_code} to the metrics login",
            hint="see: mlops-kit logs metrics proxy",
        )
    down = [
        line.split('"')[1]
        for line in response.text.splitlines()
        if line.startswith('mlops_kit_service_up{service="') and line.rsplit(" ", 1)[-1] in ("0", "0.0")
    ]
    if down:
        raise SmokeCheckError(
            "metrics", f"the metrics service cannot reach: {', '.join(down)}", hint="see: mlops-kit logs metrics"
        )
