#!/usr/bin/env bash
# Join a real node to the local control plane (idempotent): containerd (with runc and the CNI
# bridge plugin, from Debian), kubelet and kube-proxy (built with the control plane), as
# background processes of this machine. Needs root and a running control plane (make cluster-up).
# Starts the local registry (hack/images/registry.sh up) and builds and pushes the images Pods
# pull from it (hack/node/images.sh) first.
#
#   bash hack/node/up.sh        # or: make node-up
#
# Returns once node pyncette-node is Ready, kube-proxy serves and the `kubernetes` Service has
# its endpoint. Ordinary Pods then land on this node: kwok's node gets the taint
# pyncette.dev/simulated=true:NoSchedule (removed again by node-down). See docs/local-cluster.md.
#
# Files: .cluster/node/ (configs, certificates), .cluster/logs/{containerd,kubelet,kube-proxy}.log,
# .cluster/<process>.pid; machine-wide /var/lib/pyncette-node (images, kubelet's pods) and
# /run/pyncette-node. Environment: PYNCETTE_NODE_TIMEOUT (seconds per step, default 120).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

READY_TIMEOUT=${PYNCETTE_NODE_TIMEOUT:-120}
PKI="$NODE_DIR/pki"

kubectl_admin() { "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

api_server() { sed -n 's#^ *server: \(https://.*\)$#\1#p' "$ADMIN_KUBECONFIG" | head -n1; }

# ---------------------------------------------------------------------------- certificates

node_kubeconfig() {
    local file=$1 name=$2
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pyncette-local
  cluster:
    server: $(api_server)
    certificate-authority: $PKI_DIR/ca.crt
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: pyncette-local
  context: {cluster: pyncette-local, user: $name}
current-context: pyncette-local
EOF
    chmod 600 "$file"
}

# ------------------------------------------------------------------------------ configuration

write_config() {
    local ip=$1
    rm -rf "$NODE_DIR"
    mkdir -p "$PKI" "$CNI_CONF_DIR" "$NODE_DIR/certs.d/docker.io" "$NODE_DIR/certs.d/$REGISTRY"
    chmod 700 "$PKI"
    # Remember which CA the node's certificates belong to: a fresh cluster-up makes a new one.
    sha256sum "$PKI_DIR/ca.crt" | cut -d' ' -f1 >"$NODE_DIR/ca.sha256"
    sign_cert "$PKI" kubelet "/O=system:nodes/CN=system:node:$REAL_NODE_NAME" clientAuth
    sign_cert "$PKI" kubelet-serving "/CN=$REAL_NODE_NAME" serverAuth \
        "IP:$ip, DNS:$REAL_NODE_NAME, DNS:$(hostname)"
    sign_cert "$PKI" kube-proxy "/CN=system:kube-proxy" clientAuth
    node_kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet
    node_kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" kube-proxy

    cat >"$NODE_DIR/containerd.toml" <<EOF
# containerd for the local node (written by hack/node/up.sh). See docs/local-cluster.md.
version = 2
root = "$CONTAINERD_ROOT"
state = "$CONTAINERD_STATE"
# Plugins that need what this machine lacks, or that nothing here uses.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Without CAP_SYS_RESOURCE no process may lower its oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF_DIR"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_DIR/certs.d"
EOF
    # docker.io/library/busybox and the rest come from the local registry (a mirror of docker.io).
    cat >"$NODE_DIR/certs.d/docker.io/hosts.toml" <<EOF
[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
    cat >"$NODE_DIR/certs.d/$REGISTRY/hosts.toml" <<EOF
server = "http://$REGISTRY"

[host."http://$REGISTRY"]
  capabilities = ["pull", "resolve", "push"]
EOF
    cat >"$CNI_CONF_DIR/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CNI_DATA_DIR",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
    local hard_nofile
    hard_nofile=$(ulimit -Hn)
    [[ "$hard_nofile" =~ ^[0-9]+$ ]] || hard_nofile=1000000
    cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# No systemd here, and cgroup v1 (1.35+ would need failCgroupV1: false spelled out).
cgroupDriver: cgroupfs
failCgroupV1: false
# No CAP_SYS_RESOURCE: the kubelet may neither lower its oom_score_adj nor raise its rlimits.
oomScoreAdj: 0
maxOpenFiles: $hard_nofile
failSwapOn: false
podLogsDir: $NODE_VAR/pod-logs
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
# A development machine's disk and memory: evict late, never collect images (they come from the
# local registry, and the pause image is not pinned by containerd 1.6).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
protectKernelDefaults: false
nodeStatusUpdateFrequency: 5s
EOF
    cat >"$NODE_DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $NODE_DIR/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $REAL_NODE_NAME
clusterCIDR: $NODE_POD_CIDR
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
# Leave the machine's sysctls alone (conntrack sizes, route_localnet) and its oom_score_adj.
oomScoreAdj: 0
conntrack: {maxPerCore: 0, min: 0}
iptables: {localhostNodePorts: false, syncPeriod: 30s, minSyncPeriod: 0s}
EOF
}

# ------------------------------------------------------------------------------- processes

# start <name> <command...>: detached, output to logs/<name>.log, pid to <name>.pid.
start() {
    local name=$1
    shift
    log "starting $name"
    (detach "$@") </dev/null >>"$LOG_DIR/$name.log" 2>&1 &
    echo $! >"$(pidfile "$name")"
}

wait_for() {
    local what=$1 proc=$2 deadline
    shift 2
    deadline=$((SECONDS + READY_TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        # A process found dead gets one more check first: the check may start it again (the kubelet
        # may exit between kubelet_ready's look at it and this one).
        if [[ "$proc" != - ]] && ! pid_alive "$(pidfile "$proc")" &&
            ! { "$@" >/dev/null 2>&1 || pid_alive "$(pidfile "$proc")"; }; then
            tail -n 40 "$LOG_DIR/$proc.log" >&2 || true
            die "$proc exited while waiting for $what (log: $LOG_DIR/$proc.log)"
        fi
        if ((SECONDS >= deadline)); then
            [[ "$proc" == - ]] || tail -n 40 "$LOG_DIR/$proc.log" >&2 || true
            die "timed out after ${READY_TIMEOUT}s waiting for $what"
        fi
        sleep 0.2
    done
}

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version; }

node_ready() {
    [[ "$(kubectl_admin get node "$REAL_NODE_NAME" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

proxy_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz"; }

# The `kubernetes` Service's ClusterIP is DNATed to the API server by kube-proxy.
kubernetes_service_routed() {
    local ip
    ip=$(kubectl_admin get endpointslices -n default -l kubernetes.io/service-name=kubernetes \
        -o 'jsonpath={.items[0].endpoints[0].addresses[0]}')
    [[ -n "$ip" ]] && iptables -t nat -S KUBE-SERVICES 2>/dev/null | grep -q 'default/kubernetes:https'
}

import_pause() {
    if ! ctr_k8s images check "name==$PAUSE_IMAGE" 2>/dev/null | grep -q complete; then
        log "importing $PAUSE_IMAGE into containerd"
        podman save --format docker-archive "$PAUSE_IMAGE" | ctr_k8s images import - >/dev/null
    fi
}

all_running() {
    local p
    for p in "${NODE_PROCESSES[@]}"; do
        pid_alive "$(pidfile "$p")" || return 1
    done
}

any_running() {
    local p
    for p in "${NODE_PROCESSES[@]}"; do
        pid_alive "$(pidfile "$p")" && return 0
    done
    return 1
}

same_ca() {
    [[ -f "$NODE_DIR/ca.sha256" && "$(<"$NODE_DIR/ca.sha256")" == "$(sha256sum "$PKI_DIR/ca.crt" | cut -d' ' -f1)" ]]
}

taint_kwok() {
    kubectl_admin taint node "$NODE_NAME" "$KWOK_TAINT" --overwrite >/dev/null
}

start_kubelet() {
    local ip=$1
    start kubelet "$BIN_DIR/kubelet" \
        --config="$NODE_DIR/kubelet.yaml" \
        --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
        --hostname-override="$REAL_NODE_NAME" \
        --node-ip="$ip" \
        --node-labels="$REAL_NODE_LABEL" \
        --root-dir="$KUBELET_ROOT" \
        --v=1
}

# kubelet_ready <ip>: node Ready (for wait_for). A kubelet that exited because containerd's CRI
# service was still initialising ("server is not initialized yet": containerd answers `ctr version`
# before its CRI plugin is ready, and the kubelet checks CRI once at start) is started again first,
# up to 20 times; any other exit is left to wait_for to report.
KUBELET_RESTARTS=0
kubelet_ready() {
    if ! pid_alive "$(pidfile kubelet)" && ((KUBELET_RESTARTS < 20)) &&
        tail -n 5 "$LOG_DIR/kubelet.log" | grep -q "server is not initialized yet"; then
        KUBELET_RESTARTS=$((KUBELET_RESTARTS + 1))
        echo "up.sh: containerd's CRI service was not ready; starting the kubelet again" >>"$LOG_DIR/kubelet.log"
        start_kubelet "$1" 2>/dev/null
    fi
    node_ready
}

start_node() {
    local ip=$1
    write_config "$ip"
    mkdir -p "$NODE_VAR" "$NODE_RUN" "$KUBELET_ROOT" "$NODE_VAR/pod-logs" "$CNI_DATA_DIR"
    # Routing for Pods, and Service rules for traffic between Pods on the bridge (node-down
    # puts back what it changed).
    local key value
    for key in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
        if ! value=$(sysctl -n "$key" 2>/dev/null); then
            log "warning: no sysctl $key (br_netfilter not loaded?): traffic between Pods through Services may fail"
        elif [[ "$value" != 1 ]]; then
            echo "$value" >"$NODE_RUN/$key.orig"
            sysctl -qw "$key=1"
        fi
    done
    start containerd env PATH=/usr/sbin:/usr/bin:/sbin:/bin containerd --config "$NODE_DIR/containerd.toml"
    wait_for "containerd" containerd containerd_ready
    import_pause

    # A Node object left from an earlier run (its Ready condition is stale): the kubelet
    # registers afresh, and Ready below is its own.
    kubectl_admin delete node "$REAL_NODE_NAME" --ignore-not-found --wait=true >/dev/null
    start_kubelet "$ip"
    start kube-proxy "$BIN_DIR/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1
    wait_for "node $REAL_NODE_NAME Ready" kubelet kubelet_ready "$ip"
    wait_for "kube-proxy /healthz" kube-proxy proxy_healthy
    wait_for "the kubernetes Service routed to the API server" kube-proxy kubernetes_service_routed
}

stop_after_failure() {
    local rc=$?
    if ((rc != 0)); then
        log "node start failed; stopping what was started (logs kept in $LOG_DIR)"
        bash "$NODE_HACK_DIR/down.sh" --keep-lock || true
    fi
    exit "$rc"
}

up() {
    local t0=$SECONDS ip tool
    [[ $EUID -eq 0 ]] || die "the node needs root (mounts, cgroups, iptables): run as root"
    [[ -s "$ADMIN_KUBECONFIG" && -x "$BIN_DIR/kubelet" ]] || die "the control plane is not up: run make cluster-up first"
    for tool in containerd ctr runc podman iptables conntrack; do
        command -v "$tool" >/dev/null || bash "$NODE_HACK_DIR/setup.sh"
    done
    [[ -x /usr/lib/cni/bridge ]] || bash "$NODE_HACK_DIR/setup.sh"
    ip=$(node_ip) || die "the machine has no IPv4 address for the node (hostname -I)"
    mkdir -p "$LOG_DIR"
    # The images Pods pull (busybox, redis, ...) are served by the local registry.
    if [[ -f "$REPO_ROOT/hack/images/registry.sh" ]]; then
        bash "$NODE_HACK_DIR/images.sh"
    else
        bash "$NODE_HACK_DIR/images.sh" --no-push
    fi
    if all_running && same_ca && node_ready; then
        taint_kwok
        log "already running: node $REAL_NODE_NAME ($ip)"
        return 0
    fi
    if any_running; then
        log "the node is only partly running (or belongs to an older cluster); restarting it"
        bash "$NODE_HACK_DIR/down.sh" --keep-lock
    fi
    trap stop_after_failure EXIT
    start_node "$ip"
    taint_kwok
    trap - EXIT
    if ! curl -fsS --max-time 3 "http://$REGISTRY/v2/" >/dev/null 2>&1; then
        log "warning: no registry on $REGISTRY: images other than pause cannot be pulled"
    fi
    log "node $REAL_NODE_NAME ($ip) ready in $((SECONDS - t0))s; kwok's $NODE_NAME is tainted $KWOK_TAINT"
}

with_lock "$STATE_DIR/.node-lock" up; exit $?
