#!/usr/bin/env bash
# Stop the local control plane (idempotent): every process up.sh started, by pid file, then
# any leftover whose executable is one of our cached binaries and whose command line names
# this checkout's .cluster/ directory. Logs stay in .cluster/logs/.
#
#   bash hack/cluster/down.sh      # or: make cluster-down
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ours <pid>: the process runs one of our binaries for this checkout's cluster.
ours() {
    local pid=$1 exe cmdline
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [[ "$exe" == "$CACHE_ROOT"/* ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$cmdline" == *"$STATE_DIR/"* ]]
}

# stop_pids <name> <pid...>: SIGTERM, up to 15 s to exit, then SIGKILL.
stop_pids() {
    local name=$1 pid alive deadline
    shift
    [[ $# -gt 0 ]] || return 0
    log "stopping $name (pid $*)"
    kill -TERM "$@" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while :; do
        alive=()
        for pid in "$@"; do
            if kill -0 "$pid" 2>/dev/null; then
                alive+=("$pid")
            fi
        done
        [[ ${#alive[@]} -gt 0 ]] || return 0
        if ((SECONDS >= deadline)); then
            log "$name did not exit after SIGTERM; sending SIGKILL to ${alive[*]}"
            kill -KILL "${alive[@]}" 2>/dev/null || true
            return 0
        fi
        sleep 0.1
    done
}

down() {
    local i name file pid leftovers=()
    for ((i = ${#PROCESSES[@]} - 1; i >= 0; i--)); do
        name=${PROCESSES[i]}
        file=$(pidfile "$name")
        if pid_alive "$file" && ours "$(<"$file")"; then
            stop_pids "$name" "$(<"$file")"
        fi
        rm -f "$file"
    done
    # Leftovers: a lost pid file, or a process started by hand from .cluster/bin.
    for file in /proc/[0-9]*; do
        pid=${file#/proc/}
        if [[ "$pid" != "$$" ]] && ours "$pid"; then
            leftovers+=("$pid")
        fi
    done
    stop_pids "leftover processes" "${leftovers[@]}"
    log "stopped"
}

if [[ "${1:-}" == --keep-lock ]]; then
    # Called by up.sh, which already holds the lock.
    down
else
    [[ -d "$STATE_DIR" ]] || exit 0
    with_lock "$STATE_DIR/.lock" down
fi
