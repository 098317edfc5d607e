#!/usr/bin/env bash
# Build the images the real node needs from Debian packages, with podman, and push them to the
# local registry (127.0.0.1:5000, started with hack/images/registry.sh if it is not running),
# which containerd uses as a mirror of docker.io:
#
#   127.0.0.1:5000/pyncette/pause:3.10      the Pod sandbox: a static C program (images/pause.c)
#   docker.io/library/busybox:latest, :1.36 Debian's busybox-static (1.35) and its applets
#   docker.io/library/redis:latest, :7      Debian's redis-server (hack/images/base.sh: debootstrap)
#
#   bash hack/node/images.sh [--no-push]
#
# An image whose recipe (its inputs and this script) did not change is not rebuilt; pushing an
# unchanged image uploads nothing. --no-push only builds (the node imports the pause image into
# containerd itself, so Pods can start without the registry; other images need it).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WORK="$STATE_DIR/node/images"

recipe() {
    { cat "$NODE_HACK_DIR/images.sh" "$@"; } | sha256sum | cut -c1-16
}

# current <image> <recipe>: podman has the image, built from this recipe.
current() {
    [[ "$(podman image inspect --format '{{index .Labels "dev.pyncette.recipe"}}' "$1" 2>/dev/null)" == "$2" ]]
}

# import_rootfs <dir> <image> <recipe> <podman import --change...>
import_rootfs() {
    local dir=$1 image=$2 rcp=$3
    shift 3
    local changes=() c
    for c in "$@" "LABEL dev.pyncette.recipe=$rcp"; do
        changes+=(--change "$c")
    done
    tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . | podman import --quiet "${changes[@]}" - "$image" >/dev/null
}

build_pause() {
    local rcp dir
    rcp=$(recipe "$NODE_HACK_DIR/images/pause.c")
    if current "$PAUSE_IMAGE" "$rcp"; then
        return
    fi
    log "building $PAUSE_IMAGE"
    dir="$WORK/pause"
    rm -rf "$dir" && mkdir -p "$dir/rootfs"
    gcc -static -Os -s -o "$dir/rootfs/pause" "$NODE_HACK_DIR/images/pause.c"
    import_rootfs "$dir/rootfs" "$PAUSE_IMAGE" "$rcp" 'ENTRYPOINT ["/pause"]' 'USER 65535:65535'
    rm -rf "$dir"
}

build_busybox() {
    local rcp dir applet
    rcp=$(recipe /bin/busybox)
    if current docker.io/library/busybox:latest "$rcp"; then
        return
    fi
    log "building docker.io/library/busybox from Debian's busybox-static ($(busybox 2>&1 | head -n1 | cut -d' ' -f1-2))"
    dir="$WORK/busybox/rootfs"
    rm -rf "$dir" && mkdir -p "$dir"/{bin,etc,root,tmp,home,var/tmp}
    chmod 1777 "$dir/tmp" "$dir/var/tmp"
    cp /bin/busybox "$dir/bin/busybox"
    for applet in $(/bin/busybox --list); do
        [[ "$applet" == busybox ]] || ln -s busybox "$dir/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/etc/group"
    import_rootfs "$dir" docker.io/library/busybox:latest "$rcp" 'CMD ["sh"]' \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    podman tag docker.io/library/busybox:latest docker.io/library/busybox:1.36
    rm -rf "$WORK/busybox"
}

build_redis() {
    local rcp base=localhost/pyncette/debian-redis:bookworm
    local base_script="$REPO_ROOT/hack/images/base.sh"
    if [[ ! -f "$base_script" ]]; then
        log "no $base_script (it builds the Debian base image): skipping redis"
        return
    fi
    # debootstrap minbase + redis-server (cached by base.sh itself), then the upstream image's
    # command, port and working directory on top.
    bash "$base_script" "$base" redis-server >/dev/null
    rcp=$(printf '%s %s' "$(recipe "$NODE_HACK_DIR/images/redis.Containerfile")" \
        "$(podman image inspect --format '{{.Id}}' "$base")" | sha256sum | cut -c1-16)
    if current docker.io/library/redis:latest "$rcp"; then
        return
    fi
    log "building docker.io/library/redis from Debian's redis-server"
    podman build --quiet --build-arg "BASE=$base" --label "dev.pyncette.recipe=$rcp" \
        -f "$NODE_HACK_DIR/images/redis.Containerfile" -t docker.io/library/redis:latest \
        "$NODE_HACK_DIR/images" >/dev/null
    podman tag docker.io/library/redis:latest docker.io/library/redis:7
}

registry_up() { curl -fsS --max-time 3 "http://$REGISTRY/v2/" >/dev/null 2>&1; }

# push <local image> <path in the registry>
push() {
    podman push --quiet --tls-verify=false "$1" "docker://$REGISTRY/$2" >/dev/null
}

main() {
    local push=1 ref
    [[ "${1:-}" != --no-push ]] || push=0
    command -v podman >/dev/null || die "podman is not installed (run: sudo bash hack/node/setup.sh)"
    [[ -x /bin/busybox ]] || die "/bin/busybox is missing (run: sudo bash hack/node/setup.sh)"
    mkdir -p "$WORK"
    build_pause
    build_busybox
    build_redis
    ((push)) || return 0
    if ! registry_up && [[ -f "$REPO_ROOT/hack/images/registry.sh" ]]; then
        bash "$REPO_ROOT/hack/images/registry.sh" up
    fi
    registry_up || die "no image registry answers on http://$REGISTRY (bash hack/images/registry.sh up)"
    push "$PAUSE_IMAGE" "${PAUSE_IMAGE#"$REGISTRY/"}"
    for ref in "${MIRRORED_IMAGES[@]}"; do
        if podman image exists "docker.io/library/$ref"; then
            push "docker.io/library/$ref" "library/$ref"
        fi
    done
    log "images pushed to $REGISTRY"
}

main "$@"
