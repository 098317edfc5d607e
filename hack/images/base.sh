#!/usr/bin/env bash
# A Debian base image built locally, without any image registry: debootstrap --variant=minbase
# of bookworm plus the packages asked for, imported into podman.
#
#   bash hack/images/base.sh <image ref> [package...]    # prints the image ref
#   bash hack/images/base.sh localhost/pyncette/debian-python:bookworm python3 python3-venv python-is-python3
#
# Cached: an image with that ref whose label pyncette.recipe matches (RECIPE_VERSION, the suite
# and the package list) is reused as is. Bump RECIPE_VERSION when the steps below change; delete
# the image (podman rmi) to rebuild it with today's Debian packages.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RECIPE_VERSION=1

recipe() {
    { echo "$RECIPE_VERSION $DEBIAN_SUITE"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}

build() {
    local ref=$1
    shift
    local want have
    want=$(recipe "$@")
    have=$(podman image inspect --format '{{index .Labels "pyncette.recipe"}}' "$ref" 2>/dev/null || true)
    if [[ "$have" == "$want" ]]; then
        log "$ref: cached"
        return 0
    fi
    apt_install debootstrap
    local root start include
    root=$(mktemp -d "${TMPDIR:-/tmp}/pyncette-rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    start=$SECONDS
    include=$(IFS=,; echo "$*")
    log "$ref: debootstrap --variant=minbase $DEBIAN_SUITE${include:+ + $include} (about a minute)"
    if ! debootstrap --variant=minbase ${include:+--include="$include"} "$DEBIAN_SUITE" "$root" "$(debian_mirror)" \
        >"$root.log" 2>&1; then
        tail -n 20 "$root.log" >&2
        die "debootstrap failed (log: $root.log)"
    fi
    rm -f "$root.log"
    # Package caches and lists are not part of an image.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
        "$root"/var/cache/debconf/*-old "$root"/tmp/*
    tar --numeric-owner -C "$root" -c . | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change "LABEL pyncette.recipe=$want" \
        --change "LABEL org.opencontainers.image.description=debian-$DEBIAN_SUITE-minbase${include:++$include}" \
        --change 'CMD ["/bin/bash"]' \
        - "$ref" >/dev/null
    log "$ref: built in $((SECONDS - start))s ($(podman image inspect --format '{{.Size}}' "$ref" | numfmt --to=iec))"
}

main() {
    [[ $# -ge 1 ]] || die "usage: base.sh <image ref> [package...]"
    ensure_podman
    with_lock "$CACHE_ROOT/.lock-base-$(echo "$1" | tr -c 'a-zA-Z0-9._-' _)" build "$@"
    echo "$1"
}

main "$@"
