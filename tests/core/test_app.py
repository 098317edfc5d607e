"""The app around the loop: middlewares, fixtures, executors, shutdown, batching, outages, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import itertools
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import pytest
from core_helpers import START
from core_helpers import eventually
from core_helpers import running

from pyncette import Context
from pyncette import ExecutionMode
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette import PyncetteContext
from pyncette.executor import SynchronousExecutor
from pyncette.memory import MemoryRepository
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import NextFunc
from pyncette.task import Task


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


class RecordingRepository(MemoryRepository):
    """The in-memory backend, counting batch calls and able to fail polls on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.lease_limits: list[int] = []
        self.commit_batches: list[int] = []
        self.failing_polls = 0

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        if self.failing_polls:
            self.failing_polls -= 1
            raise ConnectionError("backend is down")
        self.lease_limits.append(limit)
        return await super().lease_due(utc_now, tasks, limit=limit)

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        self.commit_batches.append(len(executions))
        await super().commit_executions(utc_now, executions)


def recording(repository: RecordingRepository) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    @contextlib.asynccontextmanager
    async def factory(**kwargs: Any) -> AsyncIterator[RecordingRepository]:
        yield repository

    return factory


async def test_middlewares_wrap_in_registration_order(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    calls: list[str] = []

    @app.task(interval=datetime.timedelta(seconds=2))
    async def ok(context: Context) -> None:
        calls.append("ok")

    @app.task(interval=datetime.timedelta(seconds=2))
    async def failing(context: Context) -> None:
        calls.append("failing")
        raise RuntimeError("boom")

    def make(n: int) -> Callable[[Context, NextFunc], Any]:
        async def middleware(context: Context, next: NextFunc) -> None:
            calls.append(f"enter{n}:{context.task.name}")
            try:
                await next()
                calls.append(f"success{n}:{context.task.name}")
            except RuntimeError:
                calls.append(f"caught{n}:{context.task.name}")
                if n == 1:
                    raise

        return middleware

    app.middleware(make(1))
    app.use_middleware(make(2))

    async with running(app):
        await clock.advance(seconds=2)

    ok_calls = [c for c in calls if c.endswith(":ok") or c == "ok"]
    failing_calls = [c for c in calls if c.endswith(":failing") or c == "failing"]
    assert ok_calls == ["enter1:ok", "enter2:ok", "ok", "success2:ok", "success1:ok"]
    assert failing_calls == ["enter1:failing", "enter2:failing", "failing", "caught2:failing", "success1:failing"]


async def test_fixtures_are_set_up_in_order_and_torn_down_after_tasks_finish(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    events: list[str] = []
    release = asyncio.Event()

    @app.fixture()
    async def first(app_context: PyncetteContext) -> AsyncIterator[str]:
        events.append("first up")
        yield "one"
        events.append("first down")

    @app.fixture(name="second")
    async def second_fixture(app_context: PyncetteContext) -> AsyncIterator[str]:
        events.append("second up")
        yield "two"
        events.append("second down")

    @app.task(interval=datetime.timedelta(seconds=1))
    async def uses(context: Context) -> None:
        events.append(f"task {context.first} {context.second} {context.extra}")
        await release.wait()
        events.append("task done")

    async with app.create(context_items={"extra": "three"}) as ctx:
        loop = asyncio.create_task(ctx.run())
        await clock.advance(seconds=1)
        await eventually(lambda: "task one two three" in events)
        ctx.shutdown()
        release.set()
        await loop

    assert events == [
        "first up",
        "second up",
        "task one two three",
        "task done",
        "second down",
        "first down",
    ]


async def test_fixture_and_context_names_are_checked(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    async def fixture(app_context: PyncetteContext) -> AsyncIterator[None]:
        yield None

    with pytest.raises(ValueError, match="reserved"):
        app.use_fixture("scheduled_at", fixture)
    app.use_fixture("thing", fixture)
    with pytest.raises(ValueError, match="duplicate"):
        app.use_fixture("thing", fixture)
    async with app.create() as ctx:
        with pytest.raises(ValueError, match="reserved"):
            ctx.add_to_context("args", 1)
        with pytest.raises(ValueError, match="already exists"):
            ctx.add_to_context("thing", 1)


async def test_concurrency_limit_is_respected_and_nothing_extra_is_leased(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    repository = RecordingRepository()
    app = make_app(repository_factory=recording(repository), concurrency_limit=2)
    running_now: list[str] = []
    peak = 0
    release = asyncio.Event()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        nonlocal peak
        running_now.append(context.task.name)
        peak = max(peak, len(running_now))
        await release.wait()
        running_now.remove(context.task.name)

    async with running(app) as ctx:
        for i in range(5):
            await ctx.schedule_task(job, f"j{i}", execute_at=at(1))
        await clock.advance(seconds=5)
        await eventually(lambda: len(running_now) == 2)
        # Only the two running instances are leased; the other three wait unleased.
        locked = [state for state in (await ctx.list_tasks(job)).tasks if state.locked_until is not None]
        assert len(locked) == 2
        assert all(limit <= 2 for limit in repository.lease_limits)
        release.set()
        await eventually(lambda: not (ctx._running or ctx._flusher.pending))
        await clock.advance(seconds=1)
        await eventually(lambda: not (ctx._running or ctx._flusher.pending))

    assert peak == 2


async def test_next_lease_goes_out_before_the_batch_runs_when_slots_allow(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    """While draining, the next lease is sent before the leased batch starts (its round trip overlaps
    the batch), for no more than the slots left free by that batch: all of it starts at once."""
    started: list[str] = []
    release = asyncio.Event()

    class Probe(RecordingRepository):
        def __init__(self) -> None:
            super().__init__()
            self.started_at_lease: list[int] = []

        async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
            self.started_at_lease.append(len(started))
            return await super().lease_due(utc_now, tasks, limit=limit)

    repository = Probe()
    app = make_app(repository_factory=recording(repository), concurrency_limit=5, batch_size=2)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        started.append(context.task.name)
        await release.wait()

    async with running(app) as ctx:
        for i in range(7):
            await ctx.schedule_task(job, f"j{i}", execute_at=at(1))
        repository.lease_limits.clear()
        repository.started_at_lease.clear()
        try:
            await clock.advance(seconds=1)
            await eventually(lambda: len(started) == 5)
            locked = [state for state in (await ctx.list_tasks(job)).tasks if state.locked_until is not None]
        finally:
            release.set()  # a failed assertion must not leave the app waiting for the bodies
        # 2 leased with 5 slots free; the next 2 went out before those started (3 slots left), then
        # 1 (the last free slot) before the second pair started; then nothing until a slot frees.
        assert repository.lease_limits[:3] == [2, 2, 1]
        assert repository.started_at_lease[:3] == [0, 0, 2]
        assert len(locked) == 5
        await eventually(lambda: len(started) == 7 and not ctx._running)

    assert sorted(started) == [f"j{i}" for i in range(7)]


async def test_shutdown_lets_running_tasks_finish_and_flushes_their_commits(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    repository = RecordingRepository()
    app = make_app(repository_factory=recording(repository))
    release = asyncio.Event()
    finished: list[bool] = []

    @app.task(interval=datetime.timedelta(seconds=5))
    async def slow(context: Context) -> None:
        await release.wait()
        finished.append(True)

    async with app.create() as ctx:
        loop = asyncio.create_task(ctx.run())
        await clock.advance(seconds=5)
        await eventually(lambda: ctx._running == 1)
        ctx.shutdown()
        await asyncio.wait_for(loop, 5)  # like 1.x, run() returns once it stops leasing
        assert finished == []
        release.set()
        await ctx.drain()
        assert finished == [True]
        state = await ctx.get_task(slow)
        assert state is not None and state.scheduled_at == at(10) and state.locked_until is None
        await clock.advance(seconds=10)
        assert finished == [True]  # nothing new started after shutdown


async def test_leaving_create_waits_for_running_tasks_and_their_commits(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    repository = RecordingRepository()
    app = make_app(repository_factory=recording(repository))
    release = asyncio.Event()
    finished: list[bool] = []

    @app.task(interval=datetime.timedelta(seconds=5))
    async def slow(context: Context) -> None:
        await release.wait()
        finished.append(True)

    async with app.create() as ctx:
        loop = asyncio.create_task(ctx.run())
        await clock.advance(seconds=5)
        await eventually(lambda: ctx._running == 1)
        ctx.shutdown()
        await loop
        asyncio.get_running_loop().call_soon(release.set)

    assert finished == [True]
    state = await repository.get_task_state(clock.now(), slow)
    assert state is not None and state.scheduled_at == at(10) and state.locked_until is None


async def test_cancelling_run_cancels_running_tasks(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    cancelled: list[bool] = []

    @app.task(interval=datetime.timedelta(seconds=1), execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def forever(context: Context) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(asyncio.CancelledError):
        async with app.create() as ctx:
            loop = asyncio.create_task(ctx.run())
            await clock.advance(seconds=1)
            await eventually(lambda: ctx._running == 1)
            loop.cancel()
            await loop
    assert cancelled == [True]


_VISITS: contextvars.ContextVar[int] = contextvars.ContextVar("visits", default=0)


async def test_each_execution_is_its_own_task_with_its_own_context(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    """Bodies may rely on asyncio's task semantics: ``current_task()`` is theirs (so ``asyncio.timeout``
    cancels the body, never the main loop), and context variables they set stay theirs."""
    app = make_app()
    seen: list[tuple[str, int, bool]] = []
    timed_out: list[str] = []
    loop_task: asyncio.Task[None] | None = None

    @app.dynamic_task()
    async def job(context: Context) -> None:
        visits = _VISITS.get() + 1
        _VISITS.set(visits)  # a body that leaked its context would make the next one count 2
        seen.append((context.task.name, visits, asyncio.current_task() is not loop_task))
        if context.args.get("stuck"):
            try:
                async with asyncio.timeout(0.01):  # real time: the body waits on nothing else
                    await asyncio.Event().wait()
            except TimeoutError:
                timed_out.append(context.task.name)

    async with app.create() as ctx:
        loop_task = asyncio.create_task(ctx.run())
        await FakeClock._settle()
        for name in ("a", "b", "c"):
            await ctx.schedule_task(job, name, execute_at=at(1), stuck=name == "b")
        await clock.advance(seconds=1)
        await eventually(lambda: timed_out == ["b"] and not ctx._running)
        assert not loop_task.done()  # the timeout hit the body, not the loop
        assert _VISITS.get() == 0
        ctx.shutdown()
        await asyncio.wait_for(loop_task, 10)

    assert sorted(seen) == [("a", 1, True), ("b", 1, True), ("c", 1, True)]


async def test_synchronous_executor_runs_one_at_a_time(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(executor_cls=SynchronousExecutor)
    started: list[datetime.datetime] = []
    release = asyncio.Event()

    @app.task(interval=datetime.timedelta(seconds=1), execution_mode=ExecutionMode.AT_MOST_ONCE)
    async def blocking(context: Context) -> None:
        started.append(clock.now())
        await release.wait()

    async with app.create() as ctx:
        loop = asyncio.create_task(ctx.run())
        await clock.advance(seconds=10)
        assert started == [at(1)]
        ctx.shutdown()
        release.set()
        await asyncio.wait_for(loop, 5)
    assert started == [at(1)]


async def test_results_are_committed_in_batches(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    repository = RecordingRepository()
    app = make_app(repository_factory=recording(repository))
    done: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        done.append(context.task.name)

    async with running(app) as ctx:
        for i in range(50):
            await ctx.schedule_task(job, f"j{i}", execute_at=at(1))
        await clock.advance(seconds=1)
        await eventually(lambda: len(done) == 50)
        await ctx._flusher.flush()
        assert (await ctx.list_tasks(job)).tasks == []

    assert sum(repository.commit_batches) == 50
    assert len(repository.commit_batches) < 50
    assert len(repository.lease_limits) < 50


async def test_backend_outage_is_logged_once_and_polling_resumes(
    make_app: Callable[..., Pyncette], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    repository = RecordingRepository()
    app = make_app(repository_factory=recording(repository))
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2))
    async def survivor(context: Context) -> None:
        started.append(clock.now())

    caplog.set_level(logging.INFO, logger="pyncette")
    repository.failing_polls = 6
    async with running(app) as ctx:
        await clock.advance(seconds=5)
        assert repository.failing_polls == 0
        healthy_since = ctx.last_tick
        await clock.advance(seconds=5)
        assert ctx.last_tick is not None and healthy_since is not None and ctx.last_tick > healthy_since

    failures = [r for r in caplog.records if "Polling the backend failed" in r.getMessage()]
    recoveries = [r for r in caplog.records if "works again" in r.getMessage()]
    assert len(failures) == 1 and "backend is down" in failures[0].getMessage()
    assert len(recoveries) == 1
    # The static task's schedule starts at the first successful poll, then keeps its interval.
    assert len(started) >= 2
    assert {b - a for a, b in itertools.pairwise(started)} == {datetime.timedelta(seconds=2)}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schedule": "not a cron"}, "schedule"),
        ({"schedule": "61 * * * *"}, "schedule"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({}, "schedule"),
        ({"schedule": "* * * * *", "interval": datetime.timedelta(seconds=1)}, "schedule"),
        ({"interval": datetime.timedelta(seconds=1), "payload": object()}, "args"),
    ],
)
def test_bad_static_task_definitions_name_task_and_field(
    make_app: Callable[..., Pyncette], kwargs: dict[str, Any], field: str
) -> None:
    app = make_app()
    with pytest.raises(ValueError, match=f"task 'broken': {field}:"):

        @app.task(**kwargs)
        async def broken(context: Context) -> None:
            pass


def test_duplicate_task_names_are_rejected(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()

    @app.task(interval=datetime.timedelta(seconds=1))
    async def twin(context: Context) -> None:
        pass

    with pytest.raises(ValueError, match="task 'twin': name: duplicate task name"):

        @app.dynamic_task(name="twin")
        async def other(context: Context) -> None:
            pass

    with pytest.raises(ValueError, match="duplicate task name"):

        @app.partitioned_task(partition_count=2, name="twin")
        async def third(context: Context) -> None:
            pass


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"poll_interval": datetime.timedelta(0)}, "poll_interval"),
        ({"batch_size": 0}, "batch_size"),
        ({"concurrency_limit": "many"}, "concurrency_limit"),
        ({"backend_timeout": 0}, "^Pyncette: backend_timeout: must be a positive timedelta or number of seconds"),
        ({"backend_timeout": "soon"}, "^Pyncette: backend_timeout: "),
    ],
)
def test_bad_app_settings(make_app: Callable[..., Pyncette], kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_app(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"schedule": "every day"}, "schedule"),
        ({"schedule": "0 3 * * *", "timezone": "Nowhere/Special"}, "timezone"),
        ({"interval": datetime.timedelta(seconds=5), "callback": lambda: None}, "args"),
        ({}, "schedule"),
        ({"interval": datetime.timedelta(seconds=5), "execute_at": START}, "schedule"),
    ],
)
async def test_bad_schedule_task_calls_change_nothing(
    make_app: Callable[..., Pyncette], kwargs: dict[str, Any], field: str
) -> None:
    app = make_app()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        pass

    async with app.create() as ctx:
        await ctx.schedule_task(job, "keep", interval=datetime.timedelta(minutes=1), payload=1)
        before = await ctx.get_task(job, "keep")
        with pytest.raises(ValueError, match=f"task 'job:keep': {field}:"):
            await ctx.schedule_task(job, "keep", **kwargs)
        after = await ctx.get_task(job, "keep")
        assert before is not None and after is not None
        assert after.scheduled_at == before.scheduled_at
        assert after.task.as_spec() == before.task.as_spec()
        assert len((await ctx.list_tasks(job)).tasks) == 1


class OneXStyleExecutor:
    """An executor written for pyncette 1.x: only ``spawn_task``, no capacity information."""

    spawned = 0

    def __init__(self, **kwargs: Any) -> None:
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> OneXStyleExecutor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.tasks:
            await asyncio.wait(self.tasks)

    async def spawn_task(self, task: Any) -> None:
        OneXStyleExecutor.spawned += 1
        self.tasks.append(asyncio.ensure_future(task))


async def test_custom_1x_style_executor_works(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(executor_cls=OneXStyleExecutor)
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2))
    async def job(context: Context) -> None:
        started.append(clock.now())

    async with running(app):
        await clock.advance(seconds=6)

    assert started == [at(2), at(4), at(6)]
    assert OneXStyleExecutor.spawned == 3
