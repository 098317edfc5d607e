#!/usr/bin/env bash
# The scheduler core and the backend conformance suite on another Python than .venv's:
#
#   bash hack/test-python.sh 3.12 [pytest args...]      # or: make test-py312
#
# Why: the official image's Python is 3.12 (Dockerfile), where executions start eagerly
# (asyncio eager tasks); .venv and `make test` use the machine's python3 (3.11 here), which takes
# the other path. The interpreter is python<version> on PATH, else pyenv's copy of it; its own venv
# is .venv-<version> (same constraints as .venv). The database servers must be up (make services-up).
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: hack/test-python.sh <version> [pytest args...]}
shift
venv=".venv-$version"

find_python() {
    local candidate
    for candidate in "$(command -v "python$version" 2>/dev/null || true)" \
        "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/"$version"*/bin/"python$version"; do
        if [[ -x "$candidate" ]] && "$candidate" -c 'import sys' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

python=$(find_python) || {
    echo "test-python: no Python $version (python$version on PATH or in pyenv's versions)" >&2
    exit 1
}
stamp="$venv/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
echo "test-python: $("$venv/bin/python" --version) from $python"
# Deprecations are errors: what warns on this Python breaks on the next (sqlite3's numbered
# placeholders with tuples warn on 3.12 and fail on 3.14).
exec "$venv/bin/pytest" tests/core tests/conformance -m "not cluster and not node and not exclusive" \
    -W error::DeprecationWarning -n "${PYNCETTE_TEST_WORKERS:-4}" -q "$@"
