"""``kubectl ptask`` on the local control plane, called the way users call it: ``kubectl ptask ...``.

kubectl finds the plugin on the PATH (the venv's ``kubectl-ptask``, installed by the package's
console scripts) and passes the arguments on; KUBECONFIG comes from the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

from pyncette_operator.spec import parse_time

pytestmark = pytest.mark.cluster

SCHEDULED_AT = "pyncette.dev/scheduled-at"


def ptask_cli(k: Kubectl, *args: str, namespace: bool = True) -> subprocess.CompletedProcess[str]:
    """``kubectl ptask ARGS`` (``-n <test namespace>`` first unless ``namespace=False``)."""
    cluster = k.cluster
    kubectl = cluster.bin_dir / "kubectl"
    path = os.pathsep.join([str(Path(sys.executable).parent), str(cluster.bin_dir), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "KUBECONFIG": str(cluster.kubeconfig)}
    cmd = [str(kubectl) if kubectl.exists() else "kubectl", "ptask", *(["-n", k.namespace] if namespace else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)


def test_next_agrees_with_the_pods_that_then_run(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    # Every 20 s from the task's own offset (H), two schedules: a realistic spread, fast enough for a test.
    k.apply(
        ptask(
            "spread",
            schedules=["* * * * * H/20", "* * * * * H(50-59)"],
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="100ms"),
        )
    )
    wait_until(lambda: (k.task("spread").get("status") or {}).get("nextRunTime"), what="the task to be scheduled")

    shown = ptask_cli(k, "next", "spread", "--count", "4", "-o", "json")
    assert shown.returncode == 0, shown.stderr
    predicted = [t["scheduledAt"] for t in json.loads(shown.stdout)]
    assert len(predicted) == 4 and predicted == sorted(set(predicted))

    def slots() -> set[str]:
        return {p["metadata"]["annotations"][SCHEDULED_AT] for p in k.pods("spread")}

    wait_until(lambda: set(predicted) <= slots(), timeout=150, what=f"Pods for the predicted slots {predicted}")
    # No Pod for a slot `next` did not predict within the predicted window.
    window = [s for s in slots() if predicted[0] <= s <= predicted[-1]]
    assert sorted(window) == predicted

    table = ptask_cli(k, "next", "spread", "--count", "2")
    assert table.returncode == 0 and table.stdout.splitlines()[0].split() == ["SCHEDULED"]


def test_run_now_suspend_resume_and_history(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask("job", schedule="0 0 1 1 *", backoffLimit=0, podTemplate=pod_template(duration="300ms", outcome="Failed"))
    )
    wait_until(lambda: (k.task("job").get("status") or {}).get("nextRunTime"), what="the task to be scheduled")

    started = ptask_cli(k, "run-now", "job")
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("pyncettetask.pyncette.dev/job run requested")
    value = k.task("job")["metadata"]["annotations"]["pyncette.dev/run-now"]
    assert value in started.stdout

    def finished() -> list[dict[str, Any]]:
        out = ptask_cli(k, "history", "job", "-o", "json")
        assert out.returncode == 0, out.stderr
        records: list[dict[str, Any]] = json.loads(out.stdout)
        return [r for r in records if r["outcome"] == "Failed" and r["source"] == "Pod"]

    [record] = wait_until(finished, timeout=120, what="the run-now run in the history")
    assert record["trigger"] == f"run-now:{value}"
    assert record["attempts"] == 1 and record["pod"].startswith("job-now-")
    assert record["pod"] in {p["metadata"]["name"] for p in k.pods("job")}
    table = ptask_cli(k, "history", "job")
    assert table.stdout.splitlines()[0].split() == ["SCHEDULED", "TRIGGER", "OUTCOME", "ATTEMPTS", "DURATION", "POD"]

    assert ptask_cli(k, "suspend", "job").returncode == 0
    assert k.task("job")["spec"]["suspend"] is True
    wait_until(lambda: (k.condition("job", "Ready") or {}).get("reason") == "Suspended", what="Ready reason Suspended")
    suspended = ptask_cli(k, "next", "job")
    assert (
        suspended.returncode == 1
        and suspended.stderr == "error: pyncettetask/job is suspended: no runs are scheduled\n"
    )
    assert ptask_cli(k, "resume", "job").returncode == 0
    assert k.task("job")["spec"]["suspend"] is False
    wait_until(lambda: (k.condition("job", "Ready") or {}).get("reason") == "Scheduled", what="Ready again")
    following = ptask_cli(k, "next", "job", "-c", "1", "-o", "json")
    assert parse_time(json.loads(following.stdout)[0]["scheduledAt"]).strftime("%m-%d %H:%M") == "01-01 00:00"


def test_kubectl_conventions(k: Kubectl, crd_installed: None) -> None:
    missing = ptask_cli(k, "next", "nothing-here")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip()
        == 'error: Error from server (NotFound): pyncettetasks.pyncette.dev "nothing-here" not found'
    )
    # The namespace comes from -n; without it, from the context (here: default), like kubectl.
    k.apply(ptask("conv", interval="1h", podTemplate=pod_template()))
    assert ptask_cli(k, "next", "conv", namespace=False).returncode == 1
    after = ptask_cli(k, "next", "conv", "--namespace", k.namespace, namespace=False)
    assert after.returncode == 0, after.stderr
    bad_context = ptask_cli(k, "next", "conv", "--context", "no-such-context")
    assert bad_context.returncode == 1 and bad_context.stderr.startswith("error: kubeconfig ")
    assert "no-such-context" in bad_context.stderr and len(bad_context.stderr.strip().splitlines()) == 1
