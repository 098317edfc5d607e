# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings and helpers for hack/images/*.sh. Source it, don't run it.

IMAGES_HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_HACK_DIR/../.." && pwd)
# shellcheck source=../lib/detach.sh
source "$IMAGES_HACK_DIR/../lib/detach.sh"
# shellcheck source=../lib/lock.sh
source "$IMAGES_HACK_DIR/../lib/lock.sh"

# Machine-wide caches shared by every checkout: the registry's blobs, image recipes.
CACHE_ROOT="${PYNCETTE_CACHE_DIR:-$HOME/.cache/pyncette}/images"

# The local image registry (Debian's docker-registry): plain HTTP on loopback only.
REGISTRY_HOST=127.0.0.1
REGISTRY_PORT="${PYNCETTE_REGISTRY_PORT:-5000}"
REGISTRY="$REGISTRY_HOST:$REGISTRY_PORT"
REGISTRY_DIR="$CACHE_ROOT/registry"

# The Debian suite base images are made from.
DEBIAN_SUITE=bookworm

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# apt_install <package...>: install what is missing (needs root; waits for another apt).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -gt 0 ]] || return 0
    [[ $(id -u) == 0 ]] || die "missing Debian packages: ${missing[*]} (install them as root: apt-get install ${missing[*]})"
    log "installing ${missing[*]} (apt)"
    if ! apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null
        apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
}

# The settings podman needs on these machines (see docs/local-cluster.md): no rlimits asked
# for (raising one is not permitted here) and runc (crun refuses the hybrid cgroup layout).
PODMAN_DROPIN=/etc/containers/containers.conf.d/50-pyncette.conf

ensure_podman() {
    apt_install podman runc
    if [[ ! -f "$PODMAN_DROPIN" ]]; then
        [[ $(id -u) == 0 ]] || die "podman needs $PODMAN_DROPIN (default_ulimits = [], runtime runc); run once as root"
        mkdir -p "$(dirname "$PODMAN_DROPIN")"
        cat >"$PODMAN_DROPIN" <<'CONF'
# Written by pyncette's hack/images/lib.sh.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
    fi
}

# debian_mirror: the Debian archive this machine's apt uses (never a name of ours).
debian_mirror() {
    local uri
    uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n "$uri" ]] || uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 || true)
    [[ -n "$uri" ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d}"
    echo "$uri"
}

