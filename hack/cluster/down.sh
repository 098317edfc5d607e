#!/usr/bin/env bash
# Stop the local control plane (idempotent): every process up.sh started, by pid file, and
# any leftover that runs one of the cluster's binaries (etcd, kube-*, kwok) with this
# checkout's .cluster/ directory on its command line. Logs stay in .cluster/logs/.
#
#   bash hack/cluster/down.sh      # or: make cluster-down
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ours <pid>: the process runs one of the cluster's binaries for this .cluster/ (whichever
# checkout's path to it started it).
ours() {
    local pid=$1 exe cmdline
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    exe=${exe% (deleted)}
    exe=${exe##*/}
    [[ " ${PROCESSES[*]} " == *" $exe "* ]] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    names_state_dir "$cmdline"
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
            if proc_alive "$pid"; then
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
    local name file pid exe clients=() apiservers=() etcds=()
    # The real node first, while the API server still answers (hack/node/down.sh).
    if [[ -d "$STATE_DIR/node" || -d /run/pyncette-node ]]; then
        bash "$REPO_ROOT/hack/node/down.sh"
    fi
    # Everything of ours: the pid files' processes and any leftover (a lost pid file, or a
    # process started by hand from .cluster/bin) that runs one of our binaries for this
    # checkout's .cluster/.
    local pids=()
    for name in "${PROCESSES[@]}"; do
        file=$(pidfile "$name")
        if pid_alive "$file" && ours "$(<"$file")"; then
            pids+=("$(<"$file")")
        fi
    done
    for file in /proc/[0-9]*; do
        pid=${file#/proc/}
        if [[ "$pid" != "$$" && " ${pids[*]} " != *" $pid "* ]] && ours "$pid"; then
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
        exe=${exe% (deleted)}
        case "${exe##*/}" in
            etcd) etcds+=("$pid") ;;
            kube-apiserver) apiservers+=("$pid") ;;
            *) clients+=("$pid") ;;
        esac
    done
    # Clients of the API server first (it waits for their connections to drain), then the
    # API server, then its storage.
    stop_pids "kwok, kube-scheduler, kube-controller-manager" "${clients[@]}"
    stop_pids kube-apiserver "${apiservers[@]}"
    stop_pids etcd "${etcds[@]}"
    for name in "${PROCESSES[@]}"; do
        rm -f "$(pidfile "$name")"
    done
    log "stopped"
}

main() {
    if [[ "${1:-}" == --keep-lock ]]; then
        # Called by up.sh, which already holds the lock.
        down
    elif [[ -d "$STATE_DIR" ]]; then
        with_lock "$STATE_DIR/.lock" down
    fi
}

main "$@"; exit $?
