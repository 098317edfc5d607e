"""Catch-up and retry rules shared by the mirror and the runs (CronJob's and Job's, in one place).

**Missed times.** Every recurring instance is stored with ``catch_up_latest``: when the next
scheduled time after a run is already past (the operator was down, the task suspended, a Forbid run
outlasted the period), the backend's next time is the *most recent* past one, not the oldest, so an
outage of any length costs one catch-up run, never a burst. A lease that still comes back with an
older time (an entry stored before the outage: its next time was computed then) is stale: the run
skips it, and committing it moves the entry to the most recent time, which runs next. Skipped times
are counted (``pyncette_operator_missed_schedules_total``) and reported in a ``MissedSchedules``
Warning Event. ``startingDeadlineSeconds`` additionally skips a run that comes too late.

**Retries.** A failed attempt of one scheduled time is retried up to ``backoffLimit`` times, after
``backoff_delay(n)`` (10 s doubling, capped at 6 min, as a Job). The attempt number of a Pod run is
read from the ``pyncette.dev/attempt`` annotation of that run's Pods (highest + 1), so a replica
that takes a run over continues the count instead of starting again.
"""

from __future__ import annotations

import datetime
import hashlib

from pyncette.schedule import next_union_time
from pyncette.task import Task
from pyncette_operator.spec import TaskSpec

BACKOFF_BASE = datetime.timedelta(seconds=10)
BACKOFF_CAP = datetime.timedelta(minutes=6)
MISSED_COUNT_CAP = 10_000
"""Missed times are counted one by one for cron schedules; beyond this the count says "more than"."""


def backoff_delay(failures: int) -> datetime.timedelta:
    """The wait before the next attempt after ``failures`` failed ones (>= 1): 10 s, 20 s, 40 s ... 6 min."""
    if failures < 1:
        return datetime.timedelta()
    if failures > 10:
        return BACKOFF_CAP
    delay: datetime.timedelta = BACKOFF_BASE * (2 ** (failures - 1))
    return min(delay, BACKOFF_CAP)


def schedule_hash(task: TaskSpec) -> str:
    """What decides *when* a task runs, hashed: the stored instance is rewritten only when it changes."""
    kwargs = sorted(task.schedule_kwargs().items(), key=lambda kv: kv[0])
    return hashlib.sha256(repr(kwargs).encode()).hexdigest()[:16]


def count_between(task: Task, after: datetime.datetime, before: datetime.datetime) -> int:
    """How many scheduled times of ``task`` lie strictly between ``after`` and ``before`` (capped)."""
    if before <= after:
        return 0
    if task.interval is not None:
        steps = -(-(before - after) // task.interval)  # ceil
        return int(min(max(0, steps - 1), MISSED_COUNT_CAP))
    if not task.cron_expressions:
        return 0
    count = 0
    current = after
    while count < MISSED_COUNT_CAP:
        nxt = next_union_time(task.cron_expressions, current, task.timezone)
        if nxt is None or nxt >= before:
            break
        count += 1
        current = nxt
    return count


def stale_slot(task: Task, scheduled_at: datetime.datetime, now: datetime.datetime) -> datetime.datetime | None:
    """A later scheduled time that is already due if ``scheduled_at`` is stale (skip it), else None."""
    if task.interval is None and not task.cron_expressions:
        return None
    later = task.get_next_execution(now, scheduled_at) if task.catch_up_latest else None
    return later if later is not None and later <= now else None
