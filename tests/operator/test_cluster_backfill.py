"""Backfill on the local control plane with two replicas: 24 hourly slots, 24 Pods, once."""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import replica_with_run_in_flight
from ptask_harness import wait_until
from test_cluster_plugin import ptask_cli
from test_cluster_replicas import backend

from pyncette import Context
from pyncette import Pyncette
from pyncette_operator import backfill
from pyncette_operator.app import TEMPLATE_NAME
from pyncette_operator.backend_url import parse_backend_url
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import backfill_key
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_task

pytestmark = [pytest.mark.cluster, pytest.mark.services]


def slots(k: Kubectl, task: str) -> list[str]:
    return sorted(p["metadata"]["annotations"]["pyncette.dev/scheduled-at"] for p in k.pods(task))


def progress(k: Kubectl, task: str) -> dict[str, Any]:
    """``status.backfill`` of the task as the apiserver has it now."""
    return dict((k.task(task).get("status") or {}).get("backfill") or {})


def completed(k: Kubectl, task: str, *, timeout: float, what: str) -> dict[str, Any]:
    """Waits for the task's backfill to be Completed and returns its record."""
    result: dict[str, Any] = wait_until(
        lambda: progress(k, task) if progress(k, task).get("phase") == "Completed" else None, timeout=timeout, what=what
    )
    return result


def totals(record: dict[str, Any]) -> tuple[int, ...]:
    """(requested, started, succeeded, failed, skipped) of a backfill record."""
    return tuple(record.get(key, 0) for key in ("requested", "started", "succeeded", "failed", "skipped"))


def request_last_two_hours(k: Kubectl, task: str) -> tuple[datetime.datetime, datetime.datetime]:
    """Waits for the task to be scheduled, then asks for a backfill of its two last hourly slots."""
    wait_until(lambda: (k.task(task).get("status") or {}).get("nextRunTime"), what="the task to be scheduled")
    hour = datetime.datetime.now(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    start, end = hour - datetime.timedelta(hours=2), hour - datetime.timedelta(hours=1)
    requested = ptask_cli(k, "backfill", task, "--from", start.isoformat(), "--to", end.isoformat())
    assert requested.returncode == 0, requested.stderr
    return start, end


async def _never(context: Context) -> None:
    raise AssertionError("this process only writes to the backend")


async def _backfill_instance(url: str, body: dict[str, Any], value: str, *, register: bool) -> bool:
    """Whether the backend holds the backfill's instance; with ``register``, first registers it as a
    replica's mirror does when it sees the request (``Mirror._maybe_backfill``)."""
    config = parse_backend_url(url)
    app = Pyncette(repository_factory=config.load_factory(), **config.kwargs)
    template = app.dynamic_task(name=TEMPLATE_NAME)(_never)
    parsed = parse_task(body, handlers=())
    assert isinstance(parsed, TaskSpec)
    instance = backfill_key(parsed.namespace, parsed.name, value)
    async with app.create() as ctx:
        if register:
            now = datetime.datetime.now(datetime.UTC)
            start, end, _ = backfill.validate(parsed, value, now=now, max_slots=1000)
            registration = backfill.registration(parsed, start)
            await ctx.schedule_task(
                template,
                instance,
                uid=parsed.uid,
                generation=parsed.generation,
                backfill_end=format_time(end),
                **registration,
            )
        return await ctx.get_task(template, instance) is not None


def test_24_hourly_slots_start_24_pods_once(k: Kubectl, start_operator: Any, redis_url: str) -> None:
    url = backend(redis_url, f"bf-{k.namespace}")
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

    done = completed(k, "hourly", timeout=180, what="the backfill to complete")
    assert done["value"] == value
    assert (done["requested"], done["started"], done["succeeded"], done["failed"]) == (24, 24, 24, 0)
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

    # A registration of the same backfill that lands after its slots ran (two replicas saw the
    # request at once; the later write moves the instance back to the first slot) leases every slot
    # again: each Pod says it is this backfill's, so nothing runs twice and nothing is counted again.
    assert asyncio.run(_backfill_instance(url, k.task("hourly"), value, register=True))
    wait_until(
        lambda: not asyncio.run(_backfill_instance(url, k.task("hourly"), value, register=False)),
        timeout=120,
        what="the late registration's slots to be leased and the instance to remove itself",
    )
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=3)
    wait_until(lambda: datetime.datetime.now(datetime.UTC) > later, timeout=30, what="status writes to settle")
    again = progress(k, "hourly")
    assert (again.get("phase"), totals(again)) == ("Completed", (24, 24, 24, 0, 0))
    assert [s for s in slots(k, "hourly") if s in expected] == expected

    invalid = ptask_cli(k, "backfill", "hourly", "--from", "2000-01-01T00:00:00Z", "--to", end.isoformat())
    assert invalid.returncode == 0
    warning = wait_until(
        lambda: [e for e in k.events("hourly") if e["reason"] == "InvalidBackfill"], what="an InvalidBackfill Warning"
    )
    assert warning[0]["type"] == "Warning" and "--backfill-max-slots" in warning[0]["message"]


def test_a_forbid_slot_whose_replica_dies_is_adopted_and_counted_once(
    k: Kubectl, start_operator: Any, redis_url: str
) -> None:
    """kill -9 of the replica running a Forbid backfill's slot: after its lease expires the other
    replica leases the slot again, adopts the Pod still running, waits for it before the next slot,
    and counts its outcome; nothing is counted as skipped."""
    url = backend(redis_url, f"bf-{k.namespace}")
    replicas = [
        start_operator("--namespace", k.namespace, "--status-interval", "1", backend=url, name=f"replica{i}")
        for i in range(2)
    ]
    k.apply(
        ptask(
            "slow",
            schedule="0 * * * *",
            concurrencyPolicy="Forbid",
            leaseDuration="3s",
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="8s"),
        )
    )
    start, end = request_last_two_hours(k, "slow")
    expected = [start.strftime("%Y-%m-%dT%H:%M:%SZ"), end.strftime("%Y-%m-%dT%H:%M:%SZ")]

    victim = wait_until(lambda: replica_with_run_in_flight(replicas), timeout=60, what="a replica running slot 0")
    wait_until(lambda: progress(k, "slow").get("started") == 1, timeout=30, what="the first slot counted as started")
    assert [s for s in slots(k, "slow") if s in expected] == expected[:1]
    victim.kill()

    done = completed(k, "slow", timeout=120, what="the backfill to complete")
    assert totals(done) == (2, 2, 2, 0, 0)
    pods = {p["metadata"]["annotations"]["pyncette.dev/scheduled-at"]: p for p in k.pods("slow")}
    assert sorted(s for s in pods if s in expected) == expected  # one Pod per slot, none twice
    assert all(pods[s]["metadata"]["annotations"]["pyncette.dev/backfill"] for s in expected)


def test_an_allow_backfill_whose_follower_dies_still_completes(k: Kubectl, start_operator: Any, redis_url: str) -> None:
    """Under Allow each slot's Pod is followed by the replica that created it. kill -9 of that
    replica loses those outcomes; once every slot has started and every Pod has ended, another
    replica's sweep completes the backfill and says how many outcomes it did not see, instead of
    leaving it Running for ever."""
    url = backend(redis_url, f"bf-{k.namespace}")
    first = start_operator("--namespace", k.namespace, "--status-interval", "1", backend=url, name="first")
    k.apply(
        ptask(
            "parallel",
            schedule="0 * * * *",
            concurrencyPolicy="Allow",
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="10s"),
        )
    )
    request_last_two_hours(k, "parallel")

    wait_until(lambda: progress(k, "parallel").get("started") == 2, timeout=60, what="both slots started")
    first.kill()
    second = start_operator(
        "--namespace", k.namespace, backend=url, name="second", env={"PYNCETTE_SWEEP_INTERVAL": "2"}
    )
    done = completed(k, "parallel", timeout=120, what="the backfill to complete after its follower died")
    assert totals(done) == (2, 2, 0, 0, 0)
    assert done["message"] == "the outcome of 2 run(s) was not observed: the replica following them stopped"
    assert len([p for p in k.pods("parallel") if p["metadata"]["annotations"].get("pyncette.dev/backfill")]) == 2
    assert second.alive()
