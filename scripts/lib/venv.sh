# Sourced by scripts/mlops-kit and scripts/run-tests.sh: make sure .venv holds
# the kit (with the given extras), reinstalling only when pyproject.toml changed.
ensure_venv() {
    local extras="$1"
    local root venv stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
    venv="${MLOPS_KIT_VENV:-${root}/.venv}"
    stamp="${venv}/.mlops-kit-installed${extras}"
    want="$(sha256sum "${root}/pyproject.toml" | cut -d' ' -f1)"
    if [[ ! -x "${venv}/bin/python" ]]; then
        python3 -m venv "${venv}" || {
            echo "error: cannot create a virtualenv; run scripts/bootstrap-host.sh (installs python3-venv)" >&2
            return 1
        }
    fi
    if [[ ! -f "${stamp}" || "$(cat "${stamp}")" != "${want}" ]]; then
        echo "[mlops-kit] installing the kit into ${venv}" >&2
        "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check -e "${root}${extras}" || return 1
        echo "${want}" >"${stamp}"
    fi
    VENV_DIR="${venv}"
}
