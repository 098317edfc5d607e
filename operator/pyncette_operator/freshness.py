"""Freshness: ``spec.maxSuccessAge`` gives a ``Stale`` condition when the last success is too old.

A task's runs can stop succeeding without any run failing: the operator is down, the task is
suspended or stopped by its circuit breaker, its schedule no longer matches, Pods stay Pending.
So staleness is judged from time alone, never from a run: ``Stale=True`` once now is past
``lastSuccessfulTime + maxSuccessAge`` (or ``creationTimestamp + maxSuccessAge`` when nothing ever
succeeded), with that moment as its ``lastTransitionTime``, and ``Stale=False`` again after the next
success. Every replica re-evaluates its tasks every few seconds (``StatusWriter.refresh_stale``),
so the condition turns even while nothing runs; since the moment is a pure function of the
status, replicas agree on it and write it once each at most.

For alerting there is a gauge per task, ``pyncette_operator_task_stale{namespace,name}`` (1 or 0,
every replica exports it: alert on ``max by (namespace, name)``) and
``pyncette_operator_task_last_success_timestamp_seconds``.
"""

from __future__ import annotations

import datetime

from pyncette_operator.conditions import Condition
from pyncette_operator.spec import format_duration
from pyncette_operator.spec import format_time

STALE = "Stale"


class StaleReason:
    NO_RECENT_SUCCESS = "NoRecentSuccess"
    RECENT_SUCCESS = "RecentSuccess"


def stale_since(
    *, max_age: datetime.timedelta, last_success: datetime.datetime | None, created: datetime.datetime | None
) -> datetime.datetime | None:
    """When the task is (or will be) stale: the last success, else its creation, plus ``max_age``."""
    reference = last_success or created
    return None if reference is None else reference + max_age


def evaluate(
    *,
    max_age: datetime.timedelta,
    last_success: datetime.datetime | None,
    created: datetime.datetime | None,
    now: datetime.datetime,
    generation: int | None = None,
) -> Condition | None:
    """The ``Stale`` condition at ``now`` (None when there is nothing to measure from)."""
    since = stale_since(max_age=max_age, last_success=last_success, created=created)
    if since is None:
        return None
    limit = format_duration(max_age)
    if now >= since:
        if last_success is None:
            message = f"no successful run since the task was created, more than maxSuccessAge ({limit}) ago"
        else:
            finished = format_time(last_success)
            message = f"the last successful run finished at {finished}, more than maxSuccessAge ({limit}) ago"
        return Condition(STALE, True, StaleReason.NO_RECENT_SUCCESS, message, generation, since=since)
    what = f"last success at {format_time(last_success)}" if last_success else "no success yet"
    message = f"{what}; stale after {format_time(since)} without another (maxSuccessAge {limit})"
    return Condition(STALE, False, StaleReason.RECENT_SUCCESS, message, generation)
