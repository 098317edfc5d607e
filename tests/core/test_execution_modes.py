"""Execution modes x failure modes, leases while running, heartbeats and with_heartbeat."""

from __future__ import annotations

import asyncio
import datetime
import gc
import weakref
from collections.abc import Callable

import pytest
from core_helpers import START
from core_helpers import eventually
from core_helpers import running

from pyncette import Context
from pyncette import ExecutionMode
from pyncette import FailureMode
from pyncette import FakeClock
from pyncette import LeaseLostException
from pyncette import Pyncette
from pyncette.utils import with_heartbeat


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


async def test_failure_mode_none_retries_once_the_lease_expires(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    attempts: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2), lease_duration=datetime.timedelta(seconds=5))
    async def failing(context: Context) -> None:
        attempts.append(clock.now())
        raise RuntimeError("Oops")

    async with running(app):
        await clock.advance(seconds=20)

    assert attempts == [at(2), at(7), at(12), at(17)]


async def test_failure_mode_unlock_retries_on_the_next_poll(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    attempts: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2), failure_mode=FailureMode.UNLOCK)
    async def failing(context: Context) -> None:
        attempts.append(clock.now())
        raise RuntimeError("Oops")

    async with running(app):
        await clock.advance(seconds=10)

    # Due at 2 s, then retried at every 1 s poll.
    assert attempts == [at(s) for s in range(2, 11)]


async def test_failure_mode_commit_moves_on(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    attempts: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2), failure_mode=FailureMode.COMMIT)
    async def failing(context: Context) -> None:
        attempts.append(context.scheduled_at)
        raise RuntimeError("Oops")

    async with running(app):
        await clock.advance(seconds=10)

    assert attempts == [at(2), at(4), at(6), at(8), at(10)]


async def test_at_most_once_failure_is_not_retried(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    attempts: list[datetime.datetime] = []

    @app.dynamic_task(execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def once(context: Context) -> None:
        attempts.append(clock.now())
        raise RuntimeError("Oops")

    async with running(app) as ctx:
        await ctx.schedule_task(once, "x", execute_at=at(3))
        await clock.advance(seconds=30)
        assert await ctx.get_task(once, "x") is None

    assert attempts == [at(3)]


async def test_running_task_is_not_started_twice(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2), lease_duration=datetime.timedelta(seconds=60))
    async def slow(context: Context) -> None:
        started.append(clock.now())
        if len(started) == 1:
            await clock.sleep(5)

    async with running(app):
        await clock.advance(seconds=10)

    # Due at 2 s, runs until 7 s; then the runs due at 4 s and 6 s catch up, one after the other.
    assert started == [at(2), at(7), at(7), at(8), at(10)]


async def test_expired_lease_is_taken_over(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []
    release = asyncio.Event()

    @app.task(interval=datetime.timedelta(seconds=2), lease_duration=datetime.timedelta(seconds=3))
    async def stuck(context: Context) -> None:
        started.append(clock.now())
        await release.wait()

    async with running(app):
        await clock.advance(seconds=6)
        release.set()

    # The run started at 2 s holds its lease until 5 s; then the same scheduled run starts again.
    assert started == [at(2), at(5)]


async def test_at_most_once_is_not_locked_while_running(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []
    release = asyncio.Event()

    @app.task(interval=datetime.timedelta(seconds=2), execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def overlapping(context: Context) -> None:
        started.append(clock.now())
        await release.wait()

    async with running(app):
        await clock.advance(seconds=6)
        release.set()

    assert started == [at(2), at(4), at(6)]


async def test_heartbeat_keeps_the_lease(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []
    finished: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=10), lease_duration=datetime.timedelta(seconds=2))
    async def long(context: Context) -> None:
        started.append(clock.now())
        for _ in range(5):
            await clock.sleep(1)
            await context.heartbeat()
        finished.append(clock.now())

    async with running(app):
        await clock.advance(seconds=16)

    assert started == [at(10)]
    assert finished == [at(15)]


async def test_heartbeat_raises_when_the_lease_was_lost(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    outcomes: list[str] = []
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=10), lease_duration=datetime.timedelta(seconds=2))
    async def late(context: Context) -> None:
        started.append(clock.now())
        if len(started) > 1:
            return
        await clock.sleep(3)  # the lease expires at 12 s and the run is taken over
        try:
            await context.heartbeat()
        except LeaseLostException:
            outcomes.append("lost")
            raise

    async with running(app) as ctx:
        await clock.advance(seconds=14)
        await ctx._flusher.flush()
        state = await ctx.get_task(late)
        assert state is not None and state.scheduled_at == at(20)

    assert outcomes == ["lost"]
    assert started == [at(10), at(12)]


async def test_release_hands_the_run_over_at_once_and_is_not_a_lost_lease(
    make_app: Callable[..., Pyncette], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    runs: list[tuple[datetime.datetime, datetime.datetime]] = []

    @app.task(interval=datetime.timedelta(seconds=10), lease_duration=datetime.timedelta(seconds=60))
    async def handed_over(context: Context) -> None:
        runs.append((clock.now(), context.scheduled_at))
        if len(runs) == 1:
            await context.release()
            await context.release()  # released already: nothing to do

    async with running(app) as ctx:
        await clock.advance(seconds=10)
        await eventually(lambda: len(runs) == 2)
        await ctx._flusher.flush()
        state = await ctx.get_task(handed_over)
        assert state is not None and state.scheduled_at == at(20)

    # Run again at once (not when the 60 s lease would have expired), and committed by that run only.
    assert runs == [(at(10), at(10)), (at(10), at(10))]
    assert "lost" not in caplog.text


async def test_heartbeat_is_a_noop_for_at_most_once(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    done: list[bool] = []

    @app.task(interval=datetime.timedelta(seconds=1), execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def best_effort(context: Context) -> None:
        await context.heartbeat()
        done.append(True)

    async with running(app):
        await clock.advance(seconds=1)
        await eventually(lambda: done == [True])


async def test_with_heartbeat_extends_on_the_app_clock(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []
    finished: list[datetime.datetime] = []
    beats: list[datetime.datetime] = []

    @app.middleware
    async def count_beats(context: Context, next: Callable[[], object]) -> None:
        original = context.heartbeat

        async def counted() -> None:
            beats.append(clock.now())
            await original()

        context.heartbeat = counted
        await next()  # type: ignore[misc]

    @app.task(interval=datetime.timedelta(seconds=10), lease_duration=datetime.timedelta(seconds=2))
    @with_heartbeat()
    async def automatic(context: Context) -> None:
        started.append(clock.now())
        await clock.sleep(5)
        finished.append(clock.now())

    async with running(app):
        await clock.advance(seconds=16)

    assert started == [at(10)]
    assert finished == [at(15)]
    assert beats == [at(s) for s in (11, 12, 13, 14)]


async def test_with_heartbeat_can_cancel_on_lost_lease(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    cancelled: list[bool] = []
    release = asyncio.Event()

    @app.dynamic_task(lease_duration=datetime.timedelta(seconds=2))
    @with_heartbeat(cancel_on_lease_lost=True)
    async def doomed(context: Context) -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async with running(app) as ctx:
        await ctx.schedule_task(doomed, "d", execute_at=at(1))
        await clock.advance(seconds=1)
        await eventually(lambda: ctx._running == 1)
        await ctx.unschedule_task(doomed, "d")  # the next heartbeat finds no lease
        await clock.advance(seconds=1)
        await eventually(lambda: cancelled == [True])


def test_with_heartbeat_validates_its_ratio() -> None:
    with pytest.raises(ValueError, match="lease_remaining_ratio"):
        with_heartbeat(lease_remaining_ratio=1.5)


async def test_a_finished_execution_is_freed_without_the_cycle_collector(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    # A draining worker runs thousands of executions a second. What one leaves behind must be freed
    # when it ends: garbage in reference cycles waits for the cyclic collector, whose passes cost a
    # draining worker about a tenth of its CPU (the context's heartbeat once closed over the context).
    app = make_app()
    contexts: list[weakref.ref[Context]] = []

    @app.task(interval=datetime.timedelta(seconds=1))
    async def tick(context: Context) -> None:
        contexts.append(weakref.ref(context))

    gc.collect()
    gc.disable()
    try:
        async with running(app):
            await clock.advance(seconds=3)
            await eventually(lambda: len(contexts) >= 3)
            await eventually(lambda: all(ref() is None for ref in contexts[:3]))
    finally:
        gc.enable()
