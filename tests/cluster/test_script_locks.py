"""The hack scripts' lock helper (hack/lib/lock.sh): a lock is held while its command runs and
released when the command returns, not when the script ends.

A script that takes several locks in turn (hack/cluster/build.sh: one per component) kept each until
it exited, so `make cluster-up` on a fresh machine waited for skaffold's build before it could start
an etcd that had been built long before.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    prelude = f'set -euo pipefail; log() {{ echo "$*"; }}; source "{REPO}/hack/lib/lock.sh"; '
    return subprocess.run(
        ["bash", "-c", prelude + script], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


def test_a_lock_is_free_once_its_command_returned(tmp_path: Path) -> None:
    # While the script still runs (the second command), another process can take the first lock.
    proc = run('with_lock first.lock true; with_lock second.lock flock -n first.lock echo "first is free"', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "first is free" in proc.stdout


def test_a_lock_is_held_while_its_command_runs(tmp_path: Path) -> None:
    proc = run('with_lock held.lock flock -n held.lock true || echo "held: $?"', tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "held: 1" in proc.stdout


def test_the_command_status_comes_back(tmp_path: Path) -> None:
    proc = run('status=0; with_lock some.lock bash -c "exit 3" || status=$?; echo "status $status"', tmp_path)
    assert "status 3" in proc.stdout, proc.stdout + proc.stderr
