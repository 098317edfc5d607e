"""Backfill on the local control plane with two replicas: 24 hourly slots, 24 Pods, once."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until
from test_cluster_plugin import ptask_cli

pytestmark = [pytest.mark.cluster, pytest.mark.services]


def slots(k: Kubectl, task: str) -> list[str]:
    return sorted(p["metadata"]["annotations"]["pyncette.dev/scheduled-at"] for p in k.pods(task))


def test_24_hourly_slots_start_24_pods_once(k: Kubectl, start_operator: Any, redis_url: str) -> None:
    url = f"{redis_url.split('?', 1)[0]}?namespace=bf-{k.namespace}"
    for i in range(2):
        start_operator("--namespace", k.namespace, "--status-interval", "1", backend=url, name=f"replica{i}")
    k.apply(
        ptask(
            "hourly",
            schedule="0 * * * *",
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="300ms"),
        )
    )
    wait_until(lambda: (k.task("hourly").get("status") or {}).get("nextRunTime"), what="the task to be scheduled")
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = today - datetime.timedelta(days=1), today - datetime.timedelta(hours=1)
    requested = ptask_cli(k, "backfill", "hourly", "--from", start.isoformat(), "--to", end.isoformat(), "-o", "json")
    assert requested.returncode == 0, requested.stderr
    value = json.loads(requested.stdout)["pyncette.dev/backfill"]
    expected = [(start + datetime.timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ") for h in range(24)]

    def completed() -> dict[str, Any] | None:
        progress = (k.task("hourly").get("status") or {}).get("backfill") or {}
        return progress if progress.get("phase") == "Completed" else None

    progress = wait_until(completed, timeout=180, what="the backfill to complete")
    assert progress["value"] == value
    assert (progress["requested"], progress["started"], progress["succeeded"], progress["failed"]) == (24, 24, 24, 0)
    backfilled = [s for s in slots(k, "hourly") if s in expected]
    assert backfilled == expected  # every slot once: 24 Pods, none twice (two replicas)
    reasons = [e["reason"] for e in k.events("hourly")]
    assert "BackfillStarted" in reasons and "BackfillCompleted" in reasons

    # The same value again starts nothing; the record still says it ran.
    k("annotate", "ptask", "hourly", "pyncette.dev/backfill-", "--overwrite")
    k("annotate", "ptask", "hourly", f"pyncette.dev/backfill={value}")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)
    wait_until(lambda: datetime.datetime.now(datetime.UTC) > later, timeout=30, what="a few seconds to pass")
    assert [s for s in slots(k, "hourly") if s in expected] == expected

    invalid = ptask_cli(k, "backfill", "hourly", "--from", "2000-01-01T00:00:00Z", "--to", end.isoformat())
    assert invalid.returncode == 0
    warning = wait_until(
        lambda: [e for e in k.events("hourly") if e["reason"] == "InvalidBackfill"], what="an InvalidBackfill Warning"
    )
    assert warning[0]["type"] == "Warning" and "--backfill-max-slots" in warning[0]["message"]
