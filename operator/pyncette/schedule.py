"""Cron, interval and one-off schedules: validation and "when is the next run".

Cron expressions are parsed by croniter: five fields, or six with a seconds field *last*
(``"* * * * * */10"`` runs every ten seconds), and the ``@hourly``/``@daily``/``@weekly``/
``@monthly``/``@yearly`` aliases. Time zone names are resolved like pyncette 1.x (dateutil's
``tz.gettz``), so IANA names and strings such as ``UTC+12`` work.

Daylight saving time: a cron schedule with a ``timezone`` follows the wall clock of that zone.
When clocks go forward, a wall-clock time that does not exist that day (02:30 in Europe/Dublin on
the last Sunday of March) is not run; when clocks go back, the repeated hour is run once, at its
first occurrence. Interval schedules are pure elapsed time and ignore time zones.
"""

from __future__ import annotations

import datetime
from typing import Any

import dateutil.tz
from croniter import croniter

UTC = datetime.UTC


def check_cron(expression: str) -> None:
    """Raises ValueError with croniter's explanation if ``expression`` is not a valid cron line."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValueError("empty cron expression")
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise ValueError(f"invalid cron expression {expression!r}: expected 5 or 6 fields, got {len(fields)}")
    try:
        croniter.expand(expression)
    except Exception as e:  # croniter raises several error types, all subclasses of ValueError or KeyError
        raise ValueError(f"invalid cron expression {expression!r}: {e}") from None


def resolve_timezone(name: str | None) -> datetime.tzinfo:
    """The tzinfo for a name (UTC when None); ValueError for an unknown name."""
    if name is None:
        return UTC
    zone = dateutil.tz.gettz(name) if isinstance(name, str) and name.strip() else None
    if zone is None:
        raise ValueError(f"unknown timezone {name!r}")
    return zone


def next_cron_time(
    expression: str, after: datetime.datetime, timezone: str | None
) -> datetime.datetime | None:
    """The first time strictly after ``after`` that matches ``expression`` in ``timezone`` (UTC result)."""
    zone = resolve_timezone(timezone)
    start = after.astimezone(zone)
    cron: Any = croniter(expression, start_time=start, ret_type=datetime.datetime)
    nxt = cron.get_next()
    if nxt is None:
        return None
    result: datetime.datetime = nxt.astimezone(UTC)
    # croniter may return a time that is not after the start around DST folds; never go backwards.
    guard = 0
    while result <= after.astimezone(UTC) and guard < 4:
        nxt = cron.get_next()
        result = nxt.astimezone(UTC)
        guard += 1
    return result
