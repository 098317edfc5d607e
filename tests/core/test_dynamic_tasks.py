"""Dynamic and partitioned tasks: schedule/unschedule/get/list, one-off execute_at, wake-early."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable

import pytest
from core_helpers import START
from core_helpers import eventually
from core_helpers import running

from pyncette import Context
from pyncette import ExecutionMode
from pyncette import FailureMode
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette import TaskLockedException


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


async def test_scheduled_instances_run_with_their_args(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    runs: list[tuple[str, str, datetime.datetime]] = []

    @app.dynamic_task()
    async def greet(context: Context) -> None:
        runs.append((context.task.name, context.args["who"], clock.now()))

    async with running(app) as ctx:
        await ctx.schedule_task(greet, "a", interval=datetime.timedelta(seconds=2), who="Alice")
        await ctx.schedule_task(greet, "b", interval=datetime.timedelta(seconds=3), who="Bob")
        await clock.advance(seconds=6)

    assert sorted(runs) == sorted(
        [("a", "Alice", at(2)), ("a", "Alice", at(4)), ("a", "Alice", at(6)), ("b", "Bob", at(3)), ("b", "Bob", at(6))]
    )


async def test_unschedule_stops_an_instance(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    runs: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append(context.task.name)

    async with running(app) as ctx:
        instance = await ctx.schedule_task(job, "x", interval=datetime.timedelta(seconds=1))
        await ctx.schedule_task(job, "y", interval=datetime.timedelta(seconds=1))
        await clock.advance(seconds=1)
        await ctx.unschedule_task(instance)
        await ctx.unschedule_task(job, "y")
        await clock.advance(seconds=5)
        assert await ctx.get_task(job, "x") is None

    assert sorted(runs) == ["x", "y"]


async def test_unschedule_needs_an_instance_name(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create() as ctx:
        with pytest.raises(ValueError, match="instance name must be provided"):
            await ctx.unschedule_task(job)


async def test_execute_at_runs_once_then_is_gone(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    runs: list[datetime.datetime] = []

    @app.dynamic_task()
    async def once(context: Context) -> None:
        runs.append(clock.now())

    async with running(app) as ctx:
        await ctx.schedule_task(once, "one", execute_at=at(5))
        state = await ctx.get_task(once, "one")
        assert state is not None and state.scheduled_at == at(5)
        await clock.advance(seconds=20)
        await eventually(lambda: bool(runs))
        await ctx._flusher.flush()
        assert await ctx.get_task(once, "one") is None

    assert runs == [at(5)]


@pytest.mark.parametrize("mode", [ExecutionMode.AT_LEAST_ONCE, ExecutionMode.AT_MOST_ONCE])
async def test_execute_at_in_the_past_runs_at_once(
    make_app: Callable[..., Pyncette], clock: FakeClock, mode: ExecutionMode
) -> None:
    app = make_app()
    runs: list[datetime.datetime] = []

    @app.dynamic_task(execution_mode=mode)
    async def once(context: Context) -> None:
        runs.append(context.scheduled_at)

    async with running(app) as ctx:
        await ctx.schedule_task(once, "late", execute_at=START - datetime.timedelta(hours=1))
        await eventually(lambda: bool(runs))
        await clock.advance(seconds=10)

    assert runs == [START - datetime.timedelta(hours=1)]


async def test_execute_at_failure_is_retried_when_unlocking(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    attempts: list[datetime.datetime] = []

    @app.dynamic_task(failure_mode=FailureMode.UNLOCK)
    async def flaky(context: Context) -> None:
        attempts.append(clock.now())
        if len(attempts) < 3:
            raise RuntimeError("not yet")

    async with running(app) as ctx:
        await ctx.schedule_task(flaky, "f", execute_at=at(1))
        await clock.advance(seconds=10)
        await ctx._flusher.flush()
        assert await ctx.get_task(flaky, "f") is None

    assert attempts == [at(1), at(2), at(3)]


async def test_wakes_early_for_an_instance_scheduled_sooner(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    # The loop would otherwise sleep a whole hour between polls.
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[datetime.datetime] = []

    @app.dynamic_task()
    async def soon(context: Context) -> None:
        runs.append(clock.now())

    async with running(app) as ctx:
        await clock.advance(seconds=10)
        await ctx.schedule_task(soon, "s", execute_at=at(25))
        await clock.advance(seconds=20)
        assert runs == [at(25)]


async def test_wakes_early_for_the_next_interval_after_a_commit(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[datetime.datetime] = []

    @app.dynamic_task()
    async def repeat(context: Context) -> None:
        runs.append(clock.now())

    async with running(app) as ctx:
        await ctx.schedule_task(repeat, "r", interval=datetime.timedelta(seconds=7))
        await clock.advance(seconds=21)

    assert runs == [at(7), at(14), at(21)]


async def test_get_task_reports_state_and_lock(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started = []
    release = asyncio.Event()

    @app.dynamic_task(lease_duration=datetime.timedelta(seconds=30))
    async def slow(context: Context) -> None:
        started.append(1)
        await release.wait()

    @app.task(interval=datetime.timedelta(minutes=5))
    async def static(context: Context) -> None:
        pass

    async with running(app) as ctx:
        await ctx.schedule_task(slow, "s", execute_at=at(1), payload=1)
        await clock.advance(seconds=2)
        await eventually(lambda: bool(started))
        state = await ctx.get_task(slow, "s")
        assert state is not None
        assert state.scheduled_at == at(1)
        assert state.locked_until == at(31)
        assert state.task.extra_args == {"payload": 1}
        static_state = await ctx.get_task(static)
        assert static_state is not None and static_state.scheduled_at == at(300)
        release.set()


async def test_list_tasks_paginates_over_every_instance(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create() as ctx:
        names = {f"job-{i:02}" for i in range(25)}
        for name in names:
            await ctx.schedule_task(job, name, interval=datetime.timedelta(hours=1))
        seen: list[str] = []
        token = None
        pages = 0
        while True:
            page = await ctx.list_tasks(job, limit=10, continuation_token=token)
            assert len(page.tasks) <= 10
            seen.extend(state.task.name for state in page.tasks)
            pages += 1
            token = page.continuation_token
            if token is None:
                break

    assert sorted(seen) == sorted(names)
    assert pages == 3


async def test_list_tasks_rejects_static_tasks(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    @app.task(interval=datetime.timedelta(seconds=1))
    async def static(context: Context) -> None:
        pass

    async with app.create() as ctx:
        with pytest.raises(ValueError, match="non-dynamic"):
            await ctx.list_tasks(static)


async def test_schedule_task_refuses_a_running_instance_unless_forced(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    started = []

    @app.dynamic_task()
    async def busy(context: Context) -> None:
        started.append(clock.now())
        await clock.sleep(30)

    async with running(app) as ctx:
        await ctx.schedule_task(busy, "b", execute_at=at(1))
        await clock.advance(seconds=1)
        await eventually(lambda: bool(started))
        with pytest.raises(TaskLockedException):
            await ctx.schedule_task(busy, "b", execute_at=at(100))
        await ctx.schedule_task(busy, "b", execute_at=at(100), force=True)
        state = await ctx.get_task(busy, "b")
        assert state is not None and state.scheduled_at == at(100) and state.locked_until is None
        await clock.advance(seconds=200)


async def test_partitioned_task_runs_instances_from_every_partition(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    runs: set[str] = set()

    @app.partitioned_task(partition_count=4)
    async def sharded(context: Context) -> None:
        runs.add(context.task.name)

    names = {f"n{i}" for i in range(20)}
    async with running(app) as ctx:
        for name in names:
            await ctx.schedule_task(sharded, name, interval=datetime.timedelta(seconds=5))
        await clock.advance(seconds=5)
        await eventually(lambda: runs == names)
        listed: list[str] = []
        token = None
        while True:
            page = await ctx.list_tasks(sharded, limit=7, continuation_token=token)
            listed.extend(state.task.name for state in page.tasks)
            token = page.continuation_token
            if token is None:
                break
        assert sorted(listed) == sorted(names)
        state = await ctx.get_task(sharded, "n3")
        assert state is not None and state.task.name == "n3"


async def test_enabled_partitions_limit_what_this_process_runs(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    runs: set[str] = set()

    @app.partitioned_task(partition_count=2, enabled_partitions=[0])
    async def sharded(context: Context) -> None:
        runs.add(context.task.name)

    names = [f"n{i}" for i in range(20)]
    expected = {name for name in names if sharded.partition_selector(2, name) == 0}
    async with running(app) as ctx:
        for name in names:
            await ctx.schedule_task(sharded, name, interval=datetime.timedelta(seconds=5))
        await clock.advance(seconds=5)
        await eventually(lambda: runs == expected)

    assert 0 < len(expected) < len(names)


async def test_schedule_task_requires_a_dynamic_template(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    @app.task(interval=datetime.timedelta(seconds=1))
    async def static(context: Context) -> None:
        pass

    async with app.create() as ctx:
        with pytest.raises(ValueError, match="dynamic"):
            await ctx.schedule_task(static, "x", interval=datetime.timedelta(seconds=1))
