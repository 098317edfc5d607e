#!/usr/bin/env bash
# The operator demo (what `make run` runs): a local control plane, the PyncetteTask CRD, the
# operator on embedded SQLite in the background, and examples/ptask-hello.yaml running every 10 s.
#
#   bash hack/demo.sh          # bring everything up, wait for the first successful run, show status
#   bash hack/demo.sh stop     # stop the operator (the cluster keeps running: make cluster-down)
#
# The operator keeps running after the script returns, so `kubectl get ptask -w` shows new runs:
#   export KUBECONFIG=$PWD/.cluster/kubeconfig; .cluster/bin/kubectl get ptask,pods
# Its log is .cluster/logs/operator.log, its pid .cluster/operator.pid, its SQLite file
# .cluster/pyncette-operator.db. Environment: DEMO_TIMEOUT (seconds to wait for a run, default 120),
# DEMO_NAMESPACE (default "default").
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=$PWD
CLUSTER_DIR=$ROOT/.cluster
PIDFILE=$CLUSTER_DIR/operator.pid
LOG=$CLUSTER_DIR/logs/operator.log
NS=${DEMO_NAMESPACE:-default}
TIMEOUT=${DEMO_TIMEOUT:-120}
export KUBECONFIG=$CLUSTER_DIR/kubeconfig
KUBECTL=$CLUSTER_DIR/bin/kubectl
OPERATOR=$ROOT/.venv/bin/pyncette-operator

stop_operator() {
    if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        local pid
        pid=$(cat "$PIDFILE")
        echo "Stopping the operator (pid $pid)"
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$PIDFILE"
}

if [[ "${1:-}" == "stop" ]]; then
    stop_operator
    exit 0
fi

step() { printf '\n==> %s\n' "$*"; }

step "Local control plane (first run builds it: tens of minutes)"
bash hack/cluster/up.sh

step "PyncetteTask CRD"
"$KUBECTL" apply -f crds/pyncettetask.yaml
"$KUBECTL" wait --for condition=established --timeout=60s crd/pyncettetasks.pyncette.dev

step "Operator on embedded SQLite, namespace $NS (log: ${LOG#"$ROOT"/})"
stop_operator
mkdir -p "$(dirname "$LOG")"
PYNCETTE_DATA_DIR=$CLUSTER_DIR PYTHONPATH=$ROOT/examples nohup "$OPERATOR" run \
    --namespace "$NS" --handlers handlers --status-interval 2 \
    --liveness http://127.0.0.1:18080/healthz >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 120); do
    curl -fsS --max-time 2 http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "The operator exited; its log:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    sleep 0.5
done
echo "operator pid $(cat "$PIDFILE"), healthy"

step "Sample task examples/ptask-hello.yaml (a Pod every 10 s)"
"$KUBECTL" -n "$NS" apply -f examples/ptask-hello.yaml
echo "Waiting up to ${TIMEOUT}s for its first successful run..."
deadline=$((SECONDS + TIMEOUT))
until [[ -n "$("$KUBECTL" -n "$NS" get ptask hello -o 'jsonpath={.status.lastSuccessfulTime}' 2>/dev/null)" ]]; do
    if ((SECONDS > deadline)); then
        echo "No successful run after ${TIMEOUT}s; the operator's log:" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
    sleep 1
done

step "kubectl get ptask"
"$KUBECTL" -n "$NS" get ptask -o wide
step "Its Pods"
"$KUBECTL" -n "$NS" get pods -l pyncette.dev/task=hello \
    -o custom-columns='NAME:.metadata.name,PHASE:.status.phase,SCHEDULED:.metadata.annotations.pyncette\.dev/scheduled-at'
step "Its conditions"
"$KUBECTL" -n "$NS" get ptask hello \
    -o 'jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
step "Its Events"
"$KUBECTL" -n "$NS" get events --field-selector involvedObject.name=hello --sort-by=.lastTimestamp | tail -n 6

cat <<MSG

The operator keeps running in the background (pid $(cat "$PIDFILE")):
  export KUBECONFIG=$KUBECONFIG
  $KUBECTL get ptask -w                                  # runs every 10 s
  $KUBECTL annotate ptask hello pyncette.dev/run-now=\$(date +%s) --overwrite   # one extra run now
  bash hack/demo.sh stop                                  # stop the operator
  make cluster-down                                       # stop the cluster
MSG
