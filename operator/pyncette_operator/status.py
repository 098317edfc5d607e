"""What each PyncetteTask's status should say, and a writer that bounds how often it is written.

Why coalescing: a task running every second changes its status (lastScheduleTime, active,
Running) twice a second. Writing each change would make apiserver load grow with execution rate.
Instead every change lands in an in-memory ``TaskStatus`` and the ``StatusWriter`` writes a task's
status at most once per ``interval`` (the first change after a quiet period goes out at once, later
ones are merged into the next write), and all writes of the replica share a token bucket. The cap
is therefore ``min(tasks / interval, rate)`` writes per second per replica, whatever the schedules.

How: server-side apply of the status subresource with field manager ``pyncette-operator``. Each
write carries the full status this operator owns (conditions Ready and Running, times, active), so
fields owned by other managers (other condition types) are never touched. Replicas all use the same
manager and merge what they observed from the watch with what they did themselves (times only
move forward), so one replica's write does not roll back another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import heapq
import logging
import time
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from typing import Any

from pyncette_operator import freshness
from pyncette_operator.conditions import READY
from pyncette_operator.conditions import RUNNING
from pyncette_operator.conditions import WAITING
from pyncette_operator.conditions import Condition
from pyncette_operator.conditions import ReadyReason
from pyncette_operator.conditions import RunningReason
from pyncette_operator.conditions import find
from pyncette_operator.conditions import render_condition
from pyncette_operator.ratelimit import TokenBucket
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_time

logger = logging.getLogger(__name__)

Key = tuple[str, str]
Sender = Callable[[str, str, dict[str, Any]], Awaitable[str | None]]
"""``send(namespace, name, {"uid": uid or None, "resourceVersion": rv or None, "status": body})``:
returns the object's new resourceVersion (None if unknown)."""
Reader = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
"""``read(namespace, name)``: the PyncetteTask as the apiserver has it now (None: gone)."""


class ObjectGone(Exception):
    """Raised by a sender when the PyncetteTask no longer exists (its status is dropped)."""


class StaleView(Exception):
    """Raised by a sender when the PyncetteTask changed since the resourceVersion the status was
    built on (another replica wrote it, and this replica's watch has not shown that yet)."""


def _max_time(a: datetime.datetime | None, b: datetime.datetime | None) -> datetime.datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _observed_time(status: Mapping[str, Any], name: str) -> datetime.datetime | None:
    raw = status.get(name)
    if not raw:
        return None
    try:
        return parse_time(str(raw))
    except ValueError:
        return None


_BACKFILL_TOTALS = ("started", "skipped", "succeeded", "failed")


def _request_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """A ``status.backfill`` record without the totals and per-replica counts: the request itself."""
    return {k: v for k, v in record.items() if k not in _BACKFILL_TOTALS and k != "counts"}


MAX_ACTIVE_IN_STATUS = 20
"""``status.active`` lists at most this many runs, the most recently scheduled ones."""


@dataclass
class ActiveRun:
    name: str
    kind: str
    scheduled_at: datetime.datetime
    attempt: int = 1
    """Which attempt of the run is in flight, or waits out its backoff (1: the first). Shown in
    status from the first retry on: a replica that takes a handler run over continues the count
    from there (a Pod run's attempts are on its Pods)."""
    handed_over: bool = False
    """A Pod run handed to the Pod watch at the next scheduled time: never retried, so its Pod's end
    is its outcome, whichever replica finds it (see ``TaskStatus.reconcile_active``)."""

    def render(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "scheduledAt": format_time(self.scheduled_at)}
        if self.attempt > 1:
            out["attempt"] = self.attempt
        if self.handed_over:
            out["handedOver"] = True
        return out


def observed_attempt(item: Mapping[str, Any]) -> int:
    """``attempt`` of a ``status.active`` item as written by any replica (1 if absent or not a number)."""
    raw = item.get("attempt")
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and raw > 1 else 1


@dataclass
class TaskStatus:
    """The status one replica wants a task to have (its own changes over what it observed)."""

    observed: dict[str, Any] = field(default_factory=dict)
    uid: str | None = None
    """The task this status belongs to: writes carry it, so a same-name successor never gets it."""
    resource_version: str | None = None
    """The object's version ``observed`` was seen at (or the one this replica's last write made)."""
    ready: Condition | None = None
    generation: int | None = None
    schedule_text: str | None = None
    next_run_time: datetime.datetime | None = None
    next_run_known: bool = False
    last_schedule_time: datetime.datetime | None = None
    last_successful_time: datetime.datetime | None = None
    last_failure_time: datetime.datetime | None = None
    last_run_now: str | None = None
    active: dict[str, ActiveRun] = field(default_factory=dict)
    finished: dict[str, None] = field(default_factory=dict)
    """Runs this replica saw finish (bounded): a stale echo of ``active`` must not bring them back."""
    max_success_age: datetime.timedelta | None = None
    """``spec.maxSuccessAge`` (set by the mirror): the status then carries a ``Stale`` condition."""
    created_at: datetime.datetime | None = None
    """The task's ``creationTimestamp``: staleness counts from it until a first success."""
    waiting: Condition | None = None
    """``Waiting`` while a run of this task is queued for its concurrency group (None: not shown)."""
    backfill: dict[str, Any] | None = None
    """This replica's latest ``backfill`` request record (see ``pyncette_operator.backfill``), or None."""
    backfill_counts: dict[str, Any] | None = None
    """This replica's own counts of the backfill runs it settled: ``{"replica", "value", "started", ...}``.
    Each replica writes only its own entry of ``status.backfill.counts``, and the totals are their
    sums, so replicas counting at once never overwrite each other's counts."""

    def adopt_newer_backfill(self) -> None:
        """Takes the observed ``backfill`` request record as this replica's own when it is newer
        (by ``updatedAt``). Otherwise the echo of an older write of this replica, delivered after
        another replica's newer record (a Completed one), would bring the older record back."""
        seen = self.observed.get("backfill")
        own = self.backfill
        if own is None or not isinstance(seen, Mapping):
            return
        if str(seen.get("updatedAt") or "") > str(own.get("updatedAt") or ""):
            self.backfill = _request_fields(seen)

    def backfill_view(self) -> dict[str, Any] | None:
        """``status.backfill`` as this replica sees it: the newest request record, every replica's
        counts for that request (its own from memory), and their totals."""
        seen = self.observed.get("backfill")
        seen = dict(seen) if isinstance(seen, Mapping) else None
        record = self.backfill
        if record is None or (
            seen is not None and str(seen.get("updatedAt") or "") > str(record.get("updatedAt") or "")
        ):
            record = seen
        if not record:
            return None
        record = _request_fields(record)
        counts: dict[str, Any] = {}
        for replica, entry in ((seen or {}).get("counts") or {}).items():
            if isinstance(entry, Mapping) and entry.get("value") == record.get("value"):
                counts[str(replica)] = dict(entry)
        own = self.backfill_counts
        if own and own.get("value") == record.get("value"):
            counts[str(own["replica"])] = {k: v for k, v in own.items() if k != "replica"}
        if record.get("phase") != "Invalid":
            for total in _BACKFILL_TOTALS:
                record[total] = sum(int(entry.get(total) or 0) for entry in counts.values())
            record["counts"] = counts
        return record

    breaker: dict[str, Any] | None = None
    """This replica's latest ``circuitBreaker`` record (see ``pyncette_operator.breaker``), or None."""

    def last_success(self) -> datetime.datetime | None:
        return _max_time(self.last_successful_time, _observed_time(self.observed, "lastSuccessfulTime"))

    def stale_condition(self, now: datetime.datetime) -> Condition | None:
        """The ``Stale`` condition now, or None without ``maxSuccessAge``."""
        if self.max_success_age is None:
            return None
        return freshness.evaluate(
            max_age=self.max_success_age,
            last_success=self.last_success(),
            created=self.created_at,
            now=now,
            generation=self.generation,
        )

    def breaker_record(self) -> dict[str, Any] | None:
        """The newer (by ``updatedAt``) of this replica's circuit-breaker record and the observed one."""
        seen = self.observed.get("circuitBreaker")
        seen = dict(seen) if isinstance(seen, Mapping) else None
        if self.breaker is None:
            return seen
        if seen is None or str(seen.get("updatedAt") or "") <= str(self.breaker.get("updatedAt") or ""):
            return dict(self.breaker)
        return seen

    def render(self, now: datetime.datetime) -> dict[str, Any]:
        """The full status this operator owns, ready for server-side apply."""
        obs = self.observed
        out: dict[str, Any] = {}
        generation = self.generation if self.generation is not None else obs.get("observedGeneration")
        if generation is not None:
            out["observedGeneration"] = int(generation)
        text = self.schedule_text or obs.get("scheduleText")
        if text:
            out["scheduleText"] = text
        for key, local in (
            ("lastScheduleTime", self.last_schedule_time),
            ("lastSuccessfulTime", self.last_successful_time),
            ("lastFailureTime", self.last_failure_time),
        ):
            value = _max_time(local, _observed_time(obs, key))
            if value is not None:
                out[key] = format_time(value)
        next_run = self.next_run_time if self.next_run_known else _observed_time(obs, "nextRunTime")
        if next_run is not None:
            out["nextRunTime"] = format_time(next_run)
        breaker = self.breaker_record()
        if breaker:
            out["circuitBreaker"] = breaker
        backfill = self.backfill_view()
        if backfill:
            out["backfill"] = backfill
        run_now = self.last_run_now or obs.get("lastRunNow")
        if run_now:
            out["lastRunNow"] = run_now
        active = sorted(self._merged_active(), key=lambda r: (r.scheduled_at, r.name))
        # Capped: an Allow task whose Pods never end must not grow its status without bound (the
        # object would outgrow etcd's limit and every status write with it). The Running
        # condition still counts them all.
        out["active"] = [run.render() for run in active[-MAX_ACTIVE_IN_STATUS:]]

        previous = obs.get("conditions") or []
        conditions = []
        ready = self.ready
        if ready is None:
            seen = find(previous, READY)
            if seen is not None:
                conditions.append(dict(seen))
        else:
            if ready.reason == ReadyReason.COMPLETED and active:
                # The mirror says "done" once the one-off has started; until its run ends, say so.
                message = "the one-off run has started; it has not ended yet"
                ready = replace(ready, reason=ReadyReason.STARTED, message=message)
            conditions.append(render_condition(ready, previous=find(previous, READY), now=now))
        if active:
            names = ", ".join(run.name for run in active[:3]) + (" …" if len(active) > 3 else "")
            running = Condition(RUNNING, True, RunningReason.RUN_IN_FLIGHT, f"{len(active)} run(s) in flight: {names}")
        else:
            running = Condition(RUNNING, False, RunningReason.IDLE, "no run in flight")
        conditions.append(render_condition(running, previous=find(previous, RUNNING), now=now))
        if self.waiting is not None:
            conditions.append(render_condition(self.waiting, previous=find(previous, WAITING), now=now))
        stale = self.stale_condition(now)
        if stale is not None:
            conditions.append(render_condition(stale, previous=find(previous, freshness.STALE), now=now))
        out["conditions"] = conditions
        return out

    def reconcile_active(
        self,
        alive: Callable[[str, str], bool | None],
        ended: Callable[[str, str], tuple[bool, datetime.datetime] | None],
    ) -> bool:
        """Drops runs that another replica reported in ``active`` and that no longer run:
        ``alive(kind, name)`` says True, False, or None (cannot tell). Returns True if any were dropped.

        ``ended(kind, name)``: (succeeded, when) for a dropped run whose end the cluster shows (its
        Pod finished). That replica may have stopped before it could record it (a Pod it had handed
        to the Pod watch, then a rollout or kill -9), so the outcome counts for
        ``lastSuccessfulTime``/``lastFailureTime`` here: a success always (nothing follows it), a
        failure only for a run marked ``handedOver`` (otherwise a live replica may still retry the
        attempt). Recording it twice is harmless: times only move forward. Events and the circuit
        breaker stay with the replica that ran it (they would be duplicated)."""
        dropped = False
        for item in self.observed.get("active") or []:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not name or name in self.active or name in self.finished:
                continue
            kind = str(item.get("kind") or "Pod")
            if alive(kind, str(name)) is False:
                self.finished[name] = None
                dropped = True
                outcome = ended(kind, str(name))
                if outcome is None:
                    continue
                succeeded, when = outcome
                if succeeded:
                    self.last_successful_time = _max_time(self.last_successful_time, when)
                elif item.get("handedOver") is True:
                    self.last_failure_time = _max_time(self.last_failure_time, when)
        return dropped

    def _merged_active(self) -> list[ActiveRun]:
        merged = dict(self.active)
        for item in self.observed.get("active") or []:
            name = item.get("name") if isinstance(item, Mapping) else None
            if not name or name in merged or name in self.finished:
                continue
            try:
                when = parse_time(str(item.get("scheduledAt")))
            except ValueError:
                continue
            kind, attempt = str(item.get("kind") or "Pod"), observed_attempt(item)
            merged[name] = ActiveRun(name, kind, when, attempt, handed_over=item.get("handedOver") is True)
        return list(merged.values())

    def has_run_at(self, when: datetime.datetime) -> bool:
        """A run scheduled at ``when`` is in flight or waits out a backoff, as far as this replica
        knows: its own runs, and other replicas' ``status.active`` items it has not seen finish."""
        return any(run.scheduled_at == when for run in self._merged_active())

    def observed_run_attempt(self, name: str) -> int:
        """The attempt another replica (or an earlier life of this one) reported for run ``name``
        in ``status.active``: 1 if it is not listed."""
        for item in self.observed.get("active") or []:
            if isinstance(item, Mapping) and item.get("name") == name:
                return observed_attempt(item)
        return 1


class StatusWriter:
    """Coalesces status changes per task and writes them within a per-task interval and a global rate."""

    def __init__(
        self,
        *,
        send: Sender,
        interval: float,
        rate: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        on_write: Callable[[], None] | None = None,
        read: Reader | None = None,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self._send = send
        self._read = read
        self._on_conflict = on_conflict
        self._interval = interval
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._bucket = TokenBucket(rate=rate, burst=burst, monotonic=monotonic)
        self._on_write = on_write
        self._states: dict[Key, TaskStatus] = {}
        self._last_write: dict[Key, float] = {}
        self._scheduled: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._wakeup = asyncio.Event()
        self.writes = 0

    # ---- what changed (called by the mirror and the runs) ----

    def state(self, namespace: str, name: str) -> TaskStatus:
        return self._states.setdefault((namespace, name), TaskStatus())

    def observe(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any] | None,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> None:
        """Records the status seen in a watch event (no write). A different ``uid`` than before means
        the task was deleted and re-created under the same name: nothing of the old one is kept.
        ``resource_version`` is the object's version with that status: the next write applies only
        to it, so it never removes what another replica wrote after it."""
        key = (namespace, name)
        current = self._states.get(key)
        if uid and current is not None and current.uid and current.uid != uid:
            self.forget(namespace, name)
        state = self.state(namespace, name)
        if uid:
            state.uid = uid
        state.observed = dict(status or {})
        state.resource_version = resource_version
        state.adopt_newer_backfill()

    def states(self) -> list[tuple[Key, TaskStatus]]:
        return list(self._states.items())

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._states.pop(key, None)
        self._scheduled.pop(key, None)
        self._last_write.pop(key, None)

    def changed(self, namespace: str, name: str, *, urgent: bool = False) -> None:
        """Asks for a write of this task's status: now if the last was ``interval`` ago, else then.

        ``urgent`` skips the per-task interval (still within the global rate); it is for the rare
        writes whose delay would cause a wrong decision (a run-now or one-off that has started).
        """
        key = (namespace, name)
        now = self._monotonic()
        last = self._last_write.get(key)
        due = now if urgent or last is None else max(now, last + self._interval)
        current = self._scheduled.get(key)
        if current is not None and current <= due:
            return
        self._scheduled[key] = due
        heapq.heappush(self._heap, (due, key))
        self._wakeup.set()

    def refresh_stale(self) -> list[tuple[str, str, bool, datetime.datetime | None]]:
        """Re-evaluates ``Stale`` for every task with ``maxSuccessAge``, asking for a write where it
        differs from the status seen; returns (namespace, name, stale, last success) of each."""
        now = self._wall_clock()
        out = []
        for key, state in list(self._states.items()):
            condition = state.stale_condition(now)
            if condition is None:
                continue
            seen = find(state.observed.get("conditions"), freshness.STALE)
            if seen is None or seen.get("status") != condition.status_text:
                self.changed(*key, urgent=True)
            out.append((key[0], key[1], condition.status, state.last_success()))
        return out

    # ---- the writing loop ----

    def pending(self) -> int:
        return len(self._scheduled)

    async def flush_due(self) -> float | None:
        """Writes every task whose time has come (rate permitting); returns seconds until the next, or None."""
        while self._heap:
            due, key = self._heap[0]
            if self._scheduled.get(key) != due:
                heapq.heappop(self._heap)  # superseded by an earlier or a finished schedule
                continue
            now = self._monotonic()
            if due > now:
                return due - now
            wait = self._bucket.wait_time()
            if wait > 0:
                return wait
            self._bucket.try_take()
            heapq.heappop(self._heap)
            del self._scheduled[key]
            await self._write(key)
        return None

    async def _write(self, key: Key) -> None:
        state = self.state(*key)
        self._last_write[key] = self._monotonic()
        if state.resource_version is None and self._read is not None:
            # Nothing observed yet (a run taken over before the watch listed its task): read first,
            # so that even this write cannot remove what another replica wrote.
            seen = await self._reread(key, state)
            if seen != "fresh":
                self._not_written(key, seen)
                return
        for fresh in (False, True):
            body = state.render(self._wall_clock())
            request = {"uid": state.uid, "resourceVersion": state.resource_version, "status": body}
            try:
                version = await self._send(key[0], key[1], request)
            except ObjectGone:
                self.forget(*key)
                return
            except StaleView:
                if self._on_conflict is not None:
                    self._on_conflict()
                seen = None if fresh else await self._reread(key, state)
                if seen == "fresh":
                    continue  # built again on what the apiserver has now
                if seen is None:
                    logger.info("The status of %s/%s changed meanwhile; writing it later", key[0], key[1])
                self._not_written(key, seen)
                return
            except Exception as e:
                logger.warning("Writing the status of %s/%s failed, retrying later: %s", key[0], key[1], e)
                self.changed(*key)
                return
            break
        self.writes += 1
        if self._on_write is not None:
            self._on_write()
        # What we wrote is now what the next write builds on, even before the watch echoes it.
        state.observed = {**state.observed, **body}
        state.resource_version = version

    def _not_written(self, key: Key, seen: str | None) -> None:
        """A write that did not happen after a re-read (``_reread``): the task is forgotten if it is
        gone, else written again later."""
        if seen == "gone":
            self.forget(*key)
        else:
            self.changed(*key)

    async def _reread(self, key: Key, state: TaskStatus) -> str | None:
        """After a StaleView: observes the task's status as the apiserver has it now ("fresh"), or
        finds the task deleted or re-created under its name ("gone"); None if it cannot be read."""
        if self._read is None:
            return None
        try:
            current = await self._read(*key)
        except Exception as e:
            logger.warning("Reading %s/%s back after a conflicting status write failed: %s", key[0], key[1], e)
            return None
        meta = (current or {}).get("metadata") or {}
        if current is None or (state.uid and meta.get("uid") != state.uid):
            return "gone"
        uid = state.uid or meta.get("uid")
        self.observe(key[0], key[1], current.get("status"), uid=uid, resource_version=meta.get("resourceVersion"))
        return "fresh"

    async def run(self) -> None:
        while True:
            wait = await self.flush_due()
            self._wakeup.clear()
            if wait is None:
                await self._wakeup.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=wait)

    async def close(self) -> None:
        """Writes everything still pending, ignoring the per-task interval (used at shutdown)."""
        for key in list(self._scheduled):
            self._scheduled.pop(key, None)
            await self._write(key)
