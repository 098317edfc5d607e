#!/usr/bin/env bash
# Stop the private database servers started by hack/services/up.sh. Safe to run repeatedly;
# keeps their data (rm -rf the services dir for a clean slate).
#
#   bash hack/services/down.sh             # all
#   bash hack/services/down.sh mariadb     # only some
set -euo pipefail
# shellcheck source=hack/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

services=()
for arg in "$@"; do
    services+=("$(normalize_service "$arg")")
done
((${#services[@]} > 0)) || services=("${ALL_SERVICES[@]}")

take_lock
for svc in "${services[@]}"; do
    service_down "$svc"
    printf '%-9s stopped\n' "$svc"
done
