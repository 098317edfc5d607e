#!/usr/bin/env bash
# `make run`: the main job on a fresh machine. Until the operator demo lands, this runs the
# hello_sqlite example app on embedded SQLite for RUN_SECONDS (default 20) and prints every
# execution; then it stops the app gracefully (SIGINT) and exits with its status.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
RUN_SECONDS=${RUN_SECONDS:-20}
STATE_DIR=${STATE_DIR:-.run}
mkdir -p "$STATE_DIR"
export PYNCETTE_DB="$STATE_DIR/hello.db"
export LOG_LEVEL=${LOG_LEVEL:-WARNING}

echo "Running examples/hello_sqlite.py for ${RUN_SECONDS}s (state in $PYNCETTE_DB); Ctrl+C stops it early."
"$PY" examples/hello_sqlite.py &
app=$!
trap 'kill -INT "$app" 2>/dev/null || true' INT TERM
for _ in $(seq "$RUN_SECONDS"); do
    kill -0 "$app" 2>/dev/null || break
    sleep 1
done
kill -INT "$app" 2>/dev/null || true
wait "$app"
echo "Stopped."
