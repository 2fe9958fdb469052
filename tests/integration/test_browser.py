"""The MLflow UI in a real browser, through the front door, under the proxy's Content-Security-Policy.

Debian's Chromium, driven by Playwright (its Python package; no browser download:
it is pointed at /usr/bin/chromium, which scripts/run-tests.sh installs). A user
logs in (HTTP basic auth, as a browser sends it after the login prompt), opens an
experiment's run, sees its metric chart, and downloads an artifact. Any
Content-Security-Policy violation the page reports fails the test. Screenshots
land in tests/artifacts/ (kept by CI as the test's record).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Stack, running_stack

pytestmark = pytest.mark.usefixtures("fail_fast")

CHROMIUM = "/usr/bin/chromium"
#: As the environment's probe starts it: no sandbox as root, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[1] / "artifacts"
ARTIFACT_TEXT = "hello from the browser test\n"
#: The UI loads a few MB of JavaScript over TLS on 2 shared cores: wait for what a person would see.
UI_TIMEOUT_MS = 120_000
#: Reports every CSP violation into window.__cspViolations before the page's own scripts run.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def ui_stack(kit_images: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A stack where alice has an experiment with one run: a metric history and a text artifact."""
    import mlflow

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: scripts/run-tests.sh installs Debian's chromium package")
    with running_stack(tmp_path_factory.mktemp("browser"), "mlkt-ui") as stack:
        stack.kit("users", "add", "alice")
        with stack.as_user("alice") as variables, tempfile.TemporaryDirectory() as tmp:
            mlflow.set_tracking_uri(variables["MLFLOW_TRACKING_URI"])
            experiment = mlflow.set_experiment("browser-experiment")
            with mlflow.start_run(run_name="browser-run") as run:
                for step in range(20):
                    mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
                artifact = Path(tmp, "hello.txt")
                artifact.write_text(ARTIFACT_TEXT)
                mlflow.log_artifact(str(artifact))
        yield stack, {"experiment_id": experiment.experiment_id, "run_id": run.info.run_id}


def first_load(page: Any, text: str, console_errors: list[str]) -> None:
    """Wait for ``text`` on the app's first page; reload once if it never comes.

    Once, with both cores saturated by a second test worker, Chromium aborted the download
    of one of the app's script chunks (the proxy logged "client disconnected") and the
    page stayed blank, making no further request for two minutes. A user would reload;
    so does this test, once, and says so. A page that fails twice fails the test, with
    the browser's console errors."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_text(text).first.wait_for()
        return
    except PlaywrightTimeout:
        print(f"the UI did not show {text!r}; reloading once (console errors: {console_errors})")
    page.reload()
    try:
        page.get_by_text(text).first.wait_for()
    except PlaywrightTimeout as exc:
        raise AssertionError(f"the UI never showed {text!r}, also after a reload: {console_errors}") from exc


def test_the_ui_works_in_a_real_browser_under_the_csp(ui_stack: tuple[Stack, dict[str, str]], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    stack, ids = ui_stack
    SCREENSHOTS.mkdir(exist_ok=True)
    run_url = f"{stack.tracking_uri}/#/experiments/{ids['experiment_id']}/runs/{ids['run_id']}"
    console_errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                http_credentials={"username": "alice", "password": stack.password("alice")},
                # Chromium keeps its own trust store; the kit's CA and TLS are tested elsewhere.
                ignore_https_errors=True,
                accept_downloads=True,
                viewport={"width": 1400, "height": 900},
            )
            context.add_init_script(CSP_RECORDER)
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)

            # The experiment list names alice's experiment.
            page.goto(f"{stack.tracking_uri}/#/experiments")
            first_load(page, "browser-experiment", console_errors)
            page.screenshot(path=str(SCREENSHOTS / "browser-1-experiments.png"))

            # The run's metric chart: the loss history, drawn (Plotly's line, not a spinner).
            page.goto(f"{run_url}/model-metrics")
            page.get_by_text("browser-run (loss)").first.wait_for()
            line = page.locator(".js-plotly-plot .scatterlayer path.js-line").first
            line.wait_for()
            assert len(line.get_attribute("d") or "") > 20  # a path through the 20 points
            page.screenshot(path=str(SCREENSHOTS / "browser-2-metric-chart.png"))

            # The artifact: previewed, then downloaded byte for byte.
            page.goto(f"{run_url}/artifacts")
            page.get_by_text("hello.txt", exact=True).first.click()
            page.get_by_text(ARTIFACT_TEXT.strip()).first.wait_for()
            page.screenshot(path=str(SCREENSHOTS / "browser-3-artifact.png"))
            with page.expect_download() as download_info:
                page.locator('[data-component-id$="artifactview.tsx_337"]').first.click()
            download = download_info.value
            saved = tmp_path / download.suggested_filename
            download.save_as(saved)
            assert saved.read_text() == ARTIFACT_TEXT

            violations: list[Any] = page.evaluate("window.__cspViolations")
        finally:
            browser.close()
    assert violations == []
    assert not [text for text in console_errors if "Content Security Policy" in text], console_errors
