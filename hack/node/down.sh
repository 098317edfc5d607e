#!/usr/bin/env bash
# Take the real node away again (idempotent; make cluster-down runs it first): its Pods are
# deleted through the API server (so the kubelet stops them and the CNI plugin releases their
# network), the Node object is deleted and kwok's node untainted; then kube-proxy, the kubelet
# and containerd stop, and whatever is left of them is removed: container processes, mounts,
# network namespaces, the bridge, iptables chains (KUBE-*, and the CNI-* ones of our network)
# and the kubepods cgroups. Images stay in /var/lib/pyncette-node/containerd (the warm cache).
#
#   bash hack/node/down.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kubectl_admin() {
    "$BIN_DIR/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" --request-timeout=5s "$@"
}

api_up() { [[ -s "$ADMIN_KUBECONFIG" && -x "$BIN_DIR/kubectl" ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; }

node_pods() {
    kubectl_admin get pods --all-namespaces --field-selector "spec.nodeName=$REAL_NODE_NAME" -o name 2>/dev/null
}

# stop_proc <name>: SIGTERM the process in its pid file, SIGKILL after 15 s.
stop_proc() {
    local name=$1 file pid deadline
    file=$(pidfile "$name")
    if pid_alive "$file"; then
        pid=$(<"$file")
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while proc_alive "$pid"; do
            if ((SECONDS >= deadline)); then
                log "$name did not exit after SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$file"
}

# Leftovers whose command line names our paths (a lost pid file, a container shim).
kill_strays() {
    local file pid cmdline exe pids=()
    for file in /proc/[0-9]*; do
        pid=${file#/proc/}
        [[ "$pid" != "$$" ]] || continue
        exe=$(readlink "$file/exe" 2>/dev/null) || continue
        exe=${exe##*/}
        case "$exe" in containerd | containerd-shim* | kubelet | kube-proxy) ;; *) continue ;; esac
        cmdline=$(tr '\0' ' ' <"$file/cmdline" 2>/dev/null) || continue
        if [[ "$cmdline" == *"$NODE_RUN/"* || "$cmdline" == *"$NODE_VAR/"* ]] || names_state_dir "$cmdline"; then
            pids+=("$pid")
        fi
    done
    if [[ ${#pids[@]} -gt 0 ]]; then
        log "killing leftover node processes: ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
    fi
}

# Containers whose shim is gone live on in the kubepods cgroups: kill them there.
kill_cgroup_procs() {
    local procs pid
    procs=$(find /sys/fs/cgroup/*/kubepods -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u) || true
    for pid in $procs; do
        kill -KILL "$pid" 2>/dev/null || true
    done
}

remove_cgroups() {
    local dir
    for dir in /sys/fs/cgroup/*/kubepods; do
        [[ -d "$dir" ]] || continue
        # Deepest first; a cgroup is removed with rmdir (its files are not real files).
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ ! -d "$dir" ]] || log "warning: could not remove cgroup $dir"
    done
}

unmount_ours() {
    local mp
    # Deepest first, so nested mounts go before their parents.
    while read -r mp; do
        umount -l "$mp" 2>/dev/null || true
    done < <(awk -v a="$NODE_RUN" -v b="$NODE_VAR" -v c="/run/netns/cni-" \
        'index($5, a) == 1 || index($5, b) == 1 || index($5, c) == 1 { print $5 }' /proc/self/mountinfo |
        awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
    rm -f /run/netns/cni-* 2>/dev/null || true
}

# clean_table <iptables> <table>: remove our chains (KUBE-*: the kubelet's and kube-proxy's;
# CNI-* of our network: the CNI plugins' per-Pod chains, which carry the network's name in a
# comment) and every rule elsewhere that jumps to them or carries that comment. podman's CNI
# networks use the same CNI-* names, so only ours are touched.
clean_table() {
    local ipt=$1 table=$2 saved rule chain chains
    saved=$("$ipt-save" -t "$table" 2>/dev/null) || return 0
    chains=$({
        grep -oE -- '^:KUBE-[A-Za-z0-9_-]+' <<<"$saved" | cut -c2- || true
        grep -F -- "name: \\\"$CNI_NETWORK\\\"" <<<"$saved" | grep -oE -- '-j CNI-[A-Za-z0-9_-]+' | cut -c4- || true
    } | sort -u)
    [[ -n "$chains" ]] || return 0
    local alt
    alt=$(paste -sd'|' <<<"$chains")
    while read -r rule; do
        chain=${rule#-A }
        chain=${chain%% *}
        grep -qxF -- "$chain" <<<"$chains" && continue
        if [[ "$rule" =~ \ -j\ ($alt)(\ |$) || "$rule" == *"name: \\\"$CNI_NETWORK\\\""* ]]; then
            eval "$ipt -w -t $table -D ${rule#-A }" 2>/dev/null || true
        fi
    done < <(grep -- '^-A ' <<<"$saved" || true)
    for chain in $chains; do
        "$ipt" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $chains; do
        "$ipt" -w -t "$table" -X "$chain" 2>/dev/null || true
    done
}

clean_iptables() {
    local ipt table
    # kube-proxy's own clean-up first (the rules of every mode it knows, nftables included).
    if [[ -x "$BIN_DIR/kube-proxy" ]]; then
        "$BIN_DIR/kube-proxy" --cleanup --v=0 >>"$LOG_DIR/kube-proxy.log" 2>&1 || true
    fi
    for ipt in iptables ip6tables; do
        command -v "$ipt-save" >/dev/null || continue
        for table in filter nat mangle; do
            clean_table "$ipt" "$table"
        done
    done
}

api_side() {
    api_up || return 0
    kubectl_admin get node "$REAL_NODE_NAME" >/dev/null 2>&1 || {
        kubectl_admin taint node "$NODE_NAME" "$KWOK_TAINT_KEY-" >/dev/null 2>&1 || true
        return 0
    }
    # New Pods go to kwok's node again; this node's Pods are stopped by its kubelet.
    kubectl_admin cordon "$REAL_NODE_NAME" >/dev/null 2>&1 || true
    kubectl_admin taint node "$NODE_NAME" "$KWOK_TAINT_KEY-" >/dev/null 2>&1 || true
    if pid_alive "$(pidfile kubelet)" && [[ -n "$(node_pods)" ]]; then
        log "deleting the Pods on $REAL_NODE_NAME"
        kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$REAL_NODE_NAME" \
            --grace-period=2 --wait=false >/dev/null 2>&1 || true
        local deadline=$((SECONDS + 30))
        while [[ -n "$(node_pods)" ]] && ((SECONDS < deadline)) && pid_alive "$(pidfile kubelet)"; do
            sleep 0.5
        done
    fi
    kubectl_admin delete node "$REAL_NODE_NAME" --wait=false >/dev/null 2>&1 || true
    # Whatever the kubelet did not get to: gone from the API too.
    kubectl_admin delete pods --all-namespaces --field-selector "spec.nodeName=$REAL_NODE_NAME" \
        --grace-period=0 --force >/dev/null 2>&1 || true
}

remove_containers() {
    pid_alive "$(pidfile containerd)" || return 0
    local id
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
        ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
        ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $(ctr_k8s containers ls -q 2>/dev/null); do
        ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
    done
}

down() {
    mkdir -p "$LOG_DIR"
    api_side
    stop_proc kube-proxy
    stop_proc kubelet
    remove_containers
    stop_proc containerd
    kill_strays
    kill_cgroup_procs
    unmount_ours
    if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
        ip link delete "$CNI_BRIDGE" || true
    fi
    clean_iptables
    remove_cgroups
    # /var/log/containers holds the kubelet's links into its Pod log directory.
    find /var/log/containers -maxdepth 1 -lname "$NODE_VAR/*" -delete 2>/dev/null || true
    rmdir /var/log/containers 2>/dev/null || true
    rm -rf "$KUBELET_ROOT" "$NODE_VAR/pod-logs" "$CNI_DATA_DIR"
    local orig
    for orig in "$NODE_RUN"/*.orig; do
        [[ -f "$orig" ]] || continue
        sysctl -qw "$(basename "$orig" .orig)=$(<"$orig")" || true
    done
    rm -rf "$NODE_RUN" "$NODE_DIR"
    log "node stopped"
}

main() {
    if [[ "${1:-}" == --keep-lock ]]; then
        down
    elif [[ -d "$STATE_DIR" ]]; then
        with_lock "$STATE_DIR/.node-lock" down
    fi
}

main "$@"; exit $?
