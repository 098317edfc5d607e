"""Failure paths of the operator on the fake clock: downtime catch-up, bounded retries with backoff,
schedules anchored on status, leases released at shutdown.

The same code as the cluster tests (mirror, runs, status), with the schedule driven by FakeClock, so
"the operator was down for ten minutes" and "the backoff is 10 s, 20 s, 40 s" take no real time.
The cluster tests (test_cluster_failures.py) check the same behaviour through kubectl.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_inprocess import POD
from test_inprocess import T0
from test_inprocess import FakeKube
from test_inprocess import World
from test_inprocess import running_world
from test_inprocess import until

from pyncette.clock import FakeClock
from pyncette_operator.app import reconcile_active
from pyncette_operator.spec import format_time

MINUTE = datetime.timedelta(minutes=1)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with running_world(poll_interval=30) as w:
        yield w


FAILING = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def stamp(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"])


def attempt(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["annotations"]["pyncette.dev/attempt"])


async def until_async(
    read: Callable[[], Awaitable[Any]], check: Callable[[Any], bool], what: str, within: float = 10
) -> Any:
    """``until`` for a condition that needs an await (a backend read); returns the value that passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check(value := await read()):
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
    return value


def list_pods(world: World) -> None:
    """A fresh replica's first listing of the run Pods (its Pod tracker is then synced)."""
    for pod in list(world.kube.pods.values()):
        world.tracker.observe(None, copy.deepcopy(pod))
    world.tracker.resync(list(world.kube.pods.values()), since=world.tracker.mark(), namespaces=["ns"])


async def restart(world: World, name: str) -> None:
    """What a fresh replica sees first: kopf's listing of the task and of the run Pods."""
    list_pods(world)
    body = world.kube.tasks[("ns", name)]
    await world.parts.mirror.on_event(None, copy.deepcopy(body))


async def test_ten_minutes_down_gives_one_catch_up_run(tmp_path: Path) -> None:
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'down.db'}"
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        await w.apply("cron", {"schedule": "* * * * *", "podTemplate": POD})
        await clock.advance(MINUTE)
        [pod] = await until(lambda: w.pods_of("cron"), "the 00:01 Pod")
        w.finish_pod(pod["metadata"]["name"])
        await until(lambda: kube.status("cron").get("lastSuccessfulTime"), "its success")
    # The operator is stopped for ten minutes and a half: slots 00:02 ... 00:11 pass unseen.
    await clock.advance(minutes_and_a_half(10))
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        await restart(w, "cron")
        pods = await until(lambda: len(w.pods_of("cron")) == 2 and w.pods_of("cron"), "one catch-up Pod")
        await clock.advance(seconds=1)
        assert sorted(stamp(p) for p in w.pods_of("cron")) == ["2030-01-01T00:01:00Z", "2030-01-01T00:11:00Z"]
        assert w.metrics.missed_schedules._value.get() == 9
        [missed] = [e for e in kube.events if e["reason"] == "MissedSchedules"]
        assert missed["type"] == "Warning" and missed["message"].startswith("9 scheduled run(s)")
        # And then the schedule goes on: 00:12 runs at 00:12.
        latest = next(p for p in pods if stamp(p).endswith("00:11:00Z"))
        w.finish_pod(latest["metadata"]["name"])
        await clock.set(T0 + datetime.timedelta(minutes=12))
        await until(lambda: len(w.pods_of("cron")) == 3, "the 00:12 Pod")


def minutes_and_a_half(n: int) -> datetime.timedelta:
    return datetime.timedelta(minutes=n, seconds=30)


async def test_starting_deadline_skips_a_late_catch_up(tmp_path: Path) -> None:
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'deadline.db'}"
    spec = {"schedule": "* * * * *", "startingDeadlineSeconds": 20, "podTemplate": POD}
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        await w.apply("late", spec)
    await clock.advance(minutes_and_a_half(10))  # the latest missed slot (00:10) is 30 s late
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        await restart(w, "late")
        await until(lambda: w.metrics.missed_schedules._value.get() == 10, "ten missed slots")
        assert w.pods_of("late") == []
        await clock.set(T0 + datetime.timedelta(minutes=11))
        [pod] = await until(lambda: w.pods_of("late"), "the 00:11 Pod, on time")
        assert stamp(pod) == "2030-01-01T00:11:00Z"


async def test_failing_pods_are_retried_with_backoff_then_the_schedule_moves_on(world: World) -> None:
    spec = {"interval": "1h", "backoffLimit": 2, "failedRunsHistoryLimit": 5, "podTemplate": FAILING}
    await world.apply("flaky", spec)
    first = T0 + datetime.timedelta(hours=1)
    await world.clock.set(first)
    for n, delay in enumerate((10, 20, None)):
        pods = await until(lambda n=n: len(world.pods_of("flaky")) == n + 1 and world.pods_of("flaky"), f"attempt {n}")
        current = max(pods, key=attempt)
        assert attempt(current) == n
        world.finish_pod(current["metadata"]["name"], succeeded=False)
        if delay is None:
            break
        await until(lambda: world.clock.next_deadline is not None, "the backoff wait")
        await world.clock.advance(seconds=delay - 1)
        assert len(world.pods_of("flaky")) == n + 1  # still backing off
        await world.clock.advance(seconds=1)
    status = await until(
        lambda: world.kube.status("flaky").get("lastFailureTime") and world.kube.status("flaky"), "failure"
    )
    assert status["lastScheduleTime"] == "2030-01-01T01:00:00Z"
    assert sorted(attempt(p) for p in world.pods_of("flaky")) == [0, 1, 2]
    [failed] = [e for e in world.kube.events if e["reason"] == "RunFailed"]
    assert "after 3 attempt(s)" in failed["message"]
    stored = await world.ctx.get_task(world.parts.mirror._template, "ns/flaky")
    assert stored is not None and stored.scheduled_at == first + datetime.timedelta(hours=1)


async def test_default_backoff_limit_with_history_pruning_never_readopts(world: World) -> None:
    await world.apply("bad", {"interval": "1h", "concurrencyPolicy": "Forbid", "podTemplate": FAILING})
    await world.clock.set(T0 + datetime.timedelta(hours=1))
    created = world.metrics.pods_created
    for n in range(7):
        await until(lambda n=n: created._value.get() == n + 1, f"attempt {n}")
        [running] = [p for p in world.pods_of("bad") if p.get("status", {}).get("phase") == "Pending"]
        assert attempt(running) == n
        world.finish_pod(running["metadata"]["name"], succeeded=False)
        if n < 6:
            await until(lambda: world.clock.next_deadline is not None, "the backoff wait")
            await world.clock.advance(seconds=min(10 * 2**n, 360))
    await until(lambda: world.kube.status("bad").get("lastFailureTime"), "the run recorded as failed")
    assert created._value.get() == 7  # backoffLimit 6 + 1
    assert world.metrics.pods_adopted._value.get() == 0
    # failedRunsHistoryLimit 1: only the last attempt's Pod is kept once the run is over.
    await until(lambda: [attempt(p) for p in world.pods_of("bad")] == [6], "pruning after the run")


async def test_interval_countdown_survives_image_bumps_and_a_wiped_backend() -> None:
    kube, clock = FakeKube(), FakeClock(T0)
    async with running_world(kube, clock, poll_interval=30) as w:
        await w.apply("daily", {"interval": "1h", "podTemplate": POD})
        await clock.set(T0 + datetime.timedelta(hours=1))
        [pod] = await until(lambda: w.pods_of("daily"), "the first run")
        w.finish_pod(pod["metadata"]["name"])
        await until(lambda: kube.status("daily").get("lastScheduleTime"), "lastScheduleTime in status")
        await clock.advance(datetime.timedelta(minutes=20))
        bumped = copy.deepcopy(POD)
        bumped["spec"]["containers"][0]["image"] = "busybox:2"
        await w.apply("daily", {"interval": "1h", "podTemplate": bumped})
        stored = await w.ctx.get_task(w.parts.mirror._template, "ns/daily")
        assert stored is not None and stored.scheduled_at == T0 + datetime.timedelta(hours=2)
    # A rollout on embedded SQLite in an emptyDir: a new replica with an empty backend.
    await clock.advance(datetime.timedelta(minutes=10))
    async with running_world(kube, clock, poll_interval=30) as w:
        await restart(w, "daily")
        stored = await w.ctx.get_task(w.parts.mirror._template, "ns/daily")
        assert stored is not None and stored.scheduled_at == T0 + datetime.timedelta(hours=2)


async def test_shutdown_releases_waiting_pod_runs_for_another_replica(tmp_path: Path) -> None:
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'handover.db'}"
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        await w.apply("long", {"interval": "1h", "leaseDuration": "10m", "podTemplate": POD})
        await clock.set(T0 + datetime.timedelta(hours=1))
        [pod] = await until(lambda: w.pods_of("long"), "the run Pod")
    # The replica stopped while its Pod runs: the lease is released, not left to expire in 10 minutes.
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        stored = await w.ctx.get_task(w.parts.mirror._template, "ns/long")
        assert stored is not None and stored.locked_until is None
        await restart(w, "long")
        await until(lambda: w.metrics.pods_adopted._value.get() == 1, "adoption by the other replica")
        assert w.metrics.pods_created._value.get() == 0
        w.finish_pod(pod["metadata"]["name"])
        await until(lambda: kube.status("long").get("lastSuccessfulTime"), "its success recorded")


async def test_a_forbid_run_that_outlasts_later_slots_reports_them_missed(world: World) -> None:
    """Forbid: the 00:01 Pod runs until 00:04:30, so 00:02 and 00:03 never run and 00:04 runs late
    (CronJob's rule). The two skipped times are counted and reported, as after any downtime."""
    # A lease longer than the overrun: renewals here follow real time, not the fake clock.
    spec = {"schedule": "* * * * *", "concurrencyPolicy": "Forbid", "leaseDuration": "10m", "podTemplate": POD}
    await world.apply("slow", spec)
    await world.clock.set(T0 + MINUTE)
    [pod] = await until(lambda: world.pods_of("slow"), "the 00:01 Pod")
    await world.clock.set(T0 + datetime.timedelta(minutes=4, seconds=30))
    assert world.metrics.missed_schedules._value.get() == 0
    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.metrics.missed_schedules._value.get(), "the missed times counted")
    await world.clock.advance(seconds=1)
    await until(lambda: len(world.pods_of("slow")) == 2, "the catch-up Pod for 00:04")
    assert sorted(stamp(p) for p in world.pods_of("slow")) == ["2030-01-01T00:01:00Z", "2030-01-01T00:04:00Z"]
    assert world.metrics.missed_schedules._value.get() == 2
    [missed] = [e for e in world.kube.events if e["reason"] == "MissedSchedules"]
    assert missed["message"].startswith("2 scheduled run(s) between 2030-01-01T00:01:00Z and 2030-01-01T00:04:00Z")


async def test_an_adopted_forbid_run_that_keeps_running_reports_every_time_it_outlasts(tmp_path: Path) -> None:
    """A replica stops while its Forbid Pod runs; another takes the run over at 00:03:30 (00:02 is
    reported missed, 00:03 is to run next) and follows the Pod, which runs on until 00:05:30: 00:03
    and 00:04 are missed too, and 00:05 runs. Three missed times, all reported."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'adopted.db'}"
    spec = {"schedule": "* * * * *", "concurrencyPolicy": "Forbid", "leaseDuration": "10m", "podTemplate": POD}
    async with running_world(kube, clock, backend, poll_interval=30) as first:
        await first.apply("slow", spec)
        await clock.set(T0 + MINUTE)
        [pod] = await until(lambda: first.pods_of("slow"), "the 00:01 Pod")
    await clock.set(T0 + datetime.timedelta(minutes=3, seconds=30))
    async with running_world(kube, clock, backend, poll_interval=30) as second:
        await restart(second, "slow")
        await until(lambda: second.metrics.missed_schedules._value.get() == 1, "00:02 reported at the takeover")
        await clock.set(T0 + datetime.timedelta(minutes=5, seconds=30))
        second.finish_pod(pod["metadata"]["name"])
        await until(lambda: second.metrics.missed_schedules._value.get() == 3, "00:03 and 00:04 reported")
        await clock.advance(seconds=1)
        await until(lambda: len(second.pods_of("slow")) == 2, "the 00:05 Pod")
        assert sorted(stamp(p) for p in second.pods_of("slow")) == ["2030-01-01T00:01:00Z", "2030-01-01T00:05:00Z"]


async def test_a_replica_acting_on_a_stale_copy_does_not_bring_back_a_suspended_task(tmp_path: Path) -> None:
    """Two replicas on one backend. One applies a suspend (the entry goes); the other, just started,
    still processes its first listing, taken before the suspend: it must not register the task again
    (anchored on a stale lastScheduleTime, that re-ran the latest slot in the chaos run)."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'stale.db'}"
    spec = {"interval": "1m", "podTemplate": POD}
    async with running_world(kube, clock, backend, poll_interval=30) as first:
        before = copy.deepcopy(await first.apply("paused", spec))
        await first.apply("paused", {**spec, "suspend": True})
        template = first.parts.mirror._template
        assert await first.ctx.get_task(template, "ns/paused") is None
        async with running_world(kube, clock, backend, poll_interval=30) as second:
            await second.parts.mirror.on_event(None, before)
            assert await second.ctx.get_task(template, "ns/paused") is None
            await clock.advance(datetime.timedelta(minutes=5))
            assert first.pods_of("paused") == []
            # The copy it read back is the suspended one: the status it reports says so.
            ready = second.parts.mirror._status.state("ns", "paused").ready
            assert ready is not None and ready.reason == "Suspended"


async def test_failing_handler_is_retried_with_backoff(world: World) -> None:
    calls: list[datetime.datetime] = []

    async def flaky(context: Any) -> None:
        calls.append(world.clock.now())
        if len(calls) < 3:
            raise RuntimeError("not yet")

    world.handlers.register("flaky", flaky, namespaces="*")
    await world.apply("h", {"interval": "1h", "handler": {"name": "flaky"}})
    first = T0 + datetime.timedelta(hours=1)
    await world.clock.set(first)
    await until(lambda: len(calls) == 1, "the first attempt")
    await until(lambda: world.clock.next_deadline is not None, "the backoff wait")
    await world.clock.advance(seconds=10)
    await until(lambda: len(calls) == 2, "the second attempt, 10 s later")
    await until(lambda: world.clock.next_deadline is not None, "the backoff wait")
    await world.clock.advance(seconds=20)
    await until(lambda: len(calls) == 3, "the third attempt, 20 s later")
    assert calls == [first, first + datetime.timedelta(seconds=10), first + datetime.timedelta(seconds=30)]
    await until(lambda: world.kube.status("h").get("lastSuccessfulTime"), "success")
    assert "lastFailureTime" not in world.kube.status("h")


def active_attempts(kube: FakeKube, name: str) -> list[Any]:
    """The ``attempt`` of each of the task's ``status.active`` items (None: the first attempt)."""
    return [run.get("attempt") for run in kube.status(name).get("active", [])]


async def retry_until_given_up(kube: FakeKube, clock: FakeClock, calls: list[Any], name: str) -> None:
    """backoffLimit 2, attempt 1 done: waits out the 10 s and 20 s backoffs (calls 2 and 3), then
    for the run to be given up."""
    for backoff in (10, 20):
        await until(lambda: clock.next_deadline is not None, "the backoff wait")
        await clock.advance(seconds=backoff)
        await until(lambda n=backoff: len(calls) == 2 + (n == 20), "the next attempt")
    await until(lambda: kube.status(name).get("lastFailureTime"), "the run given up")


async def test_a_handler_run_taken_over_during_its_backoff_keeps_its_attempt_count(tmp_path: Path) -> None:
    """backoffLimit holds across replicas: a rollout during a handler's backoff does not start the
    count again (the attempt is in the run's status.active item, where the next replica reads it)."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'retries.db'}"
    calls: list[datetime.datetime] = []

    async def failing(context: Any) -> None:
        calls.append(clock.now())
        raise RuntimeError("still down")

    first = T0 + datetime.timedelta(hours=1)
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await w.apply("h", {"interval": "1h", "backoffLimit": 2, "handler": {"name": "failing"}})
        await clock.set(first)
        await until(lambda: len(calls) == 1, "the first attempt")
        await until(lambda: active_attempts(kube, "h") == [2], "attempt 2")
    # Stopped during the 10 s backoff: the run is released, and the next replica takes it over.
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await restart(w, "h")
        await retry_until_given_up(kube, clock, calls, "h")
        assert len(calls) == 3  # backoffLimit 2: three attempts in all, two of them on the second replica
        assert kube.status("h")["active"] == []


async def test_a_handler_run_taken_over_by_a_replica_whose_watch_lags_reads_its_attempt_fresh(
    tmp_path: Path,
) -> None:
    """The replica taking a handler run over has not yet seen the status write with the attempt (a
    replica just started, whose watch has not delivered the task yet): the late start makes it read
    the status from the apiserver, and the count goes on."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'lagging.db'}"
    calls: list[datetime.datetime] = []

    async def failing(context: Any) -> None:
        calls.append(clock.now())
        raise RuntimeError("still down")

    first = T0 + datetime.timedelta(hours=1)
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await w.apply("h", {"interval": "1h", "backoffLimit": 2, "handler": {"name": "failing"}})
        await clock.set(first)
        await until(lambda: active_attempts(kube, "h") == [2], "attempt 2")
    await clock.advance(seconds=2)  # the rollout: the run is taken over 2 s into its backoff
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        # No watch event for the task: its poll leases the run first.
        await retry_until_given_up(kube, clock, calls, "h")
        assert len(calls) == 3  # backoffLimit 2: the second replica ran attempts 2 and 3 only


async def test_a_replica_whose_watch_lags_does_not_erase_another_replicas_status_writes(tmp_path: Path) -> None:
    """Every replica writes status under one field manager, so a write built on a stale view would
    remove what the others wrote since (here: the attempt of a run waiting out its backoff). Writes
    carry the resourceVersion they were built on: the stale one is refused, and redone on a fresh read."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'stale-write.db'}"
    calls: list[datetime.datetime] = []

    async def failing(context: Any) -> None:
        calls.append(clock.now())
        raise RuntimeError("still down")

    first = T0 + datetime.timedelta(hours=1)
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await w.apply("h", {"interval": "1h", "backoffLimit": 2, "handler": {"name": "failing"}})
        await until(lambda: kube.status("h").get("nextRunTime"), "the first status write")
        stale = copy.deepcopy(kube.tasks[("ns", "h")])  # as B's watch shows it: before the run
        await clock.set(first)
        await until(lambda: active_attempts(kube, "h") == [2], "attempt 2")
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        written = len(kube.status_writes)
        await w.parts.mirror.on_event(None, stale)  # B reconciles the stale copy: a status write follows
        await until(lambda: len(kube.status_writes) > written, "B's status write")
        assert active_attempts(kube, "h") == [2]
        assert kube.conflicts == 1  # its first try, built on the stale copy
        assert w.metrics.status_conflicts._value.get() == 1
        await retry_until_given_up(kube, clock, calls, "h")
        assert len(calls) == 3  # backoffLimit 2 held across the two replicas


async def test_a_replica_writing_status_before_its_watch_listed_the_task_keeps_what_is_there(tmp_path: Path) -> None:
    """A replica that has just started runs a task before its watch delivered it: its first status
    write reads the task first, so A's earlier failure stays recorded next to B's success."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'unlisted.db'}"
    outcomes = iter([RuntimeError("down"), None])

    async def flaky(context: Any) -> None:
        error = next(outcomes)
        if error is not None:
            raise error

    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("flaky", flaky, namespaces="*")
        await w.apply("h", {"interval": "1h", "backoffLimit": 0, "handler": {"name": "flaky"}})
        await clock.set(T0 + datetime.timedelta(hours=1))
        failed = await until(lambda: kube.status("h").get("lastFailureTime"), "the first run's failure")
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("flaky", flaky, namespaces="*")
        await clock.set(T0 + datetime.timedelta(hours=2))  # no watch event for the task yet
        await until(lambda: kube.status("h").get("lastSuccessfulTime"), "the second run's success")
        assert kube.status("h").get("lastFailureTime") == failed


async def test_a_one_off_handler_run_released_during_its_backoff_is_taken_over_not_dropped(tmp_path: Path) -> None:
    """An executeAt run released at a rollout while it waits out a backoff: the next replica sees
    status.lastScheduleTime at executeAt before it polls. The one-off has started, not ended (its
    run is still in status.active), so its entry must stay for the replica that takes it over."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'one-off.db'}"
    calls: list[datetime.datetime] = []

    async def failing(context: Any) -> None:
        calls.append(clock.now())
        raise RuntimeError("still down")

    at = T0 + datetime.timedelta(hours=1)
    spec = {"executeAt": format_time(at), "backoffLimit": 1, "handler": {"name": "failing"}}
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await w.apply("once", spec)
        await clock.set(at)
        await until(lambda: active_attempts(kube, "once") == [2], "attempt 2")
    async with running_world(kube, clock, backend, poll_interval=30) as w:
        w.handlers.register("failing", failing, namespaces="*")
        await restart(w, "once")  # the watch delivers the task before the first poll
        await until(lambda: clock.next_deadline is not None, "the backoff wait on the second replica")
        await clock.advance(seconds=10)
        await until(lambda: kube.status("once").get("lastFailureTime"), "the run given up")
        assert len(calls) == 2  # backoffLimit 1: the second attempt ran on the second replica
        assert kube.status("once")["active"] == []
        await until_async(
            lambda: w.ctx.get_task(w.parts.mirror._template, "ns/once"), lambda task: task is None, "its commit"
        )


async def test_a_one_off_pod_run_released_at_shutdown_is_adopted_not_dropped(tmp_path: Path) -> None:
    """Two replicas; the one waiting on an executeAt run's Pod is stopped and releases the run. The
    other sees the task's started status (a watch event) before its next poll: it must keep the
    entry, then adopt the Pod and record how it ended."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'one-off-pod.db'}"
    at = T0 + datetime.timedelta(hours=1)
    spec = {"executeAt": format_time(at), "leaseDuration": "10m", "podTemplate": POD}
    replicas = [running_world(kube, clock, backend, poll_interval=30) for _ in range(2)]
    worlds = [await replica.__aenter__() for replica in replicas]
    try:
        await worlds[0].apply("once", spec)
        await clock.set(at)
        [pod] = await until(lambda: worlds[0].pods_of("once"), "the run Pod")
        await until(lambda: kube.status("once").get("active"), "the run listed as active")
        # Whichever replica's poll leased it runs it; the other is B.
        ran = next(i for i, w in enumerate(worlds) if w.metrics.pods_created._value.get() == 1)
        await replicas.pop(ran).__aexit__(None, None, None)
        b = worlds[1 - ran]
        await restart(b, "once")  # B's watch: the task with the status A wrote
        await clock.advance(seconds=30)  # B's next poll
        await until(lambda: b.metrics.pods_adopted._value.get() == 1, "adoption by the other replica")
        b.finish_pod(pod["metadata"]["name"])
        await until(lambda: kube.status("once").get("lastSuccessfulTime"), "its success recorded")
        assert kube.status("once")["active"] == []
    finally:
        for replica in replicas:
            await replica.__aexit__(None, None, None)


async def test_a_lagging_replica_registering_a_finished_handler_run_now_again_does_not_rerun_it(
    tmp_path: Path,
) -> None:
    """Replica B's watch still shows the run-now annotation without status.lastRunNow when replica A's
    run has already ended and committed (a one-off is deleted then): B registers the instance again.
    The handler must not run a second time for the same value."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'run-now.db'}"
    calls: list[str] = []

    async def note(context: Any) -> None:
        calls.append(context.task.name)

    spec = {"interval": "1h", "handler": {"name": "note"}}
    async with running_world(kube, clock, backend) as a:
        a.handlers.register("note", note, namespaces="*")
        await a.apply("h", spec)
        lagging = copy.deepcopy(await a.apply("h", spec, annotations={"pyncette.dev/run-now": "v1"}))
        await until(lambda: kube.status("h").get("lastSuccessfulTime"), "the run-now run's success")
        template = a.parts.mirror._template
        instance = "ns/h@run-now:v1"
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "its commit")
    async with running_world(kube, clock, backend) as b:
        b.handlers.register("note", note, namespaces="*")
        await b.parts.mirror.on_event(None, lagging)  # the stale copy: annotation, no status
        assert b.metrics.registrations.labels(action="run-now")._value.get() == 1
        await until_async(lambda: b.ctx.get_task(template, instance), lambda task: task is None, "the new instance run")
        assert calls == ["ns/h@run-now:v1"]
        # The marker that stopped it removes itself a day later.
        marker = "ns/h@run-now-done:v1"
        assert await b.ctx.get_task(template, marker) is not None
        await clock.advance(seconds=86_401)
        await until_async(lambda: b.ctx.get_task(template, marker), lambda task: task is None, "the marker's removal")
        assert calls.count("ns/h@run-now:v1") == 1  # (and the hourly schedule ran meanwhile)


async def test_a_lagging_replica_registering_a_finished_pod_run_now_again_starts_no_second_pod(
    tmp_path: Path,
) -> None:
    """The same race for a Pod task: the instance B registers is due at B's time, later than the
    first run's, so its Pod would get another name and nothing would stop a second Pod."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'run-now-pod.db'}"
    spec = {"interval": "1h", "podTemplate": POD}
    instance = "ns/p@run-now:v1"
    async with running_world(kube, clock, backend) as a:
        await a.apply("p", spec)
        lagging = copy.deepcopy(await a.apply("p", spec, annotations={"pyncette.dev/run-now": "v1"}))
        [pod] = await until(lambda: a.pods_of("p"), "the run-now Pod")
        await clock.advance(seconds=30)  # the Pod runs for half a minute
        a.finish_pod(pod["metadata"]["name"])
        await until(lambda: kube.status("p").get("lastSuccessfulTime"), "its success")
        template = a.parts.mirror._template
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "its commit")
    async with running_world(kube, clock, backend) as b:
        await restart(b, "p")
        await b.parts.mirror.on_event(None, lagging)  # the stale copy: annotation, no status
        assert b.metrics.registrations.labels(action="run-now")._value.get() == 1
        await until_async(
            lambda: b.ctx.get_task(template, instance),
            lambda task: task is None or len(b.pods_of("p")) > 1,
            "the new instance run (or a second Pod)",
        )
        assert [p["metadata"]["name"] for p in b.pods_of("p")] == [pod["metadata"]["name"]]
        assert b.metrics.pods_created._value.get() == 0


async def test_a_lagging_replica_registering_a_handler_backfill_again_reruns_no_slot(tmp_path: Path) -> None:
    """The backfill counterpart: replica B's registration of the request lands after replica A's
    slots ran (the instance starts from the first slot again). No slot runs twice, and no replica
    counts a slot again."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'backfill.db'}"
    calls: list[str] = []

    async def note(context: Any) -> None:
        calls.append(context.scheduled_at.isoformat())

    spec = {"schedule": "0 * * * *", "handler": {"name": "note"}}
    value = "2029-12-31T22:00:00Z/2029-12-31T23:00:00Z"
    instance = "ns/bf@backfill:" + value

    def completed() -> Any:
        return (b := kube.status("bf").get("backfill")) and b["phase"] == "Completed" and b

    async with running_world(kube, clock, backend) as a:
        a.handlers.register("note", note, namespaces="*")
        await a.apply("bf", spec)
        lagging = copy.deepcopy(await a.apply("bf", spec, annotations={"pyncette.dev/backfill": value}))
        await until(completed, "A's backfill completed")
        template = a.parts.mirror._template
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "every slot started")
        assert sorted(calls) == ["2029-12-31T22:00:00+00:00", "2029-12-31T23:00:00+00:00"]

        # B starts only now, beside A: running from the start, it could lease one of A's slots itself
        # and so know the backfill before its stale copy arrives (it then registers nothing).
        async with running_world(kube, clock, backend) as b:
            b.handlers.register("note", note, namespaces="*")
            await b.parts.mirror.on_event(None, lagging)  # B's stale copy: the annotation, no status.backfill
            assert b.metrics.registrations.labels(action="backfill")._value.get() == 1
            await until_async(lambda: b.ctx.get_task(template, instance), lambda task: task is None, "its slots leased")
            assert len(calls) == 2
            # Neither replica counted anything more: the totals can only stay A's (two started, two succeeded).
            assert b.parts.mirror._status.state("ns", "bf").backfill_counts is None
            own = a.parts.mirror._status.state("ns", "bf").backfill_counts
            assert own is not None and (own["started"], own["succeeded"], own["skipped"]) == (2, 2, 0)


async def test_a_lagging_replica_registering_a_pod_backfill_again_reruns_no_pruned_slot(tmp_path: Path) -> None:
    """The Pod counterpart, with the history limits pruning every finished Pod: the slots' Pods are
    gone when the late registration leases them again, so only the backend marker can tell that
    they ran. No second Pod starts, and nothing is counted again."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'backfill-pods.db'}"
    spec = {"schedule": "0 * * * *", "successfulRunsHistoryLimit": 0, "podTemplate": POD}
    value = "2029-12-31T22:00:00Z/2029-12-31T23:00:00Z"
    instance = "ns/bf@backfill:" + value
    async with running_world(kube, clock, backend) as a:
        await a.apply("bf", spec)
        lagging = copy.deepcopy(await a.apply("bf", spec, annotations={"pyncette.dev/backfill": value}))
        pods = await until(lambda: len(a.pods_of("bf")) == 2 and a.pods_of("bf"), "both slots' Pods")
        for pod in pods:
            a.finish_pod(pod["metadata"]["name"])
        await until(lambda: (b := kube.status("bf").get("backfill")) and b["phase"] == "Completed", "completed")
        await until(lambda: not a.pods_of("bf"), "the finished Pods pruned")
        template = a.parts.mirror._template
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "every slot started")
        assert a.metrics.pods_created._value.get() == 2
    async with running_world(kube, clock, backend) as b:
        list_pods(b)  # none are left
        await b.parts.mirror.on_event(None, lagging)  # B's stale copy: the annotation, no status.backfill
        assert b.metrics.registrations.labels(action="backfill")._value.get() == 1
        await until_async(
            lambda: b.ctx.get_task(template, instance),
            lambda task: task is None or bool(b.pods_of("bf")),
            "its slots leased (or a Pod started again)",
        )
        assert b.pods_of("bf") == [] and b.metrics.pods_created._value.get() == 0
        assert b.parts.mirror._status.state("ns", "bf").backfill_counts is None


async def test_a_lagging_replica_registering_a_pod_backfill_again_counts_no_skipped_slot_twice(
    tmp_path: Path,
) -> None:
    """A slot that an earlier backfill ran is skipped and counted as such once. Replica B's late
    registration of the request leases it again and finds the same Pod: it must not count it as
    skipped a second time (the totals would exceed what was requested)."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'backfill-skipped.db'}"
    spec = {"schedule": "0 * * * *", "podTemplate": POD}
    first, second = "2029-12-31T22:00:00Z/2029-12-31T22:00:00Z", "2029-12-31T22:00:00Z/2029-12-31T23:00:00Z"
    instance = "ns/bf@backfill:" + second

    def completed(value: str) -> Any:
        return (b := kube.status("bf").get("backfill")) and b["value"] == value and b["phase"] == "Completed" and b

    async with running_world(kube, clock, backend) as a:
        await a.apply("bf", spec)
        await a.apply("bf", spec, annotations={"pyncette.dev/backfill": first})
        [pod] = await until(lambda: a.pods_of("bf"), "the first backfill's Pod")
        a.finish_pod(pod["metadata"]["name"])
        await until(lambda: completed(first), "the first backfill completed")
        lagging = copy.deepcopy(await a.apply("bf", spec, annotations={"pyncette.dev/backfill": second}))
        name = pod["metadata"]["name"]
        newer = await until(lambda: [p for p in a.pods_of("bf") if p["metadata"]["name"] != name], "the 23:00 Pod")
        a.finish_pod(newer[0]["metadata"]["name"])
        done = await until(lambda: completed(second), "the second backfill completed")
        assert (done["requested"], done["skipped"], done["succeeded"]) == (2, 1, 1)
        template = a.parts.mirror._template
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "every slot started")
    async with running_world(kube, clock, backend) as b:
        list_pods(b)
        await b.parts.mirror.on_event(None, lagging)  # B's stale copy: the second request, not its record
        assert b.metrics.registrations.labels(action="backfill")._value.get() == 1
        await until_async(lambda: b.ctx.get_task(template, instance), lambda task: task is None, "its slots leased")
        assert b.parts.mirror._status.state("ns", "bf").backfill_counts is None
        assert len(b.pods_of("bf")) == 2 and b.metrics.pods_created._value.get() == 0


async def test_a_backfill_running_longer_than_a_day_keeps_its_marker_to_the_end(tmp_path: Path) -> None:
    """The backfill-done marker is kept a day. Its memory counts from the latest slot that ended, not
    from the first: a late registration landing two hours after a 23-hour slot must still find it."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'long-backfill.db'}"
    calls: list[str] = []
    release = asyncio.Event()

    async def slow(context: Any) -> None:
        when = context.scheduled_at.isoformat()
        calls.append(when)
        if when == "2029-12-31T23:00:00+00:00":
            await release.wait()  # the backfill's second slot runs for 23 hours

    def backfilled() -> list[str]:  # (the hourly schedule runs the handler too)
        return [when for when in calls if when < "2030"]

    spec = {"schedule": "0 * * * *", "leaseDuration": "48h", "handler": {"name": "slow"}}
    value = "2029-12-31T22:00:00Z/2029-12-31T23:00:00Z"
    instance = "ns/bf@backfill:" + value
    async with running_world(kube, clock, backend) as a:
        a.handlers.register("slow", slow, namespaces="*")
        await a.apply("bf", spec)
        lagging = copy.deepcopy(await a.apply("bf", spec, annotations={"pyncette.dev/backfill": value}))
        await until(lambda: len(backfilled()) == 2, "the second slot running")
        await clock.advance(seconds=23 * 3600)
        release.set()
        await until(lambda: (b := kube.status("bf").get("backfill")) and b["phase"] == "Completed", "completed")
        template = a.parts.mirror._template
        await until_async(lambda: a.ctx.get_task(template, instance), lambda task: task is None, "every slot started")
        await clock.advance(seconds=2 * 3600)  # a day after the first slot ended, an hour before the second's
        marker = "ns/bf@backfill-done:" + value
        assert await a.ctx.get_task(template, marker) is not None
    async with running_world(kube, clock, backend) as b:
        b.handlers.register("slow", slow, namespaces="*")
        await b.parts.mirror.on_event(None, lagging)  # B's stale copy: the annotation, no status.backfill
        await until_async(lambda: b.ctx.get_task(template, instance), lambda task: task is None, "its slots leased")
        assert backfilled() == ["2029-12-31T22:00:00+00:00", "2029-12-31T23:00:00+00:00"]


@pytest.mark.parametrize("succeeded", [True, False], ids=["succeeded", "failed"])
async def test_a_handed_over_pod_that_ends_after_its_replica_stopped_still_counts(
    tmp_path: Path, succeeded: bool
) -> None:
    """Allow: a run whose Pod outlives the next scheduled time hands the Pod to a watcher and lets the
    schedule move on. The replica stops (a rollout) before the Pod ends, so nobody follows it. When
    the other replica finds the Pod finished, the task's lastSuccessfulTime or lastFailureTime says
    so (maxSuccessAge and the Stale condition rely on the first). A handed-over Pod is never retried,
    which status.active says (handedOver), so its failure is its run's outcome."""
    kube, clock = FakeKube(), FakeClock(T0)
    backend = f"sqlite:///{tmp_path / 'handover.db'}"
    # A run waiting on its Pod checks the next scheduled time every leaseDuration / 3 of real time
    # (10 s here); the lease outlasts the clock's jump to the next run, so it never expires.
    spec = {"interval": "30s", "leaseDuration": "31s", "podTemplate": POD}
    async with running_world(kube, clock, backend) as a:
        await a.apply("long", spec)
        await clock.set(T0 + datetime.timedelta(seconds=30))
        [first] = await until(lambda: a.pods_of("long"), "the first run's Pod")
        await clock.advance(seconds=30)  # the next run is due: the first Pod is handed to a watcher
        await until(lambda: len(a.pods_of("long")) == 2, "the second run's Pod", timeout=30)
        await until(lambda: len(kube.status("long").get("active") or []) == 2, "both runs listed as active")
    handed = [run for run in kube.status("long")["active"] if run["name"] == first["metadata"]["name"]]
    assert handed and handed[0]["handedOver"] is True
    field = "lastSuccessfulTime" if succeeded else "lastFailureTime"
    assert field not in kube.status("long")
    async with running_world(kube, clock, backend) as b:
        await clock.advance(seconds=10)
        b.finish_pod(first["metadata"]["name"], succeeded=succeeded)  # it ends while nobody follows it
        await restart(b, "long")
        reconcile_active(tracker=b.tracker, status=b.parts.status, leased=None)  # B's Pod resync or sweep
        await until(lambda: kube.status("long").get(field), f"its end recorded in {field}")
        assert kube.status("long")[field] == "2030-01-01T00:01:10Z"
        assert [run["name"] for run in kube.status("long")["active"]] != []  # the second run still runs
        assert first["metadata"]["name"] not in [run["name"] for run in kube.status("long")["active"]]


async def test_handler_past_active_deadline_is_cancelled(world: World) -> None:
    cancelled: list[bool] = []

    async def stuck(context: Any) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    world.handlers.register("stuck", stuck, namespaces="*")
    spec = {"interval": "1h", "activeDeadlineSeconds": 1, "backoffLimit": 0, "handler": {"name": "stuck"}}
    await world.apply("s", spec)
    await world.clock.set(T0 + datetime.timedelta(hours=1))
    await until(lambda: world.kube.status("s").get("lastFailureTime"), "the run failed", timeout=30)
    assert cancelled == [True]
    [failed] = [e for e in world.kube.events if e["reason"] == "RunFailed"]
    assert "activeDeadlineSeconds" in failed["message"]
