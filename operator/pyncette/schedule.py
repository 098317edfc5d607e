"""Cron, interval and one-off schedules: validation and "when is the next run".

Cron expressions are parsed by croniter: five fields, or six with a seconds field *last*
(``"* * * * * */10"`` runs every ten seconds), and the ``@hourly``/``@daily``/``@weekly``/
``@monthly``/``@yearly`` aliases. Time zone names are IANA names (``Europe/Dublin``, resolved by
``zoneinfo``) or pyncette 1.x's fixed-offset forms ``UTC+12``, ``GMT-5``, ``UTC+05:30`` (resolved
by dateutil's ``tz.gettz`` as 1.x did). Nothing else reaches dateutil: it would also open any file
given as an absolute path, and a task's time zone may come from an untrusted source (a
PyncetteTask written by a tenant).

Daylight saving time: a cron schedule with a ``timezone`` follows the wall clock of that zone.
When clocks go forward, a wall-clock time that does not exist that day (02:30 in Europe/Dublin on
the last Sunday of March) is not run; when clocks go back, the repeated hour is run once, at its
first occurrence. Interval schedules are pure elapsed time and ignore time zones.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from typing import Any

import dateutil.tz
from croniter import croniter

UTC = datetime.UTC

# pyncette 1.x's fixed-offset names: UTC or GMT, a sign, hours (0-23), optional minutes.
_OFFSET_NAME = re.compile(r"(?:UTC|GMT)[+-](?:[01]?[0-9]|2[0-3])(?::?[0-5][0-9])?")


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
    """The tzinfo for a name (UTC when None); ValueError for an unknown name.

    IANA names go to ``zoneinfo`` (dateutil's tzfile mishandles zones with negative DST such as
    Europe/Dublin, and ``zoneinfo`` never opens a file outside its time zone database). The 1.x
    forms ``UTC+12``/``GMT-5``/``UTC+05:30`` go to dateutil's ``tz.gettz`` like pyncette 1.x. Any
    other name (an absolute file path, a POSIX TZ rule) is refused.
    """
    if name is None:
        return UTC
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"unknown timezone {name!r}")
    if _OFFSET_NAME.fullmatch(name):
        zone = dateutil.tz.gettz(name)
        if zone is not None:
            return zone
    else:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise ValueError(f"unknown timezone {name!r}: expected an IANA name such as Europe/Dublin, or UTC+N / UTC-N")


def _exists(wall: datetime.datetime, zone: datetime.tzinfo) -> bool:
    """Whether a naive wall-clock time happens in ``zone`` (False inside a spring-forward gap)."""
    there_and_back = wall.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return there_and_back == wall


def next_cron_time(expression: str, after: datetime.datetime, timezone: str | None) -> datetime.datetime | None:
    """The first time strictly after ``after`` that matches ``expression`` in ``timezone`` (UTC result).

    The expression is matched against naive wall-clock times of the zone; a wall-clock time that
    does not exist (clocks went forward) is skipped, and one that exists twice (clocks went back)
    is taken at its first occurrence only.
    """
    zone = resolve_timezone(timezone)
    after_utc = after.astimezone(UTC)
    wall = after_utc.astimezone(zone).replace(tzinfo=None)
    cron: Any = croniter(expression, start_time=wall, ret_type=datetime.datetime)
    for _ in range(_MAX_SKIPPED):
        candidate: datetime.datetime | None = cron.get_next()
        if candidate is None:
            return None
        if zone is not UTC and not _exists(candidate, zone):
            continue  # inside the gap when clocks go forward
        result = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if result > after_utc:  # not: the first occurrence of a repeated wall time already passed
            return result
    return None


# Candidates skipped at most while looking for the next time (a seconds-resolution cron inside a
# repeated hour skips up to 3600): a bound against looping forever on a pathological zone.
_MAX_SKIPPED = 10_000
