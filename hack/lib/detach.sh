# shellcheck shell=bash
# detach <command...>: exec the command in its own session with every file descriptor but
# stdin/stdout/stderr closed. Call it in a background subshell whose redirections are already set:
#
#   ( detach containerd --config ... ) </dev/null >>"$log" 2>&1 &
#   echo $! >"$pidfile"        # the daemon's pid: detach execs in place
#
# Why: the hack scripts serialise with flock on lock files, and a lock lives as long as any copy of
# its descriptor. A daemon started by a script that another locked script called (the registry,
# from node/images.sh, inside node/up.sh's lock) would otherwise keep the caller's lock forever,
# and the next `make node-up` would wait for it without end. Closing only the script's own lock
# descriptor misses the ones it inherited.
detach() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if ((fd > 2)); then
            eval "exec $fd>&-" 2>/dev/null || true
        fi
    done
    exec setsid "$@"
}
