# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for hack/node/{setup,images,up,down}.sh: the real node beside kwok's fake one.
# Source it, don't run it. Builds on hack/cluster/lib.sh (state dir, logs, pid files, certs).

NODE_HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../cluster/lib.sh
source "$NODE_HACK_DIR/../cluster/lib.sh"

# The Node object's name and what marks it; kwok's node gets KWOK_TAINT while this one is up.
REAL_NODE_NAME=pyncette-node
REAL_NODE_LABEL=pyncette.dev/node=real
KWOK_TAINT_KEY=pyncette.dev/simulated
KWOK_TAINT="$KWOK_TAINT_KEY=true:NoSchedule"

# Processes of the node, in start order (down.sh stops them in reverse).
NODE_PROCESSES=(containerd kubelet kube-proxy)

# Configuration, certificates and the kubelet's kubeconfig: under .cluster/node/ (wiped by
# cluster-up's fresh start together with the CA they depend on).
NODE_DIR="$STATE_DIR/node"
# Machine-wide paths (a container runtime needs real mounts, so not under the checkout).
# Images stay in NODE_VAR/containerd between node-up runs: that is the warm cache.
NODE_VAR=/var/lib/pyncette-node
NODE_RUN=/run/pyncette-node
CONTAINERD_ROOT="$NODE_VAR/containerd"
CONTAINERD_STATE="$NODE_RUN/containerd"
CONTAINERD_SOCK="$CONTAINERD_STATE/containerd.sock"
KUBELET_ROOT="$NODE_VAR/kubelet"
CNI_CONF_DIR="$NODE_DIR/cni"
CNI_DATA_DIR="$NODE_RUN/cni"
CNI_NETWORK=pyncette-node
CNI_BRIDGE=pyncette0
# Pods of the real node; kwok hands out fake IPs from POD_CIDR (10.244.0.0/16), so this range
# is apart from it.
NODE_POD_CIDR=10.245.0.0/24
NODE_POD_GATEWAY=10.245.0.1
KUBELET_PORT=10250
KUBELET_HEALTHZ_PORT=10248
KUBE_PROXY_METRICS_PORT=10249
KUBE_PROXY_HEALTHZ_PORT=10256

# Images: served by the local registry (hack/images/registry.sh) on 127.0.0.1:5000, which
# containerd uses as a mirror of docker.io. The pause image is also imported straight into
# containerd, so Pods start even before the registry runs.
REGISTRY="127.0.0.1:${PYNCETTE_REGISTRY_PORT:-5000}"
PAUSE_IMAGE="$REGISTRY/pyncette/pause:3.10"
# name:tag ... of the docker.io images built from Debian packages (hack/node/images.sh).
MIRRORED_IMAGES=(busybox:latest busybox:1.36 redis:latest redis:7)

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# node_ip: the address the kubelet registers and the API server reaches it on (the API
# server's advertise address, see hack/cluster/up.sh).
node_ip() {
    local ip
    for ip in $(hostname -I 2>/dev/null); do
        if [[ "$ip" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ && "$ip" != 127.* ]]; then
            echo "$ip"
            return
        fi
    done
    return 1
}
