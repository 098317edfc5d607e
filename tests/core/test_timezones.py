"""Cron schedules in time zones, across Europe/Dublin's daylight saving transitions.

Documented behaviour (see pyncette.schedule): the cron expression matches wall-clock time in the
task's zone. When clocks go forward (last Sunday of March, 01:00 GMT -> 02:00 IST) a wall-clock
time inside the gap does not happen that day and is skipped. When clocks go back (last Sunday of
October, 02:00 IST -> 01:00 GMT) a wall-clock time in the repeated hour runs once, at its first
occurrence. Nothing else is skipped or doubled.
"""

from __future__ import annotations

import datetime

import pytest
from core_helpers import running

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette

UTC = datetime.UTC


def utc(month: int, day: int, hour: int, minute: int = 0) -> datetime.datetime:
    return datetime.datetime(2030, month, day, hour, minute, tzinfo=UTC)


async def run_cron(
    schedule: str, timezone: str | None, start: datetime.datetime, end: datetime.datetime
) -> list[tuple[datetime.datetime, datetime.datetime]]:
    """Runs one cron task from ``start`` to ``end`` on fake time; returns (UTC start, context.scheduled_at)."""
    clock = FakeClock(start)
    app = Pyncette(clock=clock, poll_interval=datetime.timedelta(hours=1))
    runs: list[tuple[datetime.datetime, datetime.datetime]] = []

    @app.task(schedule=schedule, timezone=timezone)
    async def job(context: Context) -> None:
        runs.append((clock.now(), context.scheduled_at))

    async with running(app):
        await clock.set(end)
    return runs


async def test_spring_forward_skips_the_missing_wall_clock_time() -> None:
    runs = await run_cron("30 1 * * *", "Europe/Dublin", utc(3, 29, 0), utc(4, 2, 0))
    # 01:30 GMT on the 29th and 30th; no 01:30 on the 31st; 01:30 IST (= 00:30 UTC) afterwards.
    assert [started for started, _ in runs] == [utc(3, 29, 1, 30), utc(3, 30, 1, 30), utc(4, 1, 0, 30)]
    # context.scheduled_at is given in the task's zone.
    assert [scheduled.strftime("%d %H:%M %Z") for _, scheduled in runs] == [
        "29 01:30 GMT",
        "30 01:30 GMT",
        "01 01:30 IST",
    ]


async def test_spring_forward_hourly_has_one_run_less() -> None:
    runs = await run_cron("0 * * * *", "Europe/Dublin", utc(3, 30, 22), utc(3, 31, 3))
    assert [started for started, _ in runs] == [
        utc(3, 30, 23),
        utc(3, 31, 0),
        utc(3, 31, 1),
        utc(3, 31, 2),
        utc(3, 31, 3),
    ]
    # Wall clock: 23:00, 00:00, (01:00 does not exist), 02:00, 03:00, 04:00.
    assert [scheduled.hour for _, scheduled in runs] == [23, 0, 2, 3, 4]


async def test_fall_back_runs_the_repeated_time_once() -> None:
    runs = await run_cron("30 1 * * *", "Europe/Dublin", utc(10, 26, 0), utc(10, 29, 0))
    # 01:30 IST (00:30 UTC) on the 26th and 27th (the first of the two 01:30s), 01:30 GMT on the 28th.
    assert [started for started, _ in runs] == [utc(10, 26, 0, 30), utc(10, 27, 0, 30), utc(10, 28, 1, 30)]


async def test_fall_back_hourly_neither_doubles_nor_skips() -> None:
    runs = await run_cron("0 * * * *", "Europe/Dublin", utc(10, 26, 22, 30), utc(10, 27, 4, 30))
    assert [started for started, _ in runs] == [
        utc(10, 26, 23),
        utc(10, 27, 0),
        utc(10, 27, 2),
        utc(10, 27, 3),
        utc(10, 27, 4),
    ]
    # Wall clock: 00:00 IST, 01:00 IST, (01:00 GMT is the repeat), 02:00 GMT, 03:00, 04:00.
    assert [scheduled.hour for _, scheduled in runs] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(("zone", "hour"), [("UTC-6", 6), ("UTC-12", 12), ("UTC+6", 18)])
async def test_posix_style_zone_names_work_as_in_1x(zone: str, hour: int) -> None:
    runs = await run_cron("0 0 * * *", zone, utc(1, 1, 0), utc(1, 1, 23))
    assert [started for started, _ in runs] == [utc(1, 1, hour)]


async def test_offset_names_with_minutes_and_gmt_work_as_in_1x() -> None:
    runs = await run_cron("0 0 * * *", "UTC+05:30", utc(1, 1, 0), utc(1, 1, 23))
    assert [started for started, _ in runs] == [utc(1, 1, 18, 30)]
    runs = await run_cron("0 0 * * *", "GMT-3", utc(1, 1, 0), utc(1, 1, 23))
    assert [started for started, _ in runs] == [utc(1, 1, 3)]


@pytest.mark.parametrize(
    "zone",
    [
        "/etc/localtime",  # an absolute file path: dateutil would open it
        "/usr/share/zoneinfo/Europe/Dublin",
        "../../../../etc/localtime",
        "Europe/../../../etc/localtime",
        "EST+5EDT,M3.2.0/2,M11.1.0/2",  # a POSIX TZ rule, not a 1.x offset name
        "utc+3",  # dateutil reads this as POSIX (three hours *behind*): refused, not silently inverted
        "UTC+25",
        "Mars/Olympus_Mons",
    ],
)
def test_only_iana_names_and_offset_forms_are_time_zones(zone: str) -> None:
    app = Pyncette()
    with pytest.raises(ValueError, match=r"task 'job': timezone: unknown timezone .*expected an IANA name"):

        @app.task(schedule="0 0 * * *", timezone=zone)
        async def job(context: Context) -> None: ...
