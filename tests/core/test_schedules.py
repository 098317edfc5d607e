"""Several cron schedules per task, and Jenkins-style ``H`` spread (see pyncette.schedule)."""

from __future__ import annotations

import collections
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from core_helpers import running

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.schedule import spread_cron
from pyncette.task import Task

UTC = datetime.UTC


def at(hour: int, minute: int = 0, *, day: int = 1) -> datetime.datetime:
    return datetime.datetime(2030, 1, day, hour, minute, tzinfo=UTC)


async def _noop(context: Context) -> None:
    return None


# ---- several schedules ----


async def test_a_task_with_two_schedules_runs_at_both(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[datetime.datetime] = []

    @app.task(schedule=["0 9 * * *", "30 12 * * *"])
    async def report(context: Context) -> None:
        runs.append(context.scheduled_at)

    async with running(app):
        await clock.set(at(0, day=3))
    assert runs == [at(9), at(12, 30), at(9, day=2), at(12, 30, day=2)]


async def test_schedules_matching_the_same_time_give_one_run(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[datetime.datetime] = []

    @app.task(schedule=["0 * * * *", "*/30 * * * *", "0 * * * *"])
    async def job(context: Context) -> None:
        runs.append(context.scheduled_at)

    async with running(app):
        await clock.set(at(2))
    assert runs == [at(0, 30), at(1), at(1, 30), at(2)]


async def test_one_timezone_applies_to_every_schedule(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[datetime.datetime] = []

    @app.task(schedule=["0 9 * * *", "0 17 * * *"], timezone="America/New_York")
    async def job(context: Context) -> None:
        runs.append(context.scheduled_at.astimezone(UTC))

    async with running(app):
        await clock.set(at(0, day=2))
    assert runs == [at(14), at(22)]  # EST is UTC-5 in January


async def test_a_dynamic_instance_with_several_schedules_survives_its_stored_spec(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: list[tuple[str, datetime.datetime]] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs.append((context.task.name, context.scheduled_at))

    async with running(app) as ctx:
        await ctx.schedule_task(job, "two", schedule=["15 * * * *", "45 * * * *"])
        state = await ctx.get_task(job, "two")
        assert state is not None and state.task.schedule == ["15 * * * *", "45 * * * *"]
        assert state.scheduled_at == at(0, 15)
        await clock.set(at(1, 30))
    assert runs == [("two", at(0, 15)), ("two", at(0, 45)), ("two", at(1, 15))]

    template = Task(name="t", func=_noop, dynamic=True)
    instance = template.instantiate("x", schedule=("0 1 * * *", "0 2 * * *"))
    rebuilt = template.instantiate_from_spec(json.dumps(instance.as_spec()))
    assert rebuilt.schedule == ["0 1 * * *", "0 2 * * *"]
    assert rebuilt.get_next_execution(at(1, 30), None) == at(2)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ([], "task 'job': schedule: an empty list; give at least one cron expression"),
        (["0 9 * * *", "61 * * * *"], "task 'job': schedule[1]: invalid cron expression '61 * * * *'"),
        (["0 9 * * *", 5], "task 'job': schedule[1]: expected a cron expression string, got 5"),
        (5, "task 'job': schedule: expected a cron expression or a list of them, got 5"),
    ],
)
def test_a_bad_schedule_list_names_the_item(schedule: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        Task(name="job", func=_noop, schedule=schedule)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


# ---- H: deterministic spread ----


def test_h_resolves_to_the_same_values_forever() -> None:
    # Pinned values: a change of the hash would move every user's task to another minute.
    assert spread_cron("H * * * *", "default/report") == "21 * * * *"
    assert spread_cron("H H * * *", "default/report") == "21 11 * * *"
    assert spread_cron("H(0-29)/10 * * * *", "default/report") == "1-29/10 * * * *"
    assert spread_cron("H/15 * * * * H", "team-a/sync") == "6-59/15 * * * * 6"


def test_h_is_the_same_in_another_process() -> None:
    # A fresh interpreter with a different string-hash salt: Python's hash() would differ, ours must not.
    code = "from pyncette.schedule import spread_cron; print(spread_cron('H H H * *', 'ns/nightly'))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == spread_cron("H H H * *", "ns/nightly")


def test_h_forms_stay_within_their_ranges() -> None:
    for n in range(300):
        seed = f"ns/task-{n}"
        minute, hour, day, month, weekday = spread_cron("H(10-19) H H H H", seed).split()
        assert 10 <= int(minute) <= 19 and 0 <= int(hour) <= 23 and 0 <= int(weekday) <= 6
        assert 1 <= int(day) <= 28 and 1 <= int(month) <= 12  # every month has the day
        stepped = spread_cron("H(0-29)/10 * * * *", seed).split()[0]
        start, _, rest = stepped.partition("-")
        assert 0 <= int(start) <= 9 and rest == "29/10"
    assert spread_cron("0 9 * * THU", "x") == "0 9 * * THU"  # an H in a day name is not a hash
    assert spread_cron("@hourly", "x") == "@hourly"  # aliases keep their 1.x meaning


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("H(0-99) * * * *", "minute field 'H(0-99)': the range must be within 0-59"),
        ("* H(5) * * *", "hour field 'H(5)': expected H, H(a-b), H/n or H(a-b)/n"),
        ("H/0 * * * *", "minute field 'H/0': the step must be at least 1"),
        ("* * * * H(9-3)", "day of week field 'H(9-3)'"),
    ],
)
def test_a_malformed_h_names_the_field(expression: str, problem: str) -> None:
    with pytest.raises(ValueError) as info:
        Task(name="job", func=_noop, schedule=expression)
    assert str(info.value).startswith(f"task 'job': schedule: invalid cron expression {expression!r}: {problem}")


def test_1000_hourly_tasks_spread_over_the_hour() -> None:
    minutes = collections.Counter(
        spread_cron("H * * * *", f"{namespace}/job-{n}") for namespace in ("default", "etl") for n in range(500)
    )
    assert len(minutes) == 60
    assert max(minutes.values()) <= 30  # no minute holds more than 3% of the tasks


async def test_instances_written_the_same_way_run_at_their_own_minutes(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(poll_interval=datetime.timedelta(hours=1))
    runs: dict[str, list[datetime.datetime]] = collections.defaultdict(list)

    @app.dynamic_task()
    async def job(context: Context) -> None:
        runs[context.task.name].append(context.scheduled_at)

    names = ["default/report", "default/cleanup", "etl/load"]
    async with running(app) as ctx:
        for name in names:
            instance = await ctx.schedule_task(job, name, schedule="H * * * *")
            assert instance.cron_expressions == (spread_cron("H * * * *", name),)
        await clock.set(at(2))
    for name in names:
        minute = int(spread_cron("H * * * *", name).split()[0])
        assert runs[name] == [at(0, minute), at(1, minute)]
    assert len({tuple(r) for r in runs.values()}) == len(names)
