"""concurrencyPolicy on the local control plane: Allow overlaps, Forbid never does, Replace deletes."""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

pytestmark = pytest.mark.cluster


def _t(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def intervals(pods: list[dict[str, Any]]) -> list[tuple[datetime.datetime, datetime.datetime]]:
    out = []
    for pod in pods:
        status = pod.get("status") or {}
        start = status.get("startTime")
        ends = [
            ((c.get("state") or {}).get("terminated") or {}).get("finishedAt")
            for c in status.get("containerStatuses") or []
        ]
        if start and ends and ends[0]:
            out.append((_t(start), _t(ends[0])))
    return sorted(out)


def running(pods: list[dict[str, Any]]) -> int:
    return sum(
        1
        for p in pods
        if (p.get("status") or {}).get("phase") in ("Pending", "Running") and not p["metadata"].get("deletionTimestamp")
    )


def test_allow_overlaps_runs(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask(
            "allow",
            interval="1s",
            concurrencyPolicy="Allow",
            successfulRunsHistoryLimit=20,
            podTemplate=pod_template(duration="4s"),
        )
    )
    wait_until(lambda: running(k.pods("allow")) >= 2, timeout=60, what="two Pods running at once")


def test_forbid_never_overlaps(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask(
            "forbid",
            interval="1s",
            concurrencyPolicy="Forbid",
            successfulRunsHistoryLimit=20,
            podTemplate=pod_template(duration="2s"),
        )
    )
    wait_until(lambda: len(intervals(k.pods("forbid"))) >= 3, timeout=90, what="three finished runs")
    spans = intervals(k.pods("forbid"))
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end - datetime.timedelta(seconds=1), spans  # timestamps have 1 s resolution
    assert all(running([p]) <= 1 for p in k.pods("forbid"))
    assert op.alive()


def test_replace_deletes_the_running_pod(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask(
            "replace",
            interval="2s",
            concurrencyPolicy="Replace",
            successfulRunsHistoryLimit=20,
            podTemplate=pod_template(duration="30s"),
        )
    )
    first = wait_until(
        lambda: k.pods("replace") and k.pods("replace")[0]["metadata"]["name"], timeout=60, what="a first Pod"
    )
    wait_until(
        lambda: (
            all(p["metadata"]["name"] != first or p["metadata"].get("deletionTimestamp") for p in k.pods("replace"))
            and len(k.pods("replace")) >= 1
            and any(p["metadata"]["name"] != first for p in k.pods("replace"))
        ),
        timeout=60,
        what="the first Pod replaced by a newer one",
    )
    wait_until(lambda: running(k.pods("replace")) <= 1, timeout=60, what="at most one Pod running")
