"""Static tasks: interval and cron schedules (5 and 6 fields, aliases), fast_forward, enabled."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from core_helpers import START
from core_helpers import running
from core_helpers import shared_memory

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


async def test_interval_task_runs_at_each_interval(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=2))
    async def tick(context: Context) -> None:
        started.append(clock.now())

    async with running(app):
        await clock.advance(seconds=10)

    assert started == [at(2), at(4), at(6), at(8), at(10)]


async def test_interval_task_context_carries_schedule_and_args(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    seen: list[tuple[datetime.datetime, dict[str, object], str]] = []

    @app.task(interval=datetime.timedelta(seconds=5), greeting="hi")
    async def tick(context: Context) -> None:
        seen.append((context.scheduled_at, context.args, context.task.name))

    async with running(app):
        await clock.advance(seconds=5)

    assert seen == [(at(5), {"greeting": "hi"}, "tick")]


async def test_five_field_cron_runs_every_minute(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(poll_interval=datetime.timedelta(seconds=30))
    started: list[datetime.datetime] = []

    @app.task(schedule="* * * * *")
    async def minutely(context: Context) -> None:
        started.append(clock.now())

    async with running(app):
        await clock.advance(datetime.timedelta(minutes=10))

    assert started == [at(60 * m) for m in range(1, 11)]


async def test_six_field_cron_has_seconds_last(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    started: list[datetime.datetime] = []

    @app.task(schedule="* * * * * */10")
    async def every_ten_seconds(context: Context) -> None:
        started.append(clock.now())

    async with running(app):
        await clock.advance(seconds=60)

    assert started == [at(s) for s in (10, 20, 30, 40, 50, 60)]


async def test_hourly_alias(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(poll_interval=datetime.timedelta(minutes=10))
    started: list[datetime.datetime] = []

    @app.task(schedule="@hourly")
    async def hourly(context: Context) -> None:
        started.append(context.scheduled_at)

    async with running(app):
        await clock.advance(datetime.timedelta(hours=3, minutes=30))

    assert started == [at(3600), at(7200), at(10800)]


async def test_missed_runs_are_caught_up_without_fast_forward(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(repository_factory=shared_memory())
    scheduled: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=10))
    async def catch_up(context: Context) -> None:
        scheduled.append(context.scheduled_at)

    async with running(app):  # the task's state is created at START...
        pass
    await clock.advance(seconds=35)  # ...then the app is down for 35 seconds
    async with running(app):
        await clock.advance(seconds=0)

    assert scheduled == [at(10), at(20), at(30)]


async def test_fast_forward_skips_missed_runs(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(repository_factory=shared_memory())
    scheduled: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=10), fast_forward=True)
    async def skip_ahead(context: Context) -> None:
        scheduled.append(context.scheduled_at)

    async with running(app):
        pass
    await clock.advance(seconds=35)
    async with running(app):
        await clock.advance(seconds=10)

    # The first overdue run executes once (scheduled at 10 s); the next one is the first future slot.
    assert scheduled == [at(10), at(40)]


async def test_fast_forward_cron(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(repository_factory=shared_memory())
    scheduled: list[datetime.datetime] = []

    @app.task(schedule="* * * * * */10", fast_forward=True)
    async def skip_ahead(context: Context) -> None:
        scheduled.append(context.scheduled_at)

    async with running(app):
        pass
    await clock.advance(seconds=35)
    async with running(app):
        await clock.advance(seconds=10)

    assert scheduled == [at(10), at(40)]


async def test_disabled_task_never_runs(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    runs: list[str] = []

    @app.task(interval=datetime.timedelta(seconds=1), enabled=False)
    async def off(context: Context) -> None:
        runs.append("off")

    @app.task(interval=datetime.timedelta(seconds=1))
    async def on(context: Context) -> None:
        runs.append("on")

    async with running(app):
        await clock.advance(seconds=3)

    assert runs == ["on", "on", "on"]


async def test_several_tasks_each_on_their_own_schedule(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    runs: list[tuple[str, datetime.datetime]] = []

    @app.task(interval=datetime.timedelta(seconds=3))
    async def three(context: Context) -> None:
        runs.append(("three", clock.now()))

    @app.task(interval=datetime.timedelta(seconds=5))
    async def five(context: Context) -> None:
        runs.append(("five", clock.now()))

    async with running(app):
        await clock.advance(seconds=10)

    assert sorted(runs) == sorted(
        [("three", at(3)), ("three", at(6)), ("three", at(9)), ("five", at(5)), ("five", at(10))]
    )
