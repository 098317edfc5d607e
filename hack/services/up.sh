#!/usr/bin/env bash
# Start the private database servers the tests and benchmarks use (idempotent).
#
#   bash hack/services/up.sh                 # all: redis postgres mariadb dynamodb
#   bash hack/services/up.sh redis postgres  # only some
#
# Installs missing Debian packages, then starts each server that does not answer yet, waits until it
# accepts connections and prints one line per service with its URL. See hack/services/lib.sh for
# the ports, directories and environment overrides.
set -euo pipefail
# shellcheck source=hack/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

services=()
for arg in "$@"; do
    services+=("$(normalize_service "$arg")")
done
((${#services[@]} > 0)) || services=("${ALL_SERVICES[@]}")

take_lock
ensure_packages "${services[@]}"
for svc in "${services[@]}"; do
    service_up "$svc"
done
