#!/usr/bin/env bash
# Restart one server on the same port and data directory, keeping its data: used by tests that
# take a database away while an app runs.
#
#   bash hack/services/restart.sh postgres|redis|mariadb|dynamodb
#
# dynamodb (moto) keeps its tables in memory, so a restart of it starts empty.
set -euo pipefail
# shellcheck source=hack/services/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# == 1)) || die "usage: restart.sh postgres|redis|mariadb|dynamodb"
svc="$(normalize_service "$1")"

take_lock
ensure_packages "$svc"
service_down "$svc"
if port_in_use "$(service_port "$svc")"; then
    die "$svc: port $(service_port "$svc") is still taken after stopping the server"
fi
"${svc}_start"
printf '%-9s %s (restarted)\n' "$svc" "$(service_url "$svc")"
