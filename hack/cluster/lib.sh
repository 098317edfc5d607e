# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings and helpers for hack/cluster/{build,up,down}.sh. Source it, don't run it.

CLUSTER_HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_HACK_DIR/../.." && pwd)
MODULES_DIR="$CLUSTER_HACK_DIR/modules"
# shellcheck source=../lib/detach.sh
source "$CLUSTER_HACK_DIR/../lib/detach.sh"
# shellcheck source=../lib/lock.sh
source "$CLUSTER_HACK_DIR/../lib/lock.sh"

# Everything a running cluster owns lives here (gitignored).
STATE_DIR="$REPO_ROOT/.cluster"
LOG_DIR="$STATE_DIR/logs"
BIN_DIR="$STATE_DIR/bin"
PKI_DIR="$STATE_DIR/pki"
ADMIN_KUBECONFIG="$STATE_DIR/kubeconfig"

# Built binaries, shared by every checkout on the machine: <component>-<version>/.
CACHE_ROOT="${PYNCETTE_CACHE_DIR:-$HOME/.cache/pyncette}/cluster"

# Build order; each has a wrapper module under modules/<component>/.
COMPONENTS=(etcd kwok helm kubernetes)
# Built on demand only (not part of the cluster): Toxiproxy, started by hack/services/up.sh;
# skaffold (make skaffold).
EXTRA_COMPONENTS=(toxiproxy skaffold)

# Bump when up.sh starts the processes with other flags: a running cluster of an older layout
# is then restarted from scratch by the next `make cluster-up`.
CLUSTER_LAYOUT=2

# Processes, in start order (down.sh stops them in reverse).
PROCESSES=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

ETCD_CLIENT_PORT="${PYNCETTE_ETCD_PORT:-12379}"
ETCD_PEER_PORT=$((ETCD_CLIENT_PORT + 1))
# kube-controller-manager and kube-scheduler serve health/metrics on loopback only,
# away from their default ports so that a real cluster on the machine does not clash.
KCM_PORT="${PYNCETTE_KCM_PORT:-11257}"
SCHEDULER_PORT="${PYNCETTE_SCHEDULER_PORT:-11259}"
NODE_NAME=kwok-node-0
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/16

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# module_version <component> <module path>: the version the wrapper go.mod requires.
module_version() {
    awk -v m="$2" '($1 == m || ($1 == "require" && $2 == m)) { v = ($1 == m) ? $2 : $3; print v; exit }' \
        "$MODULES_DIR/$1/go.mod"
}

# The module whose version names each component's cache directory.
component_module() {
    case "$1" in
        etcd) echo go.etcd.io/etcd/server/v3 ;;
        kwok) echo sigs.k8s.io/kwok ;;
        helm) echo helm.sh/helm/v3 ;;
        kubernetes) echo k8s.io/kubernetes ;;
        toxiproxy) echo github.com/Shopify/toxiproxy/v2 ;;
        skaffold) echo github.com/GoogleContainerTools/skaffold/v2 ;;
        *) die "unknown component $1" ;;
    esac
}

# The binaries each component provides.
component_binaries() {
    case "$1" in
        etcd) echo etcd ;;
        kwok) echo kwok ;;
        helm) echo helm ;;
        kubernetes) echo kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy ;;
        toxiproxy) echo toxiproxy-server toxiproxy-cli ;;
        skaffold) echo skaffold ;;
        *) die "unknown component $1" ;;
    esac
}

component_version() { module_version "$1" "$(component_module "$1")"; }

component_dir() { echo "$CACHE_ROOT/$1-$(component_version "$1")"; }

# proc_alive <pid>: the process runs (a zombie waiting to be reaped does not count).
proc_alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z* ]]
}

# pid_alive <pidfile>: the process in it still runs.
pid_alive() {
    local pid
    [[ -s "$1" ]] || return 1
    pid=$(<"$1")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid"
}

pidfile() { echo "$STATE_DIR/$1.pid"; }

# names_state_dir <command line>: it names a path in STATE_DIR, by this checkout's path or by
# another's (git worktrees share one .cluster/ through symlinks).
names_state_dir() {
    local cmdline=$1 real path
    [[ "$cmdline" != *"$STATE_DIR/"* ]] || return 0
    real=$(readlink -f "$STATE_DIR")
    for path in $(grep -oE '/[^ =]*/\.cluster/' <<<"$cmdline" | sort -u); do
        [[ "$(readlink -f "$path")" != "$real" ]] || return 0
    done
    return 1
}

# port_busy <port>: something listens on 127.0.0.1:<port> (or on every address).
port_busy() {
    ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .
}


# sign_cert <dir> <name> <subject> <extendedKeyUsage> [subjectAltName]: a P-256 key and a
# certificate signed by the cluster CA ($PKI_DIR), as <dir>/<name>.{key,crt} (the CA's serial file
# in <dir> too). The control plane's certificates and the real node's are made the same way.
sign_cert() {
    local dir=$1 name=$2 subject=$3 usage=$4 san=${5:-}
    local ext="$dir/$name.ext"
    {
        echo "basicConstraints = critical, CA:FALSE"
        echo "keyUsage = critical, digitalSignature, keyEncipherment"
        echo "extendedKeyUsage = $usage"
        [[ -z "$san" ]] || echo "subjectAltName = $san"
    } >"$ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "$subject" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
        -CAcreateserial -CAserial "$dir/ca.srl" -days 3650 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
    rm -f "$dir/$name.csr" "$ext"
}
