# shellcheck shell=bash
# with_lock <file> <command...>: run the command holding an exclusive flock on <file>, then let go
# of it. Scripts that share state or caches (.cluster/, the build and image caches) serialise on
# these locks; the caller's `log` says when one has to wait.
#
# The lock is released as soon as the command returns, not when the script exits: build.sh takes
# one lock per component in turn, and kept each until its last build was done, so `make cluster-up`
# waited for skaffold's build (minutes) before it could use an etcd built long before. Under
# `set -e` a failing command ends the script, which releases the lock with it.
with_lock() {
    local file=$1 fd
    shift
    mkdir -p "$(dirname "$file")"
    exec {fd}>"$file"
    if ! flock -n "$fd"; then
        log "waiting for $file (another script holds it)"
        flock "$fd"
    fi
    "$@"
    local rc=$?
    exec {fd}>&-
    return "$rc"
}
