#!/usr/bin/env bash
# The local image registry: Debian's docker-registry on 127.0.0.1:5000 (plain HTTP, loopback
# only), where `make image` pushes and the local node's containerd pulls from.
#
#   bash hack/images/registry.sh up      # idempotent; make registry-up
#   bash hack/images/registry.sh down    # make registry-down
#   bash hack/images/registry.sh status
#
# Its blobs live in ${PYNCETTE_CACHE_DIR:-~/.cache/pyncette}/images/registry/ and survive a
# restart (so a warm push sends only the changed layers); pid file and log next to it.
# Environment: PYNCETTE_REGISTRY_PORT (default 5000).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PIDFILE="$CACHE_ROOT/registry-$REGISTRY_PORT.pid"
LOGFILE="$CACHE_ROOT/registry-$REGISTRY_PORT.log"
CONFIG="$CACHE_ROOT/registry-$REGISTRY_PORT.yml"

answers() { curl -fsS --max-time 2 "http://$REGISTRY/v2/" >/dev/null 2>&1; }

ours_alive() {
    local pid
    [[ -s "$PIDFILE" ]] || return 1
    pid=$(<"$PIDFILE")
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

up() {
    if answers; then
        log "registry: already serving on $REGISTRY"
        return 0
    fi
    if ss -Hltn "( sport = :$REGISTRY_PORT )" 2>/dev/null | grep -q .; then
        die "port $REGISTRY_PORT is taken by something that is not an image registry; set PYNCETTE_REGISTRY_PORT"
    fi
    apt_install docker-registry curl
    mkdir -p "$REGISTRY_DIR"
    cat >"$CONFIG" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
    log "registry: starting on $REGISTRY (blobs in $REGISTRY_DIR)"
    (detach docker-registry serve "$CONFIG") </dev/null >"$LOGFILE" 2>&1 &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + 30))
    until answers; do
        if ! ours_alive; then
            tail -n 20 "$LOGFILE" >&2 || true
            die "docker-registry exited (log: $LOGFILE)"
        fi
        ((SECONDS < deadline)) || die "docker-registry did not answer within 30s (log: $LOGFILE)"
        sleep 0.2
    done
}

down() {
    if ! ours_alive; then
        rm -f "$PIDFILE"
        log "registry: not running (started by us)"
        return 0
    fi
    local pid deadline
    pid=$(<"$PIDFILE")
    kill "$pid"
    deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$PIDFILE"
    log "registry: stopped"
}

status() {
    if answers; then
        echo "registry: serving on $REGISTRY"
    else
        echo "registry: not running"
        return 1
    fi
}

case "${1:-up}" in
    up) with_lock "$CACHE_ROOT/.lock-registry" up ;;
    down) with_lock "$CACHE_ROOT/.lock-registry" down ;;
    status) status ;;
    *) die "usage: registry.sh up|down|status" ;;
esac
