"""A few end-to-end checks of the app on every backend, with fake time.

The repository-level tests are the core of the suite; these make sure the main loop, the batched
commits and a backend fit together. Time only moves when the test moves the ``FakeClock``; the
real-time waits below are bounded waits for a condition (backends do real I/O), never timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import pytest

from pyncette.clock import FakeClock
from pyncette.model import Context
from pyncette.pyncette import Pyncette
from pyncette.pyncette import PyncetteContext
from pyncette.schedule import spread_cron

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float = 20.0) -> None:
    """Waits until ``condition()`` holds; a guard against hangs, not a timing assertion."""

    async def poll() -> None:
        while not await condition():  # noqa: ASYNC110 - a backend query has no event to wait on
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), within)


@contextlib.asynccontextmanager
async def running(app: Pyncette) -> AsyncIterator[PyncetteContext]:
    async with app.create() as ctx:
        loop = asyncio.create_task(ctx.run())
        try:
            yield ctx
        finally:
            ctx.shutdown()
            await asyncio.wait_for(loop, 20)


def make_app(backend_kwargs: dict[str, Any], clock: FakeClock) -> Pyncette:
    return Pyncette(clock=clock, poll_interval=datetime.timedelta(seconds=1), **backend_kwargs)


async def test_static_interval_task_runs_at_every_tick(backend_kwargs: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    app = make_app(backend_kwargs, clock)
    runs: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=10))
    async def tick(context: Context) -> None:
        runs.append(context.scheduled_at)

    async with running(app) as ctx:
        for n in (1, 2, 3):
            await clock.advance(seconds=10)

            async def committed(n: int = n) -> bool:
                state = await ctx.get_task(tick)
                return len(runs) >= n and state is not None and state.scheduled_at == at(10 * (n + 1))

            await eventually(committed)
    assert runs == [at(10), at(20), at(30)]


async def test_dynamic_instances_run_once_per_due_time(backend_kwargs: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    app = make_app(backend_kwargs, clock)
    runs: list[tuple[str, datetime.datetime]] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append((context.task.name, context.scheduled_at))

    async with running(app) as ctx:
        await ctx.schedule_task(job, "every5", interval=datetime.timedelta(seconds=5))
        await ctx.schedule_task(job, "once-a", execute_at=at(7))
        await ctx.schedule_task(job, "once-b", execute_at=at(7))
        await clock.advance(seconds=10)

        async def settled() -> bool:
            every5 = await ctx.get_task(job, "every5")
            gone = [await ctx.get_task(job, name) for name in ("once-a", "once-b")]
            return every5 is not None and every5.scheduled_at == at(15) and gone == [None, None]

        await eventually(settled)
    assert sorted(runs) == [("every5", at(5)), ("every5", at(10)), ("once-a", at(7)), ("once-b", at(7))]


async def test_a_schedule_change_applies_from_the_next_run(backend_kwargs: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    app = make_app(backend_kwargs, clock)
    runs: list[tuple[datetime.datetime, Any]] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append((context.scheduled_at, context.args["version"]))

    async def next_run_is(when: datetime.datetime) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            state = await ctx.get_task(job, "a")
            return state is not None and state.scheduled_at == when and state.locked_until is None

        return check

    async with running(app) as ctx:
        await ctx.schedule_task(job, "a", interval=datetime.timedelta(seconds=10), version=1)
        await clock.advance(seconds=10)
        await eventually(await next_run_is(at(20)))

        await clock.advance(seconds=2)
        await ctx.schedule_task(job, "a", interval=datetime.timedelta(seconds=60), version=2)
        await clock.advance(seconds=8)  # the already scheduled run at 20 still happens
        await eventually(await next_run_is(at(80)))

        await clock.advance(seconds=60)
        await eventually(await next_run_is(at(140)))
    assert [when for when, _ in runs] == [at(10), at(20), at(80)]
    assert runs[-1][1] == 2


async def test_an_instance_with_several_schedules_and_h_runs_at_their_union(backend_kwargs: dict[str, Any]) -> None:
    clock = FakeClock(T0)
    app = make_app(backend_kwargs, clock)
    runs: list[datetime.datetime] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append(context.scheduled_at)

    # Seconds-resolution cron (sixth field): "H/20" resolves to one offset below 20 for this name.
    offset = int(spread_cron("* * * * * H/20", "spread").split()[5].split("-")[0])
    async with running(app) as ctx:
        await ctx.schedule_task(job, "spread", schedule=["* * * * * H/20", "* * * * * 55"])
        await clock.advance(seconds=60)

        async def settled() -> bool:
            state = await ctx.get_task(job, "spread")
            return state is not None and state.scheduled_at > at(60) and state.locked_until is None

        await eventually(settled)
    seconds = {offset, offset + 20, offset + 40, 55}
    assert runs == [at(s) for s in range(1, 61) if s % 60 in seconds]


async def test_a_corrupted_instance_is_skipped_reported_once_and_the_rest_runs(
    backend_kwargs: dict[str, Any],
    store_raw_spec_in: Callable[[Any, str, str], Awaitable[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The issue's example on a running app: one stored instance no worker can load never holds up
    the others due with it, nor a static task beside them; it is reported once and kept."""
    clock = FakeClock(T0)
    app = make_app(backend_kwargs, clock)
    runs: list[tuple[str, datetime.datetime]] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append((context.task.name, context.scheduled_at))

    @app.task(interval=datetime.timedelta(seconds=5))
    async def beside(context: Context) -> None:
        runs.append(("beside", context.scheduled_at))

    with caplog.at_level(logging.ERROR):
        async with running(app) as ctx:
            for name in ("a", "broken", "b"):
                await ctx.schedule_task(job, name, interval=datetime.timedelta(seconds=10))
            broken = json.dumps(
                {
                    **job.instantiate("broken", interval=datetime.timedelta(seconds=10)).as_spec(),
                    "execution_mode": "SOMETIMES",
                }
            )
            await store_raw_spec_in(ctx.repository, "job:broken", broken)
            for until in (10, 20):
                await clock.advance(seconds=10)

                async def ran(until: int = until) -> bool:
                    state = await ctx.get_task(job, "b")
                    done = {(n, t) for n, t in runs}
                    return {("a", at(until)), ("b", at(until)), ("beside", at(until))} <= done and (
                        state is not None and state.scheduled_at == at(until + 10)
                    )

                await eventually(ran)
            listed = {s.task.name: s.problem for s in (await ctx.list_tasks(job)).tasks}

    assert not any(name == "broken" for name, _ in runs)
    assert listed["broken"] is not None and listed["a"] is None
    reports = [r for r in caplog.records if "'job:broken'" in r.getMessage()]
    assert len(reports) == 1, [r.getMessage() for r in reports]
