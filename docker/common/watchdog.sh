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
# migration is not a hang); `up` reports it. A liveness command that exits 75 says "busy
# on purpose" (PostgreSQL starting or stopping): unhealthy, but not silent.
#
# The state (a folder in /tmp) must belong to the user running this (root): the
# service's user can write to /tmp too and must not fake an answer or feed it values.
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
# A malformed limit ("45s") must not make every silence fatal: back to the default.
[[ "${limit}" =~ ^[0-9]+$ ]] || limit=45
limit=$((10#${limit}))
# The container's log is init's stderr; the healthcheck's own output is only in `docker inspect`.
log="${MLOPS_KIT_WATCHDOG_LOG:-/proc/1/fd/2}"

as_user() { setpriv --reuid="${user}" --regid="${user}" --init-groups "$@"; }
# Seconds since boot: a wall-clock step (NTP) neither kills early nor delays.
uptime_seconds() { local up; read -r up _ </proc/uptime; echo "${up%%.*}"; }

# The state belongs to whoever runs the healthcheck (root): /tmp is writable by the
# service's user too, who must not be able to fake an answer or feed this script values.
# A state folder someone else made first (or a link) turns the watchdog off, loudly.
mkdir -m 0700 "${state}" 2>/dev/null
if [[ -L "${state}" || ! -d "${state}" || "$(stat -c '%u %a' "${state}")" != "$(id -u) 700" ]]; then
    echo "kit-watchdog: ${state} is not a private folder of uid $(id -u); the watchdog is off" >&2
    limit=0
    state=""
fi

answer="$(as_user timeout --kill-after=1 3 "${liveness[@]}" 2>&1)"
status=$?
if ((status == 0)); then
    if [[ -n "${state}" ]]; then
        touch "${state}/answered"
        rm -f "${state}/silent-since"
    fi
    (($#)) || exit 0
    exec "$@"
fi

reason="$(printf '%s' "${answer:-no answer within 3 s}" | tr '\n' ' ' | cut -c1-200)"
reason="${reason#unhealthy: }"
# 75 (EX_TEMPFAIL): the service answered that it is busy on purpose (PostgreSQL starting
# up or shutting down): not healthy, but not silent either.
if ((status == 75)) && [[ -n "${state}" ]]; then
    rm -f "${state}/silent-since"
fi
if [[ -z "${state}" || ! -e "${state}/answered" || "${limit}" == "0" || "${status}" == "75" ]]; then
    echo "unhealthy: ${reason}" >&2
    exit 1
fi
now="$(uptime_seconds)"
since=""
[[ -f "${state}/silent-since" ]] && read -r since <"${state}/silent-since"
if [[ ! "${since}" =~ ^[0-9]+$ ]]; then
    since="${now}"
    echo "${since}" >"${state}/silent-since"
fi
silent=$((now - 10#${since}))
if ((silent < limit)); then
    echo "unhealthy for ${silent} s (the watchdog restarts it after ${limit} s): ${reason}" >&2
    exit 1
fi
message="mlops-kit watchdog: ${user} processes did not answer for ${silent} s (${reason}); ending them so Docker restarts the container"
echo "${message}" >"${log}" 2>/dev/null || true
echo "${message}" >&2
as_user bash -c 'kill -KILL -1' 2>/dev/null
exit 1
