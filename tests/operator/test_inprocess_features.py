"""Issue-12 features wired together in one process on fake time (see test_inprocess.py's world)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from test_inprocess import POD
from test_inprocess import T0
from test_inprocess import FakeKube
from test_inprocess import World
from test_inprocess import until
from test_inprocess import world

from pyncette.clock import FakeClock
from pyncette_operator.app import build_parts
from pyncette_operator.backend_url import parse_backend_url
from pyncette_operator.metrics import Metrics
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.jitter import jitter_delay
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.settings import Settings

__all__ = ["world"]


@pytest.fixture
async def hourly_world() -> AsyncIterator[World]:
    """``world`` with a long poll interval, for tests that move the fake clock by many minutes:
    the loop sleeps until the next due time anyway, and does not wake every 50 ms of fake time."""
    kube = FakeKube()
    clock = FakeClock(T0)
    metrics, tracker, handlers = Metrics(), PodTracker(), HandlerRegistry()
    settings = Settings(status_interval=0.05, poll_interval=3600, sweep_interval=3600)
    stopping = asyncio.Event()
    parts = build_parts(
        settings,
        parse_backend_url("memory://"),
        kube=kube,  # type: ignore[arg-type]
        handlers=handlers,
        metrics=metrics,
        tracker=tracker,
        stopping=stopping,
        namespaces=["ns"],
        clock=clock,
    )
    async with parts.app.create() as ctx:
        parts.mirror.bind(ctx)
        loops = [asyncio.ensure_future(t) for t in (ctx.run(), parts.status.run(), parts.events.run())]
        try:
            yield World(kube, clock, parts, ctx, tracker, metrics, handlers)
        finally:
            ctx.shutdown()
            stopping.set()
            for loop in loops[1:]:
                loop.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(loops[0], timeout=5)


async def leased(world: World, instance: str) -> None:
    """Waits until the run of ``instance`` holds its lease (a condition wait with a deadline)."""
    for _ in range(2000):
        state = await world.ctx.get_task(world.parts.mirror._template, instance)
        if state is not None and state.locked_until is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{instance} was never leased")


def test_jitter_delay_is_fixed_per_slot_and_spread_within_the_bound() -> None:
    jitter = datetime.timedelta(seconds=30)
    slot = T0 + datetime.timedelta(minutes=1)
    delays = [jitter_delay(task_uid=f"uid-{n}", scheduled_at=slot, jitter=jitter) for n in range(200)]
    assert all(datetime.timedelta() <= d < jitter for d in delays)
    assert len(set(delays)) > 150  # spread, not one value
    again = jitter_delay(task_uid="uid-7", scheduled_at=slot, jitter=jitter)
    assert again == delays[7]  # the same in every replica and after a restart
    other_slot = jitter_delay(task_uid="uid-7", scheduled_at=slot + jitter, jitter=jitter)
    assert other_slot != again


async def test_jitter_delays_the_pod_but_not_the_slot(world: World) -> None:
    await world.apply("j", {"interval": "1m", "jitter": "30s", "podTemplate": POD})
    slot = T0 + datetime.timedelta(minutes=1)
    delay = jitter_delay(task_uid="uid-j", scheduled_at=slot, jitter=datetime.timedelta(seconds=30))
    assert delay > datetime.timedelta(seconds=1)  # this uid's first slot; keeps the test meaningful

    await world.clock.set(slot + delay - datetime.timedelta(seconds=1))
    await leased(world, "ns/j")
    assert world.pods_of("j") == []  # leased, waiting for its delay
    await world.clock.set(slot + delay)
    [pod] = await until(lambda: world.pods_of("j"), "the run Pod after the delay")
    assert pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"] == "2030-01-01T00:01:00Z"
    assert str(int(slot.timestamp())) in pod["metadata"]["name"]
    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.kube.status("j").get("lastSuccessfulTime"), "success")
    assert world.kube.status("j")["lastScheduleTime"] == "2030-01-01T00:01:00Z"


def ready(world: World, name: str) -> dict[str, Any]:
    return next((c for c in world.kube.status(name).get("conditions", []) if c["type"] == "Ready"), {})


async def fail_next_run(world: World, name: str, count_before: int) -> None:
    """Moves the clock to the next run of an every-10s task and fails its Pod."""
    await world.clock.advance(seconds=10)
    pods = await until(lambda: len(world.pods_of(name)) > count_before and world.pods_of(name), "the next run Pod")
    newest = max(pods, key=lambda p: p["metadata"]["annotations"]["pyncette.dev/scheduled-at"])
    world.finish_pod(newest["metadata"]["name"], succeeded=False)
    await until(lambda: world.kube.status(name).get("lastFailureTime"), "the failure recorded")


async def test_circuit_breaker_stops_after_n_failed_runs_and_resumes(world: World) -> None:
    spec = {
        "interval": "10s",
        "backoffLimit": 0,
        "suspendAfterFailures": 2,
        "failedRunsHistoryLimit": 10,
        "podTemplate": POD,
    }
    await world.apply("cb", spec)
    template = world.parts.mirror._template
    await fail_next_run(world, "cb", 0)
    assert (await until(lambda: world.kube.status("cb").get("circuitBreaker"), "a count"))["consecutiveFailures"] == 1
    assert ready(world, "cb")["status"] == "True"
    await fail_next_run(world, "cb", 1)

    await until(lambda: ready(world, "cb").get("reason") == "TooManyFailures", "Ready=False TooManyFailures")
    assert ready(world, "cb")["status"] == "False"
    assert "stopped after 2 failed runs in a row (suspendAfterFailures: 2)" in ready(world, "cb")["message"]
    record = world.kube.status("cb")["circuitBreaker"]
    assert record["consecutiveFailures"] == 2 and record["trippedGeneration"] == 1 and record["trippedAt"]
    warnings = [e for e in world.kube.events if e["reason"] == "TooManyFailures"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    await world.parts.mirror.retry_dirty()  # what the operator's repair loop does every 2 s
    assert await world.ctx.get_task(template, "ns/cb") is None
    await world.clock.advance(seconds=60)
    assert len(world.pods_of("cb")) == 2  # nothing runs while stopped
    # A status echo (or another replica's watch event) keeps it stopped.
    await world.apply("cb", spec)
    assert await world.ctx.get_task(template, "ns/cb") is None

    # kubectl ptask resume: a new pyncette.dev/resume value.
    await world.apply("cb", spec, annotations={"pyncette.dev/resume": "2030-01-01T00:01:30Z"})
    assert await world.ctx.get_task(template, "ns/cb") is not None
    await until(lambda: ready(world, "cb").get("reason") == "Scheduled", "Ready again")
    assert world.kube.status("cb")["circuitBreaker"]["consecutiveFailures"] == 0
    assert [e for e in world.kube.events if e["reason"] == "Resumed"]
    await world.clock.advance(seconds=10)
    await until(lambda: len(world.pods_of("cb")) > 2, "a run after the resume")


async def test_a_spec_change_resumes_and_a_success_resets_the_count(world: World) -> None:
    spec = {
        "interval": "10s",
        "backoffLimit": 0,
        "suspendAfterFailures": 1,
        "failedRunsHistoryLimit": 10,
        "podTemplate": POD,
    }
    await world.apply("sc", spec)
    await fail_next_run(world, "sc", 0)
    await until(lambda: ready(world, "sc").get("reason") == "TooManyFailures", "stopped after one failure")
    await world.parts.mirror.retry_dirty()
    await world.apply("sc", {**spec, "suspendAfterFailures": 3})  # generation 2
    await until(lambda: ready(world, "sc").get("reason") == "Scheduled", "resumed by the spec change")

    await fail_next_run(world, "sc", 1)
    await until(lambda: world.kube.status("sc")["circuitBreaker"]["consecutiveFailures"] == 1, "one failure")
    await world.clock.advance(seconds=10)
    pods = await until(lambda: len(world.pods_of("sc")) > 2 and world.pods_of("sc"), "a third run")
    newest = max(pods, key=lambda p: p["metadata"]["annotations"]["pyncette.dev/scheduled-at"])
    world.finish_pod(newest["metadata"]["name"], succeeded=True)
    await until(lambda: world.kube.status("sc")["circuitBreaker"]["consecutiveFailures"] == 0, "reset by a success")
    assert ready(world, "sc")["reason"] == "Scheduled"


def condition(world: World, name: str, type_: str) -> dict[str, Any]:
    return next((c for c in world.kube.status(name).get("conditions", []) if c["type"] == type_), {})


async def test_stale_turns_true_when_the_last_success_is_too_old_even_while_nothing_runs(hourly_world: World) -> None:
    world = hourly_world
    spec = {"interval": "10m", "maxSuccessAge": "15m", "podTemplate": POD}
    body = await world.apply("fresh", spec)
    body["metadata"]["creationTimestamp"] = "2030-01-01T00:00:00Z"
    await world.parts.mirror.on_event("MODIFIED", body)
    stale = await until(lambda: condition(world, "fresh", "Stale"), "a Stale condition")
    assert (stale["status"], stale["reason"]) == ("False", "RecentSuccess")

    await world.clock.advance(seconds=600)
    [pod] = await until(lambda: world.pods_of("fresh"), "the first run")
    await world.clock.advance(seconds=30)
    world.finish_pod(pod["metadata"]["name"])  # a success at 00:10:30
    await until(lambda: world.kube.status("fresh").get("lastSuccessfulTime") == "2030-01-01T00:10:30Z", "success")

    # Suspended: nothing runs any more, yet the condition must turn when the success gets too old.
    await world.apply("fresh", {**spec, "suspend": True})
    await world.clock.set(T0 + datetime.timedelta(minutes=25, seconds=31))
    assert [stale for _, _, stale, _ in world.parts.status.refresh_stale()] == [True]  # every replica, every 5 s
    stale = await until(
        lambda: condition(world, "fresh", "Stale").get("status") == "True" and condition(world, "fresh", "Stale"),
        "Stale=True",
    )
    assert stale["reason"] == "NoRecentSuccess"
    assert stale["lastTransitionTime"] == "2030-01-01T00:25:30Z"  # since when: the success + 15m
    assert "2030-01-01T00:10:30Z" in stale["message"] and "maxSuccessAge (15m)" in stale["message"]
    writes = len(world.kube.status_writes)
    world.parts.status.refresh_stale()
    await world.clock.advance(seconds=1)
    assert len(world.kube.status_writes) == writes  # no change, no write

    await world.apply("fresh", {**spec, "suspend": False})
    await world.clock.advance(seconds=600)
    pod = await until(lambda: [p for p in world.pods_of("fresh") if p["status"]["phase"] == "Pending"], "a run")
    world.finish_pod(pod[0]["metadata"]["name"])
    await until(lambda: condition(world, "fresh", "Stale").get("status") == "False", "fresh again")
    assert [(ns, name, stale) for ns, name, stale, _ in world.parts.status.refresh_stale()] == [("ns", "fresh", False)]


def slot_pods(world: World, name: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["annotations"]["pyncette.dev/scheduled-at"]: p for p in world.pods_of(name)}


async def test_backfill_runs_every_slot_once_and_the_same_value_again_runs_none(world: World) -> None:
    spec = {"schedule": "0 * * * *", "successfulRunsHistoryLimit": 100, "podTemplate": POD}
    value = "2029-12-31T00:00:00Z/2029-12-31T23:00:00Z"
    await world.apply("bf", spec, annotations={"pyncette.dev/backfill": value})
    pods = await until(lambda: len(slot_pods(world, "bf")) == 24 and slot_pods(world, "bf"), "24 backfill Pods")
    assert sorted(pods) == [f"2029-12-31T{h:02d}:00:00Z" for h in range(24)]
    names = {p["metadata"]["name"] for p in pods.values()}
    assert all(n.startswith("bf-1893") or n.startswith("bf-1894") for n in names)  # named by their slots
    status = await until(lambda: world.kube.status("bf").get("backfill"), "status.backfill")
    assert (status["value"], status["requested"], status["phase"]) == (value, 24, "Running")
    for pod in pods.values():
        world.finish_pod(pod["metadata"]["name"])
    done = await until(
        lambda: (b := world.kube.status("bf").get("backfill")) and b["phase"] == "Completed" and b, "completed"
    )
    assert (done["started"], done["succeeded"], done["failed"], done["skipped"]) == (24, 24, 0, 0)
    assert [e for e in world.kube.events if e["reason"] == "BackfillCompleted"]
    assert world.kube.status("bf").get("nextRunTime") == "2030-01-01T01:00:00Z"  # the schedule is untouched
    assert await world.ctx.get_task(world.parts.mirror._template, "ns/bf@backfill:" + value) is None

    # The same value again (an echo, another replica, a restart): nothing runs.
    await world.apply("bf", spec, annotations={"pyncette.dev/backfill": value})
    await world.clock.advance(seconds=1)
    assert len(world.pods_of("bf")) == 24
    # An overlapping new range: the slots that have a run are skipped, only the new ones run.
    wider = "2029-12-31T22:00:00Z/2030-01-01T00:00:00Z"
    await world.apply("bf", spec, annotations={"pyncette.dev/backfill": wider})
    await until(lambda: "2030-01-01T00:00:00Z" in slot_pods(world, "bf"), "the one new slot")
    world.finish_pod(slot_pods(world, "bf")["2030-01-01T00:00:00Z"]["metadata"]["name"])
    again = await until(
        lambda: (b := world.kube.status("bf").get("backfill")) and b["phase"] == "Completed" and b, "completed again"
    )
    assert (again["requested"], again["skipped"], again["succeeded"]) == (3, 2, 1)
    assert len(world.pods_of("bf")) == 25


async def test_backfill_under_forbid_runs_one_slot_at_a_time(world: World) -> None:
    spec = {
        "schedule": "0 * * * *",
        "concurrencyPolicy": "Forbid",
        "backoffLimit": 0,
        "podTemplate": POD,
    }
    await world.apply("seq", spec, annotations={"pyncette.dev/backfill": "2029-12-31T21:00:00Z/2029-12-31T23:30:00Z"})
    for hour in (21, 22, 23):
        pods = await until(lambda h=hour: len(world.pods_of("seq")) == h - 20 and world.pods_of("seq"), f"slot {hour}")
        running = [p for p in pods if p["status"]["phase"] == "Pending"]
        assert len(running) == 1  # never two at once
        assert running[0]["metadata"]["annotations"]["pyncette.dev/scheduled-at"] == f"2029-12-31T{hour}:00:00Z"
        world.finish_pod(running[0]["metadata"]["name"], succeeded=hour != 22)
    done = await until(
        lambda: (b := world.kube.status("seq").get("backfill")) and b["phase"] == "Completed" and b, "completed"
    )
    assert (done["succeeded"], done["failed"]) == (2, 1)


async def test_an_invalid_backfill_gives_a_warning_and_runs_nothing(world: World) -> None:
    spec = {"schedule": "0 * * * *", "podTemplate": POD}
    cases = {
        "yesterday": "expected <RFC 3339 start>/<RFC 3339 end>",
        "2029-12-31T05:00:00Z/2029-12-31T01:00:00Z": "is after the end",
        "2029-12-31T05:00:00Z/2030-01-02T00:00:00Z": "is in the future",
        "2029-12-31T05:10:00Z/2029-12-31T05:20:00Z": "no scheduled time of this task between",
        "2029-10-01T00:00:00Z/2029-12-31T00:00:00Z": "covers more than 1000 scheduled times (--backfill-max-slots)",
    }
    for value, fragment in cases.items():
        await world.apply("bad", spec, annotations={"pyncette.dev/backfill": value})
        status = await until(
            lambda v=value: (b := world.kube.status("bad").get("backfill")) and b.get("value") == v and b, value
        )
        assert status["phase"] == "Invalid" and fragment in status["message"], status
        [warning] = [e for e in world.kube.events if e["reason"] == "InvalidBackfill" and value in e["message"]]
        assert warning["type"] == "Warning" and fragment in warning["message"]
    await world.clock.advance(seconds=1)
    assert world.pods_of("bad") == []


async def test_a_concurrency_group_runs_at_most_max_active_and_queues_the_rest_in_order(world: World) -> None:
    group = {"name": "etl", "maxActive": 2}
    for name, interval in (("a", "10s"), ("b", "11s"), ("c", "12s")):
        await world.apply(name, {"interval": interval, "concurrencyGroup": group, "podTemplate": POD})

    def running() -> list[dict[str, Any]]:
        return [p for t in "abc" for p in world.pods_of(t) if p["status"]["phase"] == "Pending"]

    await world.clock.advance(seconds=12)
    await until(lambda: len(running()) == 2, "two runs of the group")
    for _ in range(5):
        await world.clock.advance(seconds=1)
        assert len(running()) == 2  # the third waits, however long
    assert {p["metadata"]["labels"]["pyncette.dev/task"] for p in running()} == {"a", "b"}  # earliest first
    waiting = await until(
        lambda: condition(world, "c", "Waiting").get("status") == "True" and condition(world, "c", "Waiting"),
        "Waiting=True on c",
    )
    assert waiting["reason"] == "ConcurrencyGroupFull" and "maxActive 2" in waiting["message"]

    world.finish_pod(
        next(p for p in running() if p["metadata"]["labels"]["pyncette.dev/task"] == "a")["metadata"]["name"]
    )
    for _ in range(3):
        await world.clock.advance(seconds=1)
    await until(
        lambda: [p for p in running() if p["metadata"]["labels"]["pyncette.dev/task"] == "c"], "c gets the free slot"
    )
    assert len(running()) == 2
    await until(lambda: condition(world, "c", "Waiting").get("status") == "False", "c no longer waiting")
    for pod in running():
        world.finish_pod(pod["metadata"]["name"])


def test_backfill_counts_of_two_replicas_add_up_and_complete() -> None:
    from pyncette_operator import backfill
    from pyncette_operator.status import TaskStatus

    now = T0
    a, b = TaskStatus(), TaskStatus()
    backfill.begin(a, "v", start=T0, end=T0, count=4, now=now)
    b.observed = {"backfill": a.render(now)["backfill"]}
    # Both replicas settle two runs each without seeing the other's writes in between.
    assert not backfill.count(a, "v", "succeeded", replica="a", now=now)
    assert not backfill.count(b, "v", "succeeded", replica="b", now=now)
    assert not backfill.count(b, "v", "failed", replica="b", now=now)
    assert not backfill.count(a, "v", "succeeded", replica="a", now=now)
    b.observed = {"backfill": a.render(now)["backfill"]}  # b sees a's write: all four settled
    assert backfill.complete_if_done(b, now=now)
    view = b.render(now)["backfill"]
    assert (view["succeeded"], view["failed"], view["phase"]) == (3, 1, "Completed")


def test_an_unfollowed_backfill_completes_saying_what_was_not_observed() -> None:
    from pyncette_operator import backfill
    from pyncette_operator.status import TaskStatus

    now = T0
    state = TaskStatus()
    backfill.begin(state, "v", start=T0, end=T0, count=3, now=now)
    assert not backfill.settle_unfollowed(state, "other", now=now)  # another request: not this one
    backfill.count(state, "v", "started", replica="a", now=now)
    backfill.count(state, "v", "succeeded", replica="a", now=now)
    assert backfill.settle_unfollowed(state, "v", now=now)
    view = state.render(now)["backfill"]
    assert (view["phase"], view["succeeded"]) == ("Completed", 1)
    assert view["message"] == "the outcome of 2 run(s) was not observed: the replica following them stopped"
    assert not backfill.settle_unfollowed(state, "v", now=now)  # completed already

    # Every outcome counted: an ordinary completion, without a message.
    full = TaskStatus()
    backfill.begin(full, "w", start=T0, end=T0, count=1, now=now)
    full.backfill_counts = {"replica": "a", "value": "w", "started": 1, "succeeded": 0, "failed": 1, "skipped": 0}
    assert backfill.settle_unfollowed(full, "w", now=now)
    done = full.render(now)["backfill"]
    assert done["phase"] == "Completed" and "message" not in done


def test_an_older_echo_of_a_replicas_own_backfill_write_does_not_bring_its_record_back() -> None:
    """Replica B wrote a Running record, then saw A's newer Completed one, then the echo of its
    own older write: it keeps the Completed record (the newest wins and stays)."""
    from pyncette_operator import backfill
    from pyncette_operator.status import TaskStatus

    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    b = TaskStatus()
    backfill.begin(b, "v", start=now, end=now, count=2, now=now)
    own_write = b.render(now)
    a = TaskStatus(observed=own_write)
    a.backfill_counts = {"replica": "a", "value": "v", "started": 2, "skipped": 0, "succeeded": 2, "failed": 0}
    later = now + datetime.timedelta(seconds=1)
    assert backfill.complete_if_done(a, now=later)
    for seen in (a.render(later), own_write):  # A's write, then the echo of B's older one
        b.observed = dict(seen)
        b.adopt_newer_backfill()
    view = b.backfill_view()
    assert view is not None and view["phase"] == "Completed"
