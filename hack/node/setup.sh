#!/usr/bin/env bash
# Install what the real node needs from Debian (needs root; idempotent; make node-up runs it
# when something is missing): containerd, runc, the CNI plugins, conntrack and iptables for
# kube-proxy, podman, busybox-static and a C compiler for the images (hack/node/images.sh).
#
#   sudo bash hack/node/setup.sh
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(containerd runc containernetworking-plugins conntrack iptables podman busybox-static gcc libc6-dev curl openssl)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
[[ $EUID -eq 0 ]] || die "installing ${missing[*]} needs root: sudo bash hack/node/setup.sh"
log "installing ${missing[*]} (apt)"
export DEBIAN_FRONTEND=noninteractive
# Another apt run (the image scripts' setup, say) may hold the lock: wait for it.
apt_get() { apt-get -o DPkg::Lock::Timeout=600 "$@"; }
apt_get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    apt_get update -qq
    apt_get install -y --no-install-recommends "${missing[@]}" >/dev/null
}
