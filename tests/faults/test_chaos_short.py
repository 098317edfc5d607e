"""The short, bounded version of benchmarks/chaos.py that CI runs.

A few fault cycles per backend (kill -9 and restart a worker, restart the database server, blackhole
or reset connections through Toxiproxy) against three worker processes; the soak itself counts lost
at-least-once slots, doubled at-most-once slots and dead workers, and exits 1 if any is non-zero.
The long soak (100 cycles per backend) is `python benchmarks/chaos.py`; its figures are in the README.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.services, pytest.mark.slow]

CHAOS = Path(__file__).resolve().parents[2] / "benchmarks" / "chaos.py"


def test_a_short_chaos_soak_loses_and_doubles_nothing(toxiproxy_api: str, tmp_path: Path) -> None:
    results = tmp_path / "chaos.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(CHAOS),
            "--cycles",
            "6",
            "--max-seconds",
            "120",
            "--port-offset",
            "100",  # away from a long soak someone may be running
            "--json",
            str(results),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-5000:]
    assert "| sqlite |" in output and "| mariadb |" in output, output[-3000:]
