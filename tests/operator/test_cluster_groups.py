"""Concurrency groups on the local control plane: three replicas on Redis, maxActive 2, never 3 Pods."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

from pyncette_operator.spec import parse_time

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow]


def intervals(k: Kubectl) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """(created, finished or now) of every run Pod of the group's tasks."""
    now = datetime.datetime.now(datetime.UTC)
    out = []
    for pod in k.get("pods", "-l", "app.kubernetes.io/managed-by=pyncette-operator")["items"]:
        start = parse_time(pod["metadata"]["creationTimestamp"])
        ends = [
            parse_time(c["state"]["terminated"]["finishedAt"])
            for c in (pod.get("status") or {}).get("containerStatuses") or []
            if (c.get("state") or {}).get("terminated")
        ]
        out.append((start, max(ends) if ends else now))
    return out


def most_at_once(spans: list[tuple[datetime.datetime, datetime.datetime]]) -> int:
    edges = sorted(itertools.chain(((s, 1) for s, _ in spans), ((e, -1) for _, e in spans)), key=lambda x: (x[0], x[1]))
    current = best = 0
    for _, step in edges:
        current += step
        best = max(best, current)
    return best


def test_max_active_2_never_has_3_pods_running_across_3_replicas(
    k: Kubectl, start_operator: Any, redis_url: str
) -> None:
    url = f"{redis_url.split('?', 1)[0]}?namespace=grp-{k.namespace}"
    for i in range(3):
        start_operator("--namespace", k.namespace, "--status-interval", "1", backend=url, name=f"replica{i}")
    for name in ("load-a", "load-b", "load-c"):
        k.apply(
            ptask(
                name,
                schedule="* * * * * */10",
                concurrencyGroup={"name": "etl", "maxActive": 2},
                successfulRunsHistoryLimit=100,
                podTemplate=pod_template(duration="4s"),
            )
        )
    waiting = wait_until(
        lambda: [
            n for n in ("load-a", "load-b", "load-c") if (k.condition(n, "Waiting") or {}).get("status") == "True"
        ],
        timeout=90,
        what="a task Waiting for the group",
    )
    assert waiting
    wait_until(lambda: len(intervals(k)) >= 9, timeout=150, what="nine runs of the group")
    assert most_at_once(intervals(k)) == 2  # two at once, never three
    # Every task ran: queued, not skipped.
    assert all(k.pods(n) for n in ("load-a", "load-b", "load-c"))
