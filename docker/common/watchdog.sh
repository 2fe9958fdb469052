#!/bin/bash
# kit-watchdog: the container's healthcheck, with a watchdog in front of it.
#
#   kit-watchdog SERVICE_USER LIVENESS_COMMAND... -- HEALTHCHECK_COMMAND...
#
# Docker restarts a container only when its main process exits; a service that hangs
# (a deadlocked worker, a stuck NFS mount, a process frozen with SIGSTOP) stays
# "unhealthy" and serves nothing for as long as nobody looks. The common fix, an
# "autoheal" container, mounts the Docker socket: root on the host. This needs nothing:
# Docker runs the healthcheck as a new process in the container every few seconds,
# even when every process of the service is stuck. It asks the service a question only
# the service itself answers (LIVENESS_COMMAND, run as SERVICE_USER, at most 3 s). Once
# the service has answered since the container started, a service that stops answering
# for MLOPS_KIT_WATCHDOG_SECONDS (default 45; 0: never) is ended: every process of
# SERVICE_USER gets SIGKILL (the kernel allows it to that user: no capability needed),
# the container's init sees its child gone and exits, and the restart policy starts the
# container again. The reason goes to the container's log (`docker logs`, and the kit's
# `status`). A service that is alive gets the full healthcheck (HEALTHCHECK_COMMAND).
#
# A service that never answered since its start is left alone (a long first start or
# migration is not a hang); `up` reports it.
set -uo pipefail

user="${1:?usage: kit-watchdog SERVICE_USER LIVENESS_COMMAND... -- HEALTHCHECK_COMMAND...}"
shift
liveness=()
while (($#)) && [[ "$1" != "--" ]]; do
    liveness+=("$1")
    shift
done
[[ "${1:-}" == "--" ]] && shift
state="${MLOPS_KIT_WATCHDOG_STATE:-/tmp/.kit-watchdog}"
limit="${MLOPS_KIT_WATCHDOG_SECONDS:-45}"
# The container's log is init's stderr; the healthcheck's own output is only in `docker inspect`.
log="${MLOPS_KIT_WATCHDOG_LOG:-/proc/1/fd/2}"

as_user() { setpriv --reuid="${user}" --regid="${user}" --init-groups "$@"; }

# Root keeps the state (the service's user cannot fake an answer by touching a file).
mkdir -p -m 0700 "${state}" 2>/dev/null || true

if answer="$(as_user timeout --kill-after=1 3 "${liveness[@]}" 2>&1)"; then
    touch "${state}/answered"
    rm -f "${state}/silent-since"
    (($#)) || exit 0
    exec "$@"
fi

reason="$(printf '%s' "${answer:-no answer within 3 s}" | tr '\n' ' ' | cut -c1-200)"
reason="${reason#unhealthy: }"
if [[ ! -e "${state}/answered" || "${limit}" == "0" ]]; then
    echo "unhealthy: ${reason}" >&2
    exit 1
fi
now="$(date +%s)"
[[ -s "${state}/silent-since" ]] || echo "${now}" >"${state}/silent-since"
silent=$((now - $(<"${state}/silent-since")))
if ((silent < limit)); then
    echo "unhealthy for ${silent} s (the watchdog restarts it after ${limit} s): ${reason}" >&2
    exit 1
fi
message="mlops-kit watchdog: ${user} processes did not answer for ${silent} s (${reason}); ending them so Docker restarts the container"
echo "${message}" >"${log}" 2>/dev/null || true
echo "${message}" >&2
as_user bash -c 'kill -KILL -1' 2>/dev/null
exit 1
