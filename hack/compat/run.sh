#!/usr/bin/env bash
# Run pyncette 1.1.0's own test suite against this package (make compat-1x; .ci/run calls it).
#
#   bash hack/compat/run.sh [pytest args...]      e.g. -k heartbeat, --backend redis
#
# The suite comes from 1.1.0's source distribution on the package index, downloaded once with pip
# into ~/.cache/pyncette/compat (checked against a pinned sha256) and unpacked into a scratch
# directory for each run; none of its code lives in this repository and none of it is edited.
# hack/compat/pyncette_1x_plugin.py makes the adaptations a 1.x user would make (no MongoDB,
# our test servers, clean-up afterwards) and enforces hack/compat/expected-failures-1x.toml.
# The extra packages the suite needs beyond ours (requirements-1x.txt, pinned) go into .venv.
#
# Needs the test servers (make services-up). Bounded: 60 s per test, 15 min for the whole run.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO_ROOT/hack/compat"
VENV="$REPO_ROOT/.venv"
CACHE="${PYNCETTE_COMPAT_CACHE:-$HOME/.cache/pyncette/compat}"
VERSION=1.1.0
SDIST="pyncette-$VERSION.tar.gz"
SDIST_SHA256=99199041229a0960c40e954d8ca64e46eca10a8fa28dbb46c6604af81ea89758
RUN_TIMEOUT="${PYNCETTE_COMPAT_TIMEOUT:-900}"

log() { printf '[compat-1x] %s\n' "$*" >&2; }

mkdir -p "$CACHE"
if [[ ! -f "$CACHE/$SDIST" ]] || ! echo "$SDIST_SHA256  $CACHE/$SDIST" | sha256sum --check --status; then
    log "downloading pyncette $VERSION's source distribution"
    rm -f "$CACHE/$SDIST"
    "$VENV/bin/python" -m pip download -q --no-deps --no-binary :all: "pyncette==$VERSION" -d "$CACHE"
    echo "$SDIST_SHA256  $CACHE/$SDIST" | sha256sum --check --status || {
        log "ERROR: $CACHE/$SDIST does not have the pinned sha256 $SDIST_SHA256"
        exit 1
    }
fi

# The suite's own dependencies beyond ours, at pinned versions (a no-op once installed).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-1x.txt"

scratch="$(mktemp -d "${TMPDIR:-/tmp}/pyncette-compat-1x.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
tar -xzf "$CACHE/$SDIST" -C "$scratch"
suite="$scratch/pyncette-$VERSION"

# Our test servers (hack/services), under the names the suite reads.
redis_port="${PYNCETTE_REDIS_PORT:-16379}"
postgres_port="${PYNCETTE_POSTGRES_PORT:-15432}"
mysql_port="${PYNCETTE_MYSQL_PORT:-13306}"
dynamodb_port="${PYNCETTE_DYNAMODB_PORT:-18000}"
export REDIS_URL="redis://127.0.0.1:$redis_port/11"
export POSTGRES_URL="postgres://postgres:postgres@127.0.0.1:$postgres_port/pyncette"
export MYSQL_HOST=127.0.0.1 MYSQL_PORT="$mysql_port" MYSQL_DATABASE=pyncette MYSQL_USER=pyncette MYSQL_PASSWORD=pyncette
export DYNAMODB_ENDPOINT="http://127.0.0.1:$dynamodb_port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=eu-west-1
# No botocore retries: the suite's TimeMachine replaces asyncio.sleep process-wide, and
# aiobotocore sleeps before a retry with asyncio.sleep, so a retried call (a refused connection to
# the shared single-threaded moto server on a loaded machine) waits for a fake time the test never
# advances, until the 60 s timeout. Without retries the error reaches the scheduler, which logs it
# and polls again after its own back-off, as it would after any failed poll.
export AWS_MAX_ATTEMPTS=1
export SQLITE_DATABASE="$scratch/pyncette_compat.db"
# Its process tests start `coverage run -m tests.test_pyncette_process` from the suite's root.
export PATH="$VENV/bin:$PATH"
export PYTHONPATH="$HERE"
export COVERAGE_FILE="$scratch/.coverage"

log "running pyncette $VERSION's test suite (from $SDIST) against $(cd "$REPO_ROOT" && git describe --always --dirty 2>/dev/null || echo this checkout)"
start=$(date +%s)
rc=0
# Test paths given (tests/test_x.py...) replace the default "tests".
paths=(tests)
for arg in "$@"; do [[ "$arg" == tests/* ]] && paths=() && break; done
# In a process group of its own, so that the apps its process tests start go with it whatever
# happens (a test that times out inside `with Popen(...)` leaves its child running).
(cd "$suite" && exec setsid timeout --kill-after=30 "$RUN_TIMEOUT" "$VENV/bin/python" -m pytest "${paths[@]}" \
    -p pyncette_1x_plugin -p no:cacheprovider --timeout=60 -q -rfE "$@") &
group=$!
trap 'kill -KILL -- "-$group" 2>/dev/null || true; rm -rf "$scratch"' EXIT
wait "$group" || rc=$?
log "done in $(($(date +%s) - start)) s (exit $rc)"
exit "$rc"
