#!/usr/bin/env bash
# Run the whole test suite: unit tests, then integration tests against the real
# Docker engine (scripts/bootstrap-host.sh must have run). Extra arguments go to
# pytest, e.g. `scripts/run-tests.sh -m "not integration"` for the fast layer only.
# MLOPS_KIT_TEST_WORKERS sets the number of pytest-xdist workers (default 2; 0: none).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib/venv.sh
source scripts/lib/venv.sh
ensure_venv "[test]"
# The browser test drives Debian's Chromium (Playwright cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1; then
    echo "[run-tests] installing chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
started=$(date +%s)
echo "[run-tests] static checks: ruff, mypy --strict, compose-lint --fail-on medium"
"${VENV_DIR}/bin/ruff" check mlops_kit tests benchmarks
"${VENV_DIR}/bin/ruff" format --check --quiet mlops_kit tests benchmarks
"${VENV_DIR}/bin/mypy"
"${VENV_DIR}/bin/compose-lint" check --fail-on medium --strict-config --quiet compose.yaml
# Two workers, each running one module at a time (a module's stack is its own), in the
# order tests/conftest.py gives (longest first; xdist would order by test count): the
# integration tests mostly wait on containers. MLOPS_KIT_TEST_WORKERS=0 runs in this process.
workers="${MLOPS_KIT_TEST_WORKERS:-2}"
set +e
"${VENV_DIR}/bin/python" -m pytest -n "${workers}" --dist loadfile --no-loadscope-reorder "$@"
status=$?
set -e
echo "[run-tests] pytest exit ${status} after $(( $(date +%s) - started )) s"
# Exit code 5 means no test was collected: that is a failure, never a pass.
if [[ ${status} -eq 5 ]]; then
    echo "[run-tests] error: no tests were collected" >&2
fi
exit "${status}"
