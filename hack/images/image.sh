#!/usr/bin/env bash
# Build the operator image from the repository's own Dockerfile with podman and push it to the
# local registry. The last line printed is the image reference (for helm --set / kubectl).
#
#   bash hack/images/image.sh        # or: make image
#   bash hack/images/image.sh --skaffold
#       skaffold's custom builder (skaffold.yaml, profile local-node): builds and tags $IMAGE
#       (the name and tag skaffold chose) and pushes it when $PUSH_IMAGE is true.
#
# The base image is built locally from Debian packages (base.sh) and passed as BASE_IMAGE; the
# Dockerfile's default base stays the pinned public Python image. pip inside the build gets the
# CA bundle this machine's pip uses as a build secret (never stored in a layer), and the index
# settings of this machine's pip as build arguments of the build stage only.
#
# Environment: PYNCETTE_IMAGE_NAME (default pyncette-operator), PYNCETTE_REGISTRY_PORT.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_NAME=${PYNCETTE_IMAGE_NAME:-pyncette-operator}
# The base the Dockerfile's build and runtime stages start from, and its Debian packages.
PYTHON_BASE=localhost/pyncette/debian-python:$DEBIAN_SUITE
PYTHON_BASE_PACKAGES=(python3 python3-venv python-is-python3 ca-certificates netbase tzdata)

# pip_setting <name>: a setting of this machine's pip: its environment first, then its config
# files (`pip config list`, read once into PIP_CONFIG_LIST).
PIP_CONFIG_LIST=
pip_setting() {
    local env="PIP_${1^^}" line
    env=${env//-/_}
    if [[ -n "${!env:-}" ]]; then
        echo "${!env}"
        return
    fi
    while IFS= read -r line; do
        if [[ "$line" =~ ^[a-z]+\.$1=\'(.*)\'$ ]]; then
            echo "${BASH_REMATCH[1]}"
            return
        fi
    done <<<"$PIP_CONFIG_LIST"
}

main() {
    local base cert build_args=() secret=() setting value name
    ensure_podman
    base=$(bash "$IMAGES_HACK_DIR/base.sh" "$PYTHON_BASE" "${PYTHON_BASE_PACKAGES[@]}")
    bash "$IMAGES_HACK_DIR/registry.sh" up

    if command -v python3 >/dev/null; then
        PIP_CONFIG_LIST=$(python3 -m pip config list 2>/dev/null || true)
    fi
    cert=$(pip_setting cert)
    [[ -n "$cert" ]] || cert=${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}
    [[ -n "$cert" || ! -f /etc/ssl/certs/ca-certificates.crt ]] || cert=/etc/ssl/certs/ca-certificates.crt
    if [[ -n "$cert" ]]; then
        [[ -f "$cert" ]] || die "pip's CA bundle $cert does not exist"
        secret=(--secret "id=pip-cert,src=$cert")
        build_args+=(--build-arg PIP_CERT=/run/secrets/pip-cert)
    fi
    for setting in index-url extra-index-url trusted-host default-timeout; do
        value=$(pip_setting "$setting")
        name=PIP_${setting^^}
        [[ -z "$value" ]] || build_args+=(--build-arg "${name//-/_}=$value")
    done

    local local_ref="localhost/$IMAGE_NAME:build" iid tag ref t_build t_push push=true
    log "building $IMAGE_NAME from Dockerfile on $base"
    t_build=$SECONDS
    podman build --layers --pull=never --file "$REPO_ROOT/Dockerfile" \
        --build-arg "BASE_IMAGE=$base" "${build_args[@]}" "${secret[@]}" \
        --tag "$local_ref" "$REPO_ROOT" >&2
    t_build=$((SECONDS - t_build))
    if [[ "${1:-}" == --skaffold ]]; then
        ref=${IMAGE:?skaffold sets IMAGE for a custom build}
        [[ "${PUSH_IMAGE:-false}" == true ]] || push=false
    else
        iid=$(podman image inspect --format '{{.Id}}' "$local_ref")
        # The tag names the content: an unchanged build gives the same reference.
        tag=${iid:0:12}
        ref="$REGISTRY/$IMAGE_NAME:$tag"
    fi
    podman tag "$local_ref" "$ref"
    t_push=$SECONDS
    if [[ "$push" == true ]]; then
        # Plain HTTP is only for the loopback registry; any other goes through TLS.
        local tls=true
        [[ "$ref" != "$REGISTRY/"* ]] || tls=false
        podman push --quiet --tls-verify="$tls" "$ref" >&2
    fi
    t_push=$((SECONDS - t_push))
    log "$ref: ${t_build}s build, ${t_push}s push, ${SECONDS}s in all ($(podman image inspect --format '{{.Size}}' "$ref" | numfmt --to=iec))"
    echo "$ref"
}

main "$@"
