"""Freshness (spec.maxSuccessAge) on the local control plane: Stale turns while nothing runs."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until
from test_cluster_plugin import ptask_cli

from pyncette_operator.spec import parse_time

pytestmark = pytest.mark.cluster


def test_stale_since_when_then_fresh_after_a_success(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    # Nothing runs for a day; with maxSuccessAge 5s the task is stale 5 s after it was created.
    k.apply(ptask("daily", schedule="0 0 * * *", maxSuccessAge="5s", podTemplate=pod_template(duration="200ms")))
    created = parse_time(k.task("daily")["metadata"]["creationTimestamp"])

    stale = wait_until(
        lambda: (c := k.condition("daily", "Stale")) and c["status"] == "True" and c, timeout=60, what="Stale=True"
    )
    assert stale["reason"] == "NoRecentSuccess"
    assert parse_time(stale["lastTransitionTime"]) == created + datetime.timedelta(seconds=5)  # since when
    assert "no successful run since the task was created" in stale["message"]
    gauge = f'pyncette_operator_task_stale{{name="daily",namespace="{k.namespace}"}}'
    wait_until(lambda: op.metrics().get(gauge) == 1.0, what="the per-task stale metric")

    assert ptask_cli(k, "run-now", "daily").returncode == 0
    fresh = wait_until(
        lambda: (c := k.condition("daily", "Stale")) and c["status"] == "False" and c, timeout=90, what="Stale=False"
    )
    assert fresh["reason"] == "RecentSuccess"
    wait_until(lambda: op.metrics().get(gauge) == 0.0, what="the metric back to 0")
