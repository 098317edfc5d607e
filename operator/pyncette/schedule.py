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

Several schedules: a task may have a list of cron expressions (one time zone for all). It runs at
every time any of them matches, once per distinct time: two expressions matching the same minute
give one run, and the next time is the earliest of their next times (``next_union_time``).

Spread: Jenkins-style ``H`` items in a cron field (``H * * * *``, ``H(0-29)/10 * * * *``,
``H H * * *``) stand for a value hashed from a seed (the task's or instance's name), so many tasks
written the same way do not all start at the same minute, and each keeps its minute across
restarts, processes and versions. ``spread_cron`` resolves them into a plain cron expression
before anything else reads it. The hash is SHA-256 of the seed and the field's position, never
Python's ``hash()`` (salted per process) nor croniter's own ``hash_id`` (CRC-32 shifted per field:
the fields of one task are correlated, and its formula is croniter's to change). ``H`` in the
day-of-month field picks from 1-28, so the day exists in every month.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import re
import zoneinfo
from collections.abc import Sequence
from typing import Any

import dateutil.tz
from croniter import croniter

from pyncette.errors import InvalidCronError

UTC = datetime.UTC

# pyncette 1.x's fixed-offset names: UTC or GMT, a sign, hours (0-23), optional minutes.
_OFFSET_NAME = re.compile(r"(?:UTC|GMT)[+-](?:[01]?[0-9]|2[0-3])(?::?[0-5][0-9])?")


def check_cron(expression: str, timezone: str | None = None) -> None:
    """Raises ``InvalidCronError`` unless ``expression`` parses *and* a next run time can be computed.

    Parsing alone accepts expressions no date ever matches (``0 0 30 2 *``, 30 February); those
    would fail at every poll instead, so the next time after now is computed here (in ``timezone``,
    which must be valid) and its absence is an error too. An expression that has a next time now has
    one forever (there is no year field), so a success is remembered per expression and zone:
    thousands of instances sharing one schedule are checked once.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidCronError(f"empty cron expression, got {expression!r}")
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise InvalidCronError(f"invalid cron expression {expression!r}: expected 5 or 6 fields, got {len(fields)}")
    _check_computable(expression, timezone)


@functools.lru_cache(maxsize=4096)
def _check_computable(expression: str, timezone: str | None) -> None:
    try:
        following = next_cron_time(expression, datetime.datetime.now(UTC), timezone)
    except Exception as e:
        try:
            croniter.expand(expression)  # for croniter's own words on what does not parse
        except Exception as parse_error:  # several error types, all subclasses of ValueError or KeyError
            raise InvalidCronError(f"invalid cron expression {expression!r}: {parse_error}") from None
        raise InvalidCronError(f"invalid cron expression {expression!r}: no next run time ({e})") from None
    if following is None:
        raise InvalidCronError(f"invalid cron expression {expression!r}: no next run time")


# Per field position (seconds are the optional sixth field, last): its name, and the range ``H``
# picks from when no range is given (day of month: 1-28, which every month has) and the bounds an
# explicit ``H(a-b)`` range must stay within.
_FIELDS: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("minute", (0, 59), (0, 59)),
    ("hour", (0, 23), (0, 23)),
    ("day of month", (1, 28), (1, 31)),
    ("month", (1, 12), (1, 12)),
    ("day of week", (0, 6), (0, 6)),
    ("second", (0, 59), (0, 59)),
)
_HASHED = re.compile(r"H(?:\((\d+)-(\d+)\))?(?:/(\d+))?")


def spread_cron(expression: str, seed: str) -> str:
    """``expression`` with every Jenkins-style ``H`` item replaced by a value hashed from ``seed``.

    ``H`` is one value of the field; ``H(a-b)`` one value in a..b; ``H/n`` every n-th value from an
    offset below n; ``H(a-b)/n`` the same within a..b. So ``H * * * *`` becomes, say, ``37 * * * *``
    and ``H(0-29)/10 * * * *`` becomes ``4-29/10 * * * *`` (minutes 4, 14, 24). Expressions
    without ``H`` are returned unchanged; a malformed ``H`` item raises ValueError naming the field.
    """
    if not isinstance(expression, str) or "H" not in expression or expression.lstrip().startswith("@"):
        return expression
    fields = expression.split()
    if len(fields) not in (5, 6):
        return expression  # check_cron says what is wrong
    resolved = []
    for position, text in enumerate(fields):
        if "H" not in text:
            resolved.append(text)
            continue
        items = []
        for item in text.split(","):
            if not item.startswith("H"):
                items.append(item)
                continue
            items.append(_resolve_hashed(item, seed=seed, position=position, expression=expression))
        resolved.append(",".join(items))
    return " ".join(resolved)


def _resolve_hashed(item: str, *, seed: str, position: int, expression: str) -> str:
    name, default, bounds = _FIELDS[position]

    def bad(problem: str) -> ValueError:
        return ValueError(f"invalid cron expression {expression!r}: {name} field {item!r}: {problem}")

    match = _HASHED.fullmatch(item)
    if match is None:
        raise bad("expected H, H(a-b), H/n or H(a-b)/n")
    low, high = default
    if match.group(1) is not None:
        low, high = int(match.group(1)), int(match.group(2))
        if not bounds[0] <= low <= high <= bounds[1]:
            raise bad(f"the range must be within {bounds[0]}-{bounds[1]} and not descending")
    digest = hashlib.sha256(f"{seed}\0{position}".encode()).digest()
    number = int.from_bytes(digest, "big")
    if match.group(3) is None:
        return str(low + number % (high - low + 1))
    step = int(match.group(3))
    if step < 1:
        raise bad("the step must be at least 1")
    start = low + number % min(step, high - low + 1)
    return str(start) if start + step > high else f"{start}-{high}/{step}"


def next_union_time(
    expressions: Sequence[str], after: datetime.datetime, timezone: str | None
) -> datetime.datetime | None:
    """The first time strictly after ``after`` that matches any of ``expressions`` (see ``next_cron_time``)."""
    times = [t for t in (next_cron_time(e, after, timezone) for e in expressions) if t is not None]
    return min(times, default=None)


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


@functools.lru_cache(maxsize=4096)
def next_cron_time(expression: str, after: datetime.datetime, timezone: str | None) -> datetime.datetime | None:
    """The first time strictly after ``after`` that matches ``expression`` in ``timezone`` (UTC result).

    The expression is matched against naive wall-clock times of the zone; a wall-clock time that
    does not exist (clocks went forward) is skipped, and one that exists twice (clocks went back)
    is taken at its first occurrence only.

    Remembered (a pure function of its arguments): one execution asks for the same next time
    where its entry is moved forward and again for the main loop's wake-up hint, and croniter takes
    a few hundred microseconds to answer.
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


def latest_cron_time(
    expression: str, at_or_before: datetime.datetime, timezone: str | None
) -> datetime.datetime | None:
    """The last time at or before ``at_or_before`` that matches ``expression`` (the rules of
    ``next_cron_time``: times inside a forward gap do not exist, repeated ones count once), or None."""
    zone = resolve_timezone(timezone)
    limit = at_or_before.astimezone(UTC)
    # Start a second later: croniter's get_prev is strictly before its start time.
    wall = (limit + datetime.timedelta(seconds=1)).astimezone(zone).replace(tzinfo=None, microsecond=0)
    cron: Any = croniter(expression, start_time=wall, ret_type=datetime.datetime)
    for _ in range(_MAX_SKIPPED):
        candidate: datetime.datetime | None = cron.get_prev()
        if candidate is None:
            return None
        if zone is not UTC and not _exists(candidate, zone):
            continue
        result = candidate.replace(tzinfo=zone, fold=0).astimezone(UTC)
        if result <= limit:
            return result
    return None


# Candidates skipped at most while looking for the next time (a seconds-resolution cron inside a
# repeated hour skips up to 3600): a bound against looping forever on a pathological zone.
_MAX_SKIPPED = 10_000
