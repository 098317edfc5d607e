"""The circuit breaker: ``spec.suspendAfterFailures: N`` stops a task after N failed runs in a row.

A run counts once it is settled: failed after all its retries (``backoffLimit``), or succeeded
(which resets the count). Run-now runs are not counted: they are not slots of the schedule. When
the count reaches N the task stops scheduling: its backend entry is removed, like a suspended
task's, ``Ready=False`` with reason ``TooManyFailures``, and a ``TooManyFailures`` Warning Event.
It resumes on a new value of the annotation ``pyncette.dev/resume`` (``kubectl ptask resume``) or
any spec change (a new generation): the count starts again from zero, and the schedule from the
most recent slot, as after a suspend.

The state lives in the task's status (``status.circuitBreaker``), never only in a replica's
memory, so it survives restarts and every replica agrees:

* ``consecutiveFailures`` and ``lastSlot``: the count and the scheduled time of the latest run
  counted. A run whose slot is not later than ``lastSlot`` (an older run of an Allow task that
  ends late, or a run counted already by another replica) does not change the count.
* ``updatedAt``: replicas each write what they know; the record changed last wins (the status
  writer merges this replica's record with the observed one by it). A settled run's change is
  written at once, not coalesced, so that the next run, maybe on another replica, counts on it.
* ``trippedAt``, ``trippedGeneration``, ``trippedResume``: present while the task is stopped: the
  time, and the generation and ``pyncette.dev/resume`` value it was stopped at. The task stays
  stopped while both are unchanged.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_time
from pyncette_operator.status import TaskStatus

TOO_MANY_FAILURES = "TooManyFailures"
RESUMED = "Resumed"


def _stamp(now: datetime.datetime) -> str:
    """``updatedAt`` with microseconds: two changes within a second must still order."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_tripped(record: Mapping[str, Any] | None, task: TaskSpec) -> bool:
    """Whether ``record`` stopped ``task`` and nothing has resumed it since."""
    if not record or not record.get("trippedAt"):
        return False
    return record.get("trippedGeneration") == task.generation and str(record.get("trippedResume") or "") == task.resume


def resume_requested(record: Mapping[str, Any] | None, task: TaskSpec) -> bool:
    """Whether ``record`` stopped the task and a new resume value or a spec change has come since."""
    return bool(record and record.get("trippedAt")) and not is_tripped(record, task)


def resumed(state: TaskStatus, *, now: datetime.datetime) -> None:
    """Clears the stop and the count (the task runs again)."""
    last = (state.breaker_record() or {}).get("lastSlot")
    state.breaker = {"consecutiveFailures": 0, "updatedAt": _stamp(now)}
    if last:
        state.breaker["lastSlot"] = last


def settled(
    state: TaskStatus, task: TaskSpec, *, slot: datetime.datetime, succeeded: bool, now: datetime.datetime
) -> bool:
    """Counts one settled scheduled run; returns True when this run stops the task (the count reached N)."""
    record = state.breaker_record() or {}
    last = record.get("lastSlot")
    try:
        if last and parse_time(str(last)) >= slot:
            return False  # an older slot ending late, or this one counted already
    except ValueError:
        pass
    count = 0 if succeeded else int(record.get("consecutiveFailures") or 0) + 1
    updated: dict[str, Any] = {"consecutiveFailures": count, "lastSlot": format_time(slot), "updatedAt": _stamp(now)}
    trip_fields = ("trippedAt", "trippedGeneration", "trippedResume")
    if record.get("trippedAt"):
        updated.update({k: record[k] for k in trip_fields if k in record})
    limit = task.suspend_after_failures
    trips = limit is not None and not succeeded and count >= limit and not is_tripped(record, task)
    if trips:
        updated.update(trippedAt=format_time(now), trippedGeneration=task.generation, trippedResume=task.resume)
    state.breaker = updated
    return trips


def stopped_message(task: TaskSpec, record: Mapping[str, Any] | None) -> str:
    count = (record or {}).get("consecutiveFailures") or task.suspend_after_failures
    return (
        f"stopped after {count} failed runs in a row (suspendAfterFailures: {task.suspend_after_failures});"
        f" resume with kubectl ptask resume {task.name}, a new pyncette.dev/resume value or a spec change"
    )
