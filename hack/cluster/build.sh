#!/usr/bin/env bash
# Build the local control plane's binaries from Go modules, once per version.
#
#   bash hack/cluster/build.sh [component...]    # default: etcd kwok helm kubernetes
#   bash hack/cluster/build.sh toxiproxy         # the fault proxy (hack/services starts it)
#   bash hack/cluster/build.sh skaffold          # skaffold (make skaffold)
#
# Each component is a small wrapper module under hack/cluster/modules/<component>/ whose
# go.mod pins the upstream release and lists the commands as `tool` directives. Outputs go
# to ${PYNCETTE_CACHE_DIR:-~/.cache/pyncette}/cluster/<component>-<version>/; a directory
# whose recipe stamp matches (go.mod, go.sum, flags and Go version) is reused as is, so a
# second run builds nothing. Go's own module and build caches stay at their defaults.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Version stamps for /version, `kubectl version` and `helm version`.
ldflags_for() {
    local component=$1 version major minor flags="-s -w" pkg
    version=$(component_version "$component")
    case "$component" in
        kubernetes)
            major=${version#v}
            major=${major%%.*}
            minor=$(echo "$version" | cut -d. -f2)
            for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
                flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
                flags+=" -X $pkg.gitTreeState=clean"
            done
            ;;
        helm)
            # helm's built-in Kubernetes version (used by `helm template`) follows its client-go.
            local client_go
            client_go=$(module_version helm k8s.io/client-go)
            flags+=" -X helm.sh/helm/v3/internal/version.version=$version"
            flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
            flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1"
            flags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(echo "$client_go" | cut -d. -f2)"
            flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1"
            flags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(echo "$client_go" | cut -d. -f2)"
            ;;
        kwok)
            flags+=" -X sigs.k8s.io/kwok/pkg/consts.Version=${version#v}"
            ;;
        toxiproxy)
            flags+=" -X github.com/Shopify/toxiproxy/v2.Version=${version#v}"
            ;;
        skaffold)
            flags+=" -X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$version"
            ;;
    esac
    echo "$flags"
}

recipe_for() {
    local component=$1
    {
        cat "$MODULES_DIR/$component/go.mod" "$MODULES_DIR/$component/go.sum"
        ldflags_for "$component"
        go env GOVERSION GOOS GOARCH
    } | sha256sum | cut -c1-16
}

is_built() {
    local component=$1 dir bin
    dir=$(component_dir "$component")
    [[ -f "$dir/.recipe" && "$(<"$dir/.recipe")" == "$(recipe_for "$component")" ]] || return 1
    for bin in $(component_binaries "$component"); do
        [[ -x "$dir/$bin" ]] || return 1
    done
}

build_one() {
    local component=$1 dir tmp start seconds buildlog ldflags
    dir=$(component_dir "$component")
    if is_built "$component"; then
        log "$component: cached in $dir"
        return 0
    fi
    tmp="$dir.tmp.$$"
    buildlog="$LOG_DIR/build-$component.log"
    ldflags=$(ldflags_for "$component")
    rm -rf "$tmp"
    mkdir -p "$tmp" "$LOG_DIR"
    local hint=""
    [[ "$component" != kubernetes ]] || hint="; a cold build takes 15-30 minutes on 2 cores"
    [[ "$component" != skaffold ]] || hint="; a cold build takes about 10-20 minutes on 2 cores"
    log "$component: building $(component_version "$component") (log: $buildlog$hint)"
    start=$(date +%s)
    local timer=()
    [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v -o "$tmp/.build-resources")
    if ! (
        cd "$MODULES_DIR/$component"
        "${timer[@]}" nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$tmp/" tool
    ) >"$buildlog" 2>&1; then
        tail -n 30 "$buildlog" >&2
        rm -rf "$tmp"
        die "$component: build failed (full log: $buildlog)"
    fi
    # A module path ending in a major-version suffix builds a binary named after the
    # element before it: go.etcd.io/etcd/server/v3 gives "server".
    if [[ "$component" == etcd ]]; then
        mv "$tmp/server" "$tmp/etcd"
    fi
    # Toxiproxy's commands are cmd/server and cmd/cli.
    if [[ "$component" == toxiproxy ]]; then
        mv "$tmp/server" "$tmp/toxiproxy-server"
        mv "$tmp/cli" "$tmp/toxiproxy-cli"
    fi
    seconds=$(($(date +%s) - start))
    echo "$seconds" >"$tmp/.build-seconds"
    recipe_for "$component" >"$tmp/.recipe"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    local peak=""
    [[ -f "$dir/.build-resources" ]] &&
        peak=", peak RSS $(awk -F': ' '/Maximum resident/ { printf "%d MiB", $2 / 1024 }' "$dir/.build-resources")"
    log "$component: built in ${seconds}s$peak -> $dir"
}

main() {
    command -v go >/dev/null || die "go is not installed"
    # Build with the Go on the machine; never download another toolchain.
    export GOTOOLCHAIN=local CGO_ENABLED=0
    mkdir -p "$CACHE_ROOT"
    local components=("$@")
    [[ ${#components[@]} -gt 0 ]] || components=("${COMPONENTS[@]}")
    local c
    for c in "${components[@]}"; do
        component_module "$c" >/dev/null
        with_lock "$CACHE_ROOT/.lock-$c" build_one "$c"
    done
}

main "$@"; exit $?
