"""The short, bounded version of benchmarks/operator_chaos.py that CI runs: three replicas on
Redis, a few kill -9 / SIGTERM / restart cycles, two cut watches and one apiserver outage as the
replicas see it (their connections cut through Toxiproxy; restarting the real apiserver is left to
the benchmark: it is shared with every other test running at the time), then no scheduled slot
with two runs, none lost, no Pod left Running, no task stuck Running=True."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow]

CHAOS = Path(__file__).resolve().parents[2] / "benchmarks" / "operator_chaos.py"


def test_short_chaos_run_loses_and_duplicates_nothing(
    kube_cluster: Any, crd_installed: None, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "chaos.json"
    result = subprocess.run(
        [
            sys.executable,
            str(CHAOS),
            "--backend",
            "redis",
            "--cycles",
            "10",
            "--apiserver-restarts",
            "0",
            "--outages",
            "1",
            "--watch-cuts",
            "2",
            "--pod-tasks",
            "4",
            "--handler-tasks",
            "2",
            "--seed",
            "11",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "PYNCETTE_REDIS_URL": redis_url, "KUBECONFIG": str(kube_cluster.kubeconfig)},
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    [run] = json.loads(out.read_text())["results"]
    summary = {k: run[k] for k in ("duplicate_slots", "lost_slots", "pods_left_running", "tasks_stuck_running")}
    assert summary == dict.fromkeys(summary, 0), (summary, run["details"])
    assert run["slots"] > 0
    assert {int(code) for code in run["sigterm_exit_codes"]} <= {0}, run["sigterm_exit_codes"]
