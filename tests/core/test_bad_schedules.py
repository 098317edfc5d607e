"""Bad schedules: rejected at definition by computing them, and never able to stop another task.

Rows of docs/bad-input.md (the "cron" and "timezone" sections) point at these tests.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

import pytest
from core_helpers import START
from core_helpers import running
from croniter import CroniterBadCronError

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.errors import InvalidScheduleError


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"schedule": "0 0 30 2 *"}, "task 'feb30': schedule: invalid cron expression '0 0 30 2 *': no next run time"),
        ({"schedule": "0 0 31 4 *"}, "task 'feb30': schedule: invalid cron expression '0 0 31 4 *': no next run time"),
        ({"schedule": "abracadabra"}, "task 'feb30': schedule: invalid cron expression 'abracadabra'"),
        ({"schedule": "61 * * * *"}, "task 'feb30': schedule: invalid cron expression '61 * * * *'"),
        ({"schedule": ""}, "task 'feb30': schedule: empty cron expression"),
    ],
)
def test_a_cron_no_time_matches_is_rejected_at_definition(
    make_app: Callable[..., Pyncette], kwargs: dict[str, str], fragment: str
) -> None:
    app = make_app()
    with pytest.raises(ValueError, match="^" + fragment.replace("*", r"\*").replace("(", r"\(")) as raised:

        @app.task(name="feb30", **kwargs)
        async def task(context: Context) -> None:
            pass

    # pyncette 1.x raised croniter's own error: code catching it keeps working.
    assert isinstance(raised.value, CroniterBadCronError)
    assert isinstance(raised.value, InvalidScheduleError)


def test_an_unknown_timezone_is_rejected_at_definition(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()
    with pytest.raises(InvalidScheduleError, match=r"^task 'nightly': timezone: unknown timezone 'Mars/Olympus'"):

        @app.task(name="nightly", schedule="0 3 * * *", timezone="Mars/Olympus")
        async def task(context: Context) -> None:
            pass


def test_a_dynamic_instance_with_an_impossible_cron_is_rejected_before_anything_is_stored(
    make_app: Callable[..., Pyncette],
) -> None:
    app = make_app()

    @app.dynamic_task()
    async def report(context: Context) -> None:
        pass

    with pytest.raises(ValueError, match=r"^task 'report:monthly': schedule: .*no next run time"):
        report.instantiate("monthly", schedule="0 0 30 2 *")


async def test_the_neighbour_of_a_rejected_task_runs(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app()
    ticks: list[datetime.datetime] = []

    with pytest.raises(ValueError):

        @app.task(schedule="0 0 30 2 *")
        async def feb30(context: Context) -> None:
            pass

    @app.task(interval=datetime.timedelta(seconds=1))
    async def tick(context: Context) -> None:
        ticks.append(clock.now())

    async with running(app):
        await clock.advance(seconds=4)

    assert ticks == [at(1), at(2), at(3), at(4)]


async def test_a_task_whose_schedule_stops_computing_never_stops_the_others(
    make_app: Callable[..., Pyncette], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A time zone changed after definition (the attribute is public) to one this worker lacks: the
    task is reported once and not scheduled; every other task keeps its runs."""
    app = make_app()
    ticks: list[datetime.datetime] = []

    @app.task(schedule="* * * * *")
    async def broken(context: Context) -> None:
        pass

    broken.timezone = "Mars/Olympus"

    @app.task(interval=datetime.timedelta(seconds=1))
    async def tick(context: Context) -> None:
        ticks.append(clock.now())

    with caplog.at_level(logging.ERROR):
        async with running(app):
            await clock.advance(seconds=4)

    assert ticks == [at(1), at(2), at(3), at(4)]
    reports = [r.getMessage() for r in caplog.records if "'broken'" in r.getMessage()]
    assert len(reports) == 1, reports
    assert "cannot compute its first time" in reports[0]


async def test_a_running_task_whose_next_time_cannot_be_computed_keeps_its_entry(
    make_app: Callable[..., Pyncette], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Its run is not committed (the entry is kept, not lost) and the others go on."""
    app = make_app()
    ticks: list[datetime.datetime] = []
    runs: list[datetime.datetime] = []

    @app.task(schedule="* * * * * */2")
    async def breaks_after_first_run(context: Context) -> None:
        runs.append(clock.now())
        context.task.timezone = "Mars/Olympus"

    @app.task(interval=datetime.timedelta(seconds=1))
    async def tick(context: Context) -> None:
        ticks.append(clock.now())

    with caplog.at_level(logging.ERROR):
        async with running(app) as ctx:
            await clock.advance(seconds=5)
            state = await ctx.get_task(breaks_after_first_run)

    assert runs == [at(2)]
    assert ticks == [at(1), at(2), at(3), at(4), at(5)]
    assert state is not None and state.scheduled_at == at(2)
    assert any("cannot compute the next time" in r.getMessage() for r in caplog.records)


def test_fast_forward_over_a_day_of_a_per_second_cron_computes_one_time() -> None:
    """O(1) in missed slots: the result is the first slot not in the past (behaviour; the time it
    takes is printed by benchmarks/fast_forward.py, never asserted)."""
    from pyncette.task import Task

    async def body(context: Context) -> None:
        pass

    task = Task(name="every_second", func=body, schedule="* * * * * *", fast_forward=True)
    last = START
    now = START + datetime.timedelta(days=1, microseconds=500)
    assert task.get_next_execution(now, last) == START + datetime.timedelta(days=1, seconds=1)
    exact = START + datetime.timedelta(days=1)
    assert task.get_next_execution(exact, last) == exact
    assert task.get_next_execution(START, last) == START + datetime.timedelta(seconds=1)


def test_an_interval_with_no_representable_next_run_is_rejected_at_definition(
    make_app: Callable[..., Pyncette],
) -> None:
    app = make_app()
    with pytest.raises(InvalidScheduleError, match=r"^task 'forever': interval: .* is too long \(no next run time\)"):

        @app.task(name="forever", interval=datetime.timedelta(days=999_999_999))
        async def task(context: Context) -> None:
            pass
