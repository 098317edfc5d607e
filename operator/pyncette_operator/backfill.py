"""Backfill: a new value of ``pyncette.dev/backfill: "<start>/<end>"`` runs every slot in that range once.

The slots are the task's own scheduled times (cron with ``H`` resolved and several schedules
merged, or interval steps from ``start``) between start and end, both included; ``end`` must not
be in the future. How it runs:

* The mirror validates the value and registers one backend instance ``namespace/name@backfill:
  <value>`` whose schedule is the task's, anchored just before ``start`` and without catch-up
  collapsing, so its "missed" slots are all due at once and come out one after another, each under
  the backend's lease: one run per slot whatever the number of replicas.
* Each slot runs like a scheduled run with the same deterministic Pod name, so a slot that already
  has a Pod (it ran on schedule, or an earlier backfill ran it) is not run again but counted as
  skipped. A slot of this backfill whose Pod the history limits have pruned is recognised by the
  backend marker of its backfill (``Mirror.mark_backfill_slot_done``, kept a day after the latest
  slot).
* A backfill's Pods carry its value (``pyncette.dev/backfill``). A slot leased again whose Pod is
  this backfill's own (a second replica's registration landed after slots ran and moved the
  instance back, or the lease holder died) is not counted again; under Forbid or Replace a Pod of
  it still running is adopted and its outcome counted, so the next slot still waits for it.
* ``concurrencyPolicy``: Forbid and Replace run the slots one at a time (a backfill never deletes
  its own runs); Allow starts them all, each as soon as the previous one is created.
* A replica that stops for good (kill -9) while following Pods of the backfill cannot count
  their outcomes. Once every slot has started and every Pod of the backfill has ended, the sweep
  of any replica completes it anyway, saying how many outcomes were not observed.
* The instance removes itself after the last slot. The same value seen again (a status echo,
  another replica, a restart) does nothing: ``status.backfill.value`` records it. A new value
  replaces a backfill still in progress.
* An invalid value (syntax, start after end, end in the future, no slot in the range, more than
  ``--backfill-max-slots``, a one-off task) gives a ``InvalidBackfill`` Warning Event and
  ``status.backfill.phase: Invalid``; nothing runs.

Progress lives in ``status.backfill``: ``requested``, ``started``, ``skipped``, ``succeeded``,
``failed``, ``phase`` (Running, Completed, Invalid). Like the circuit breaker's record it is
merged across replicas by ``updatedAt`` and written at once on every change.
"""

from __future__ import annotations

import datetime
from typing import Any

from pyncette.schedule import next_union_time
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_time
from pyncette_operator.status import TaskStatus

STARTED = "BackfillStarted"
COMPLETED = "BackfillCompleted"
INVALID = "InvalidBackfill"


class BackfillError(ValueError):
    """Why a backfill value cannot run (one line, for the Warning Event)."""


def _stamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_window(value: str) -> tuple[datetime.datetime, datetime.datetime]:
    start_text, slash, end_text = value.partition("/")
    if not slash:
        raise BackfillError("expected <RFC 3339 start>/<RFC 3339 end>, e.g. 2026-11-01T00:00:00Z/2026-11-02T00:00:00Z")
    try:
        start, end = parse_time(start_text.strip()), parse_time(end_text.strip())
    except ValueError:
        raise BackfillError(f"expected RFC 3339 times with an offset or Z, got {value!r}") from None
    return start, end


def slots(task: TaskSpec, start: datetime.datetime, end: datetime.datetime, *, limit: int) -> list[datetime.datetime]:
    """The task's scheduled times in [start, end], at most ``limit + 1`` (one more tells "too many")."""
    out: list[datetime.datetime] = []
    if task.cron_expressions:
        following = next_union_time(task.cron_expressions, start - datetime.timedelta(microseconds=1), task.timezone)
        while following is not None and following <= end and len(out) <= limit:
            out.append(following)
            following = next_union_time(task.cron_expressions, following, task.timezone)
    elif task.interval is not None:
        current = start
        while current <= end and len(out) <= limit:
            out.append(current)
            current += task.interval
    return out


def validate(
    task: TaskSpec, value: str, *, now: datetime.datetime, max_slots: int
) -> tuple[datetime.datetime, datetime.datetime, list[datetime.datetime]]:
    """(start, end, slots) of a backfill value, or BackfillError saying what is wrong."""
    if task.execute_at is not None:
        raise BackfillError("a one-off task (spec.executeAt) has no schedule to backfill")
    start, end = parse_window(value)
    if start > end:
        raise BackfillError(f"the start {format_time(start)} is after the end {format_time(end)}")
    if end > now:
        raise BackfillError(f"the end {format_time(end)} is in the future; a backfill covers past scheduled times")
    found = slots(task, start, end, limit=max_slots)
    if not found:
        raise BackfillError(f"no scheduled time of this task between {format_time(start)} and {format_time(end)}")
    if len(found) > max_slots:
        raise BackfillError(f"covers more than {max_slots} scheduled times (--backfill-max-slots); split the range")
    return start, end, found


def registration(task: TaskSpec, start: datetime.datetime) -> dict[str, Any]:
    """The ``schedule_task`` keywords of the backfill instance: the task's schedule from ``start``."""
    kwargs = task.schedule_kwargs()
    step = task.interval if task.interval is not None else datetime.timedelta(microseconds=1)
    kwargs.update(anchor=start - step, catch_up_latest=False)
    return kwargs


def record(state: TaskStatus) -> dict[str, Any] | None:
    """``status.backfill`` as this replica sees it (request, every replica's counts, totals)."""
    return state.backfill_view()


def begin(
    state: TaskStatus,
    value: str,
    *,
    start: datetime.datetime,
    end: datetime.datetime,
    count: int,
    now: datetime.datetime,
) -> None:
    state.backfill = {
        "value": value,
        "start": format_time(start),
        "end": format_time(end),
        "requested": count,
        "phase": "Running",
        "updatedAt": _stamp(now),
    }


def refuse(state: TaskStatus, value: str, message: str, *, now: datetime.datetime) -> None:
    state.backfill = {"value": value, "phase": "Invalid", "message": message, "updatedAt": _stamp(now)}


def count(state: TaskStatus, value: str, what: str, *, replica: str, now: datetime.datetime) -> bool:
    """Adds one to this replica's ``what`` (started, skipped, succeeded, failed) for backfill
    ``value``; True when the backfill has just completed (see ``complete_if_done``)."""
    current = record(state)
    if not current or current.get("value") != value or current.get("phase") == "Invalid":
        return False
    own = state.backfill_counts
    if not own or own.get("value") != value:
        seen = ((current.get("counts") or {}).get(replica)) or {}
        own = {"replica": replica, "value": value, **{k: int(seen.get(k) or 0) for k in _TOTALS}}
    own[what] = int(own.get(what) or 0) + 1
    state.backfill_counts = own
    return complete_if_done(state, now=now)


def complete_if_done(state: TaskStatus, *, now: datetime.datetime) -> bool:
    """Marks a running backfill Completed once every slot is settled (by any replica's counts);
    True when this call did it."""
    current = record(state)
    if not current or current.get("phase") != "Running":
        return False
    settled = sum(int(current.get(k) or 0) for k in ("skipped", "succeeded", "failed"))
    if settled < int(current.get("requested") or 0):
        return False
    top = {k: v for k, v in current.items() if k not in _TOTALS and k != "counts"}
    top.update(phase="Completed", completedAt=format_time(now), updatedAt=_stamp(now))
    state.backfill = top
    return True


def completed_message(state: TaskStatus) -> str:
    """The ``BackfillCompleted`` Event's message for the record as this replica sees it."""
    done = record(state) or {}
    counts = ", ".join(f"{done.get(k, 0)} {k}" for k in ("succeeded", "failed", "skipped"))
    note = f" ({done['message']})" if done.get("message") else ""
    return f"backfill {done.get('value')} completed: {counts} of {done.get('requested')}{note}"


def settle_unfollowed(state: TaskStatus, value: str, *, now: datetime.datetime) -> bool:
    """Completes running backfill ``value`` once every slot has started and every Pod of it has
    ended (the caller checks both), even if some outcomes were never counted: the replica that
    followed those Pods stopped (kill -9) before they ended. The record says how many. True when
    this call completed it."""
    current = record(state)
    if not current or current.get("value") != value or current.get("phase") != "Running":
        return False
    settled = sum(int(current.get(k) or 0) for k in ("skipped", "succeeded", "failed"))
    unobserved = int(current.get("requested") or 0) - settled
    if unobserved <= 0:
        return complete_if_done(state, now=now)
    top = {k: v for k, v in current.items() if k not in _TOTALS and k != "counts"}
    top.update(
        phase="Completed",
        completedAt=format_time(now),
        updatedAt=_stamp(now),
        message=f"the outcome of {unobserved} run(s) was not observed: the replica following them stopped",
    )
    state.backfill = top
    return True


_TOTALS = ("started", "skipped", "succeeded", "failed")
