"""The circuit breaker (spec.suspendAfterFailures) on the local control plane, with two replicas."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until
from test_cluster_plugin import ptask_cli

pytestmark = [pytest.mark.cluster, pytest.mark.services]


def scheduled_pods(k: Kubectl, task: str) -> set[str]:
    return {p["metadata"]["annotations"]["pyncette.dev/scheduled-at"] for p in k.pods(task)}


def test_three_failures_stop_the_task_until_kubectl_ptask_resume(
    k: Kubectl, start_operator: Any, redis_url: str
) -> None:
    url = f"{redis_url.split('?', 1)[0]}?namespace=cb-{k.namespace}"
    for i in range(2):
        start_operator("--namespace", k.namespace, "--status-interval", "1", backend=url, name=f"replica{i}")
    k.apply(
        ptask(
            "flaky",
            schedule="* * * * * */5",
            backoffLimit=0,
            suspendAfterFailures=3,
            failedRunsHistoryLimit=20,
            podTemplate=pod_template(duration="100ms", outcome="Failed"),
        )
    )

    def stopped() -> dict[str, Any] | None:
        ready = k.condition("flaky", "Ready") or {}
        return ready if ready.get("reason") == "TooManyFailures" else None

    ready = wait_until(stopped, timeout=120, what="Ready=False TooManyFailures")
    assert ready["status"] == "False" and "suspendAfterFailures: 3" in ready["message"]
    status = k.task("flaky")["status"]
    assert status["circuitBreaker"]["consecutiveFailures"] == 3 and "nextRunTime" not in status
    events = [e for e in k.events("flaky") if e["reason"] == "TooManyFailures"]
    assert events and events[0]["type"] == "Warning"
    assert len(scheduled_pods(k, "flaky")) == 3  # one Pod per failed slot, then nothing

    # Two more slots pass (the wait is for the clock, not for the operator): still three Pods.
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=11)
    wait_until(lambda: datetime.datetime.now(datetime.UTC) > until, timeout=30, what="two more slots to pass")
    assert len(scheduled_pods(k, "flaky")) == 3

    resumed = ptask_cli(k, "resume", "flaky")
    assert resumed.returncode == 0, resumed.stderr
    wait_until(lambda: (k.condition("flaky", "Ready") or {}).get("reason") == "Scheduled", what="Ready again")
    wait_until(lambda: len(scheduled_pods(k, "flaky")) > 3, timeout=60, what="a run after the resume")
    assert [e for e in k.events("flaky") if e["reason"] == "Resumed"]
