#!/usr/bin/env bash
# Start the local control plane (idempotent): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok with one fake node, all as plain processes of this machine.
#
#   bash hack/cluster/up.sh        # or: make cluster-up
#
# Returns once /readyz is OK and node kwok-node-0 is Ready. Writes .cluster/kubeconfig
# (admin), .cluster/bin/ (kubectl, helm and the rest), .cluster/logs/*.log and one pid file
# per process. A cluster that is already up is left alone; a half-running one is restarted
# from scratch. Each fresh start begins with an empty etcd and new certificates.
#
# Environment: PYNCETTE_CLUSTER_PORT (API server port; default the first free of 6443,
# 16443, 26443), PYNCETTE_ETCD_PORT (default 12379, peer port +1), PYNCETTE_CACHE_DIR.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

READY_TIMEOUT=${PYNCETTE_CLUSTER_TIMEOUT:-120}

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

api_port() {
    # The port of a running cluster, from its kubeconfig.
    sed -n 's#^ *server: https://127.0.0.1:\([0-9]*\)$#\1#p' "$ADMIN_KUBECONFIG" 2>/dev/null | head -n1
}

apiserver_ready() {
    local port
    port=$(api_port)
    [[ -n "$port" ]] &&
        curl -fsS --max-time 5 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
            --key "$PKI_DIR/admin.key" "https://127.0.0.1:$port/readyz" >/dev/null 2>&1
}

# all_running: every process runs, from the binaries that .cluster/bin points at now and
# with the flags of CLUSTER_LAYOUT (after a version or flag change the cluster restarts).
all_running() {
    local p file
    for p in "${PROCESSES[@]}"; do
        file=$(pidfile "$p")
        pid_alive "$file" || return 1
        [[ "$(readlink "/proc/$(<"$file")/exe")" == "$(readlink -f "$BIN_DIR/$p")" ]] || return 1
    done
    # Started by this version of the script (its flags).
    [[ "$(cat "$STATE_DIR/layout" 2>/dev/null)" == "$CLUSTER_LAYOUT" ]]
}

# adopt_restarted: a process whose pid file is stale may have been restarted by hand or by a
# test (the chaos benchmark restarts the API server as its own child): a process running the same
# binary for this .cluster/ takes the pid file over, instead of the whole cluster restarting.
adopt_restarted() {
    local p file exe dir pid cmdline
    for p in "${PROCESSES[@]}"; do
        file=$(pidfile "$p")
        ! pid_alive "$file" || continue
        exe=$(readlink -f "$BIN_DIR/$p")
        for dir in /proc/[0-9]*; do
            pid=${dir#/proc/}
            [[ "$(readlink "$dir/exe" 2>/dev/null)" == "$exe" ]] || continue
            proc_alive "$pid" || continue
            cmdline=$(tr '\0' ' ' <"$dir/cmdline" 2>/dev/null) || continue
            if names_state_dir "$cmdline"; then
                log "$p runs as pid $pid, not as its pid file says: adopting it"
                echo "$pid" >"$file"
                break
            fi
        done
    done
}

any_running() {
    local p
    for p in "${PROCESSES[@]}"; do
        pid_alive "$(pidfile "$p")" && return 0
    done
    return 1
}

link_binaries() {
    local c bin dir
    mkdir -p "$BIN_DIR"
    for c in "${COMPONENTS[@]}"; do
        dir=$(component_dir "$c")
        for bin in $(component_binaries "$c"); do
            ln -sfn "$dir/$bin" "$BIN_DIR/$bin"
        done
    done
}

choose_port() {
    local p
    if [[ -n "${PYNCETTE_CLUSTER_PORT:-}" ]]; then
        if port_busy "$PYNCETTE_CLUSTER_PORT"; then
            die "PYNCETTE_CLUSTER_PORT=$PYNCETTE_CLUSTER_PORT is already in use"
        fi
        echo "$PYNCETTE_CLUSTER_PORT"
        return
    fi
    for p in 6443 16443 26443; do
        if ! port_busy "$p"; then
            echo "$p"
            return
        fi
    done
    die "ports 6443, 16443 and 26443 are all busy; set PYNCETTE_CLUSTER_PORT"
}

# The API server must advertise a non-loopback address; it only listens on 127.0.0.1, so
# nothing ever connects to this address.
advertise_address() {
    local ip
    for ip in $(hostname -I 2>/dev/null); do
        if [[ "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && "$ip" != 127.* ]]; then
            echo "$ip"
            return
        fi
    done
    # No IPv4 address at all (an isolated sandbox): a documentation address (RFC 5737).
    echo 192.0.2.1
}

# ---------------------------------------------------------------------------- certificates

# kubeconfig <file> <client cert name> <port>
kubeconfig() {
    local file=$1 name=$2 port=$3
    cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pyncette-local
  cluster:
    server: https://127.0.0.1:$port
    certificate-authority-data: $(base64 -w0 "$PKI_DIR/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 "$PKI_DIR/$name.crt")
    client-key-data: $(base64 -w0 "$PKI_DIR/$name.key")
contexts:
- name: pyncette-local
  context:
    cluster: pyncette-local
    user: $name
current-context: pyncette-local
EOF
    chmod 600 "$file.tmp"
    mv "$file.tmp" "$file"
}

make_pki() {
    local port=$1 advertise=$2
    rm -rf "$PKI_DIR"
    mkdir -p "$PKI_DIR"
    chmod 700 "$PKI_DIR"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout "$PKI_DIR/ca.key" -out "$PKI_DIR/ca.crt" -subj "/CN=pyncette-local-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    sign_cert "$PKI_DIR" apiserver "/CN=kube-apiserver" serverAuth \
        "IP:127.0.0.1, IP:$advertise, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
    sign_cert "$PKI_DIR" admin "/O=system:masters/CN=pyncette-admin" clientAuth
    # The API server's client certificate towards kubelets (kubectl logs/exec on the real node).
    sign_cert "$PKI_DIR" apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    sign_cert "$PKI_DIR" kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
    sign_cert "$PKI_DIR" kube-scheduler "/CN=system:kube-scheduler" clientAuth
    sign_cert "$PKI_DIR" kwok "/O=system:masters/CN=kwok-controller" clientAuth
    # ServiceAccount token signing key.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI_DIR/sa.key" 2>/dev/null
    openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
    local who
    for who in kube-controller-manager kube-scheduler kwok; do
        kubeconfig "$PKI_DIR/$who.kubeconfig" "$who" "$port"
    done
}

# ------------------------------------------------------------------------------- processes

# start <name> <command...>: run detached (own session, no terminal, no inherited descriptor),
# output to logs/<name>.log, pid to <name>.pid.
start() {
    local name=$1
    shift
    log "starting $name"
    (detach "$@") </dev/null >"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$(pidfile "$name")"
}

# wait_for <what> <process> <command...>: poll until the command succeeds; fail early when
# the process has died, and on timeout.
wait_for() {
    local what=$1 proc=$2 deadline
    shift 2
    deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$(pidfile "$proc")"; then
            tail -n 40 "$LOG_DIR/$proc.log" >&2 || true
            die "$proc exited while waiting for $what (log: $LOG_DIR/$proc.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$LOG_DIR/$proc.log" >&2 || true
            die "timed out after ${READY_TIMEOUT}s waiting for $what (log: $LOG_DIR/$proc.log)"
        fi
        sleep 0.2
    done
}

# kwok's node is Ready and has no taint but, while the real node is up, the one that keeps
# ordinary Pods off it (hack/node/up.sh).
node_untainted_and_ready() {
    local out
    out=$(kubectl_admin get node "$NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints[*].key}') || return 1
    [[ "$out" == "True/" || "$out" == "True/pyncette.dev/simulated" ]]
}

start_cluster() {
    local port advertise
    port=$(choose_port)
    advertise=$(advertise_address)
    if port_busy "$ETCD_CLIENT_PORT" || port_busy "$ETCD_PEER_PORT"; then
        die "etcd port $ETCD_CLIENT_PORT or $ETCD_PEER_PORT is busy; set PYNCETTE_ETCD_PORT"
    fi

    # A real node belongs to the cluster it joined (its certificates to the old CA).
    if [[ -d "$STATE_DIR/node" || -d /run/pyncette-node ]]; then
        bash "$REPO_ROOT/hack/node/down.sh"
    fi
    rm -rf "$STATE_DIR/etcd" "$STATE_DIR/kwok"
    echo "$CLUSTER_LAYOUT" >"$STATE_DIR/layout"
    rm -f "$ADMIN_KUBECONFIG"
    mkdir -p "$LOG_DIR" "$STATE_DIR/kwok/home"
    make_pki "$port" "$advertise"
    cp "$CLUSTER_HACK_DIR/kwok/stages.yaml" "$STATE_DIR/kwok/stages.yaml"

    start etcd "$BIN_DIR/etcd" \
        --name=pyncette-local \
        --data-dir="$STATE_DIR/etcd" \
        --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster="pyncette-local=http://127.0.0.1:$ETCD_PEER_PORT" \
        --unsafe-no-fsync=true \
        --log-level=warn
    wait_for "etcd health" etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health"

    start kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address=0.0.0.0 \
        --secure-port="$port" \
        --advertise-address="$advertise" \
        --endpoint-reconciler-type=lease \
        --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
        --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority="$PKI_DIR/ca.crt" \
        --kubelet-preferred-address-types=InternalIP \
        --cert-dir="$PKI_DIR" \
        --tls-cert-file="$PKI_DIR/apiserver.crt" \
        --tls-private-key-file="$PKI_DIR/apiserver.key" \
        --client-ca-file="$PKI_DIR/ca.crt" \
        --service-account-issuer=https://kubernetes.default.svc.cluster.local \
        --service-account-key-file="$PKI_DIR/sa.pub" \
        --service-account-signing-key-file="$PKI_DIR/sa.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --authorization-mode=Node,RBAC \
        --enable-admission-plugins=NodeRestriction \
        --allow-privileged=true \
        --profiling=false \
        --v=1
    wait_for "kube-apiserver /readyz" kube-apiserver curl -fsS --max-time 5 --cacert "$PKI_DIR/ca.crt" \
        --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "https://127.0.0.1:$port/readyz"
    kubeconfig "$ADMIN_KUBECONFIG" admin "$port"

    start kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
        --authentication-kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
        --authorization-kubeconfig="$PKI_DIR/kube-controller-manager.kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port="$KCM_PORT" \
        --leader-elect=false \
        --node-monitor-period=1s \
        --use-service-account-credentials=true \
        --service-account-private-key-file="$PKI_DIR/sa.key" \
        --root-ca-file="$PKI_DIR/ca.crt" \
        --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
        --cluster-signing-key-file="$PKI_DIR/ca.key" \
        --service-cluster-ip-range="$SERVICE_CIDR" \
        --cluster-name=pyncette-local \
        --profiling=false \
        --v=1
    start kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$PKI_DIR/kube-scheduler.kubeconfig" \
        --bind-address=127.0.0.1 \
        --secure-port="$SCHEDULER_PORT" \
        --leader-elect=false \
        --profiling=false \
        --v=1
    # kwok reads ~/.kwok/kwok.yaml if it exists: give it a HOME of its own.
    start kwok env HOME="$STATE_DIR/kwok/home" "$BIN_DIR/kwok" \
        --kubeconfig="$PKI_DIR/kwok.kubeconfig" \
        --config="$STATE_DIR/kwok/stages.yaml" \
        --manage-all-nodes=false \
        --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
        --node-lease-duration-seconds=40 \
        --node-ip=127.0.0.1 \
        --cidr="$POD_CIDR"

    # The one fake node; no taints, so that plain Pods schedule onto it.
    kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/hostname: $NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
status:
  capacity: {cpu: "64", memory: 256Gi, pods: "1000"}
  allocatable: {cpu: "64", memory: 256Gi, pods: "1000"}
EOF
    wait_for "node $NODE_NAME Ready and untainted" kwok node_untainted_and_ready
    # Pods can only be created once the namespace's default ServiceAccount exists.
    wait_for "ServiceAccount default/default" kube-controller-manager \
        kubectl_admin get serviceaccount default --namespace default
}

stop_after_failure() {
    local rc=$?
    if ((rc != 0)); then
        log "start failed; stopping what was started (logs kept in $LOG_DIR)"
        bash "$CLUSTER_HACK_DIR/down.sh" --keep-lock || true
    fi
    exit "$rc"
}

up() {
    local t0=$SECONDS tool
    for tool in go curl openssl setsid flock; do
        command -v "$tool" >/dev/null || die "$tool is required but not installed"
    done
    mkdir -p "$STATE_DIR" "$LOG_DIR"
    bash "$CLUSTER_HACK_DIR/build.sh"
    link_binaries
    # A cluster that runs, or is only briefly away (a process restarted by a test), is reused.
    local settle=$((SECONDS + 30))
    while :; do
        adopt_restarted
        if all_running && apiserver_ready && node_untainted_and_ready; then
            log "already running: KUBECONFIG=$ADMIN_KUBECONFIG ($(api_port))"
            return 0
        fi
        any_running && ((SECONDS < settle)) || break
        sleep 1
    done
    if any_running; then
        log "a previous cluster is only partly running (or runs older binaries); restarting it from scratch"
        bash "$CLUSTER_HACK_DIR/down.sh" --keep-lock
    fi
    trap stop_after_failure EXIT
    start_cluster
    trap - EXIT
    log "ready in $((SECONDS - t0))s: export KUBECONFIG=$ADMIN_KUBECONFIG (https://127.0.0.1:$(api_port)); kubectl and helm are in $BIN_DIR"
}

with_lock "$STATE_DIR/.lock" up; exit $?
