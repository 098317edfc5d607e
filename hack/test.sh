#!/usr/bin/env bash
# The test suite as `make test` runs it: every test but the real node's, in phases that keep a
# 2-core machine busy.
#
#   bash hack/test.sh [pytest args...]      # or: make test PYTEST_ARGS="..."
#
#   1. Library and backend tests (no cluster), in parallel workers. On a fresh machine the local
#      control plane is built and started in the background meanwhile (hack/cluster/up.sh; its
#      first build takes most of the CPU for 15-30 minutes, the library tests mostly wait on I/O).
#   2. Tests that need the cluster (marker `cluster`), in parallel workers: each has its own
#      namespace and its own operator processes, and mostly waits on the API server.
#   3. Tests marked `exclusive` (they restart a shared server or watch every namespace), one at a
#      time.
# When the cluster is already up (or KUBECONFIG names another one), phases 1 and 2 are one run.
#
# Environment: PYNCETTE_TEST_WORKERS (parallel workers; default 4, 0 = no xdist, one process).
# Exit status: non-zero if any phase failed; a phase that selects no test is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTEST=${PYTEST:-.venv/bin/pytest}
WORKERS=${PYNCETTE_TEST_WORKERS:-4}
LOG_DIR=.cluster/logs
BASE_MARK="not node"
failed=()

log() { printf '[test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# phase <name> <marker expression> <parallel 0|1> [pytest args...]
phase() {
    local name=$1 mark=$2 parallel=$3 start rc
    shift 3
    local xdist=()
    if ((parallel)) && [[ "$WORKERS" != 0 ]]; then
        xdist=(-n "$WORKERS" --dist worksteal)
    fi
    start=$SECONDS
    log "$name: pytest -m \"$mark\" ${xdist[*]} $*"
    "$PYTEST" -m "$mark" "${xdist[@]}" "$@"
    rc=$?
    # 5: no test selected (e.g. PYTEST_ARGS named one file of another phase).
    if ((rc != 0 && rc != 5)); then
        failed+=("$name")
    fi
    log "$name: exit $rc in $((SECONDS - start))s"
}

external_or_running() {
    [[ -n "${KUBECONFIG:-}" && "${KUBECONFIG}" != "$PWD/.cluster/kubeconfig" ]] && return 0
    # up.sh on a running cluster returns in about a second; on a missing one it would build.
    [[ -x .cluster/bin/kube-apiserver && -s .cluster/kubeconfig ]] || return 1
    .cluster/bin/kubectl --kubeconfig .cluster/kubeconfig get --raw /readyz >/dev/null 2>&1
}

main() {
    local total=$SECONDS up_pid=""
    mkdir -p "$LOG_DIR"
    if external_or_running; then
        phase "parallel" "$BASE_MARK and not exclusive" 1 "$@"
    else
        log "the local control plane is not up: starting it in the background (log: $LOG_DIR/test-cluster-up.log)"
        bash hack/cluster/up.sh >"$LOG_DIR/test-cluster-up.log" 2>&1 &
        up_pid=$!
        phase "library" "$BASE_MARK and not cluster and not exclusive" 1 "$@"
        log "waiting for the local control plane"
        if ! wait "$up_pid"; then
            tail -n 40 "$LOG_DIR/test-cluster-up.log" >&2
            log "the local control plane did not come up; the cluster tests will say so"
        fi
        phase "cluster" "$BASE_MARK and cluster and not exclusive" 1 "$@"
    fi
    phase "exclusive" "$BASE_MARK and exclusive" 0 "$@"
    log "all phases in $((SECONDS - total))s; failed: ${failed[*]:-none}"
    ((${#failed[@]} == 0))
}

main "$@"
