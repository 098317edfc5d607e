"""Mirroring: every PyncetteTask becomes one dynamic task instance in the backend.

Level-triggered and idempotent. Each watch event (from kopf, on every replica, no leader) brings
the backend in line with the object as it is now:

* valid, not suspended → the instance ``namespace/name`` exists with the object's uid and
  generation (written only when the stored one differs, so replicas seeing the same event do not
  all write, and status-only events cost nothing);
* invalid → no instance, Ready=False with the reason, one Warning Event per generation;
* suspended, or a one-off that already ran → no instance;
* deleted → no instance (its Pods go by ownerReference garbage collection).

A spec change applies from the next run: the stored instance is replaced (``force=True``) unless a
run holds its lease; then the key is marked dirty and retried every few seconds until the run ends.
Runs themselves read the *latest* spec from this mirror's cache (fed by the same watch), so a new
podTemplate or handler args are used by the very next run even before the retry lands.

The periodic ``sweep`` repairs drift the watch cannot see: entries whose PyncetteTask is gone
(deleted while no operator ran) are removed, and tasks the backend lacks (a wiped backend) are
registered again. It compares a fresh LIST with the backend's own listing, never the cache.

"Run now": a new value of the ``pyncette.dev/run-now`` annotation registers a one-off instance
``namespace/name@run-now:value`` due now. ``status.lastRunNow`` records the value once its run has
started, so neither another replica nor a restart runs it twice. One race is left to the backend:
a replica whose cache lags registers the instance again just after its run committed (a one-off is
deleted then). The new instance has a later time, so its Pod would have another name: instead, a
run-now run that has ended leaves a ``namespace/name@run-now-done:value`` marker in the backend
before its commit (kept a day, then it removes itself), and a run-now instance whose marker exists
is skipped. A backfill request has the same race (its late registration starts again from the
first slot): Pod slots find their Pods, which carry the backfill, and every slot is checked against
``namespace/name@backfill-done:value``, which records the latest slot that ended (for a Pod slot:
whose run is over or handed to a watcher), so a slot whose Pod the history limits pruned does not
run again either.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyncette.errors import InvalidScheduleError
from pyncette.errors import TaskLockedException
from pyncette.model import TaskState
from pyncette.pyncette import PyncetteContext
from pyncette.task import Task
from pyncette_operator import backfill
from pyncette_operator import breaker
from pyncette_operator.conditions import READY
from pyncette_operator.conditions import Condition
from pyncette_operator.conditions import ReadyReason
from pyncette_operator.conditions import find
from pyncette_operator.events import EventReason
from pyncette_operator.events import EventRecorder
from pyncette_operator.events import ObjectRef
from pyncette_operator.kube import Kube
from pyncette_operator.metrics import Metrics
from pyncette_operator.runs.catchup import MISSED_COUNT_CAP
from pyncette_operator.runs.catchup import backoff_delay
from pyncette_operator.runs.catchup import count_between
from pyncette_operator.runs.catchup import schedule_hash
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.pods import PodView
from pyncette_operator.spec import InvalidTask
from pyncette_operator.spec import Reason
from pyncette_operator.spec import TaskPolicy
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import backfill_done_key
from pyncette_operator.spec import backfill_key
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_task
from pyncette_operator.spec import parse_time
from pyncette_operator.spec import run_now_done_key
from pyncette_operator.spec import run_now_key
from pyncette_operator.spec import split_instance_name
from pyncette_operator.spec import task_key
from pyncette_operator.status import StatusWriter

logger = logging.getLogger(__name__)

Fingerprint = tuple[str, str]
DONE_MARKER_MEMORY = datetime.timedelta(days=1)
"""How long the run-now and backfill markers are kept (from their first write): far longer than a
replica's registration can lag. A replica that comes back later finds ``status.lastRunNow`` or
``status.backfill`` set, and registers nothing."""

_KEPT_METADATA = ("name", "namespace", "uid", "generation", "annotations", "creationTimestamp")


class _WriteNeeded(Exception):
    """The backend entry must be created or replaced: first read the task back from the apiserver.

    A replica's copy of a task can be older than what another replica already acted on (its watch
    lags, or kopf's first listing is processed after a suspend another replica applied). Writing
    from that copy would bring back an entry the other replica removed, anchored on a stale
    ``lastScheduleTime``, and run a slot again. Entries are written rarely (new task, changed
    schedule, wiped backend), so each write costs one GET and is made from the current object.
    """


@dataclass
class Cached:
    body: dict[str, Any]
    parsed: TaskSpec | InvalidTask
    uid: str


class Mirror:
    def __init__(
        self,
        *,
        template: Task,
        status: StatusWriter,
        events: EventRecorder,
        handlers: HandlerRegistry,
        kube: Kube,
        metrics: Metrics,
        namespaces: Collection[str] | None,
        policy: TaskPolicy,
    ) -> None:
        self._template = template
        self._status = status
        self._events = events
        self._handlers = handlers
        self._kube = kube
        self._metrics = metrics
        self._namespaces = None if namespaces is None else frozenset(namespaces)
        self._policy = policy
        self._ctx: PyncetteContext | None = None
        self._cache: dict[str, Cached] = {}
        self._invalid: set[str] = set()
        self._fingerprints: dict[str, Fingerprint] = {}
        self._dirty: set[str] = set()
        self._invalid_reported: dict[str, tuple[int, str]] = {}
        self._run_now_registered: dict[str, str] = {}
        self._backfill_registered: dict[str, str] = {}
        self._lock: dict[str, asyncio.Lock] = {}
        self.leased: set[str] | None = None
        """Instances the last sweep found leased (runs in flight somewhere); None before the first."""
        self.created = 0
        """Instances this replica created in the backend (not updates): the sweep reports re-registrations."""

    def bind(self, ctx: PyncetteContext) -> None:
        self._ctx = ctx

    @property
    def ctx(self) -> PyncetteContext:
        if self._ctx is None:
            raise RuntimeError("the mirror is not bound to a running Pyncette app yet")
        return self._ctx

    # ---- the cache the runs read ----

    def cached(self, namespace: str, name: str) -> Cached | None:
        return self._cache.get(task_key(namespace, name))

    def cached_by_uid(self, namespace: str, uid: str) -> Cached | None:
        """The cached task of that namespace with that uid (a Pod's owner), or None."""
        for key, cached in self._cache.items():
            if cached.uid == uid and key.startswith(f"{namespace}/"):
                return cached
        return None

    async def current(self, namespace: str, name: str) -> Cached | None:
        """The latest known state of a task: the watch cache, or a GET if the watch has not seen it."""
        cached = self.cached(namespace, name)
        if cached is not None:
            return cached
        body = await self._kube.get_task(namespace, name)
        if body is None:
            return None
        return self._parse(body)

    async def refresh_status(self, namespace: str, name: str, uid: str) -> None:
        """Reads the task's status from the apiserver now, past a watch that may lag: for decisions
        that another replica's last status write changes (which attempt a taken-over run is at).
        A failed read leaves what the watch showed."""
        try:
            body = await self._kube.get_task(namespace, name)
        except Exception as e:
            logger.warning("Cannot read PyncetteTask %s/%s: %s: %s", namespace, name, type(e).__name__, e)
            return
        meta = (body or {}).get("metadata") or {}
        if body is not None and str(meta.get("uid") or "") == uid:
            self._status.observe(
                namespace, name, body.get("status"), uid=uid, resource_version=meta.get("resourceVersion")
            )

    def _parse(self, body: Mapping[str, Any]) -> Cached:
        meta = body.get("metadata") or {}
        parsed = parse_task(body, handlers=self._handlers.names(str(meta.get("namespace") or "")), policy=self._policy)
        # Keep only what reconciling needs (not managedFields and the like): 10k tasks stay small.
        slim = {
            "metadata": {k: meta[k] for k in _KEPT_METADATA if k in meta},
            # A spec refused for its size is not kept: N replicas x many tasks x the limit adds up.
            "spec": None
            if isinstance(parsed, InvalidTask) and parsed.reason == Reason.SPEC_TOO_LARGE
            else body.get("spec"),
            "status": body.get("status"),
        }
        cached = Cached(slim, parsed, str(meta.get("uid") or ""))
        key = task_key(meta.get("namespace", ""), meta.get("name", ""))
        self._cache[key] = cached
        if isinstance(parsed, InvalidTask):
            self._invalid.add(key)
        else:
            self._invalid.discard(key)
        return cached

    def invalid_count(self) -> int:
        return len(self._invalid)

    def __len__(self) -> int:
        return len(self._cache)

    # ---- watch events ----

    async def on_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Handles one kopf watch event; never raises (a bad object must not stop the watch)."""
        meta = body.get("metadata") or {}
        key = task_key(meta.get("namespace", ""), meta.get("name", ""))
        lock = self._lock.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if event_type == "DELETED":
                    await self._remove(meta.get("namespace", ""), meta.get("name", ""))
                else:
                    await self._reconcile(body, verified=False)
        except Exception:
            logger.exception("Mirroring %s failed; retrying later", key)
            self._dirty.add(key)
        finally:
            if event_type == "DELETED":
                self._lock.pop(key, None)
            self._metrics.invalid_tasks.set(self.invalid_count())

    async def _remove(self, namespace: str, name: str) -> None:
        key = task_key(namespace, name)
        cached = self._cache.pop(key, None)
        self._invalid.discard(key)
        self._dirty.discard(key)
        self._invalid_reported.pop(key, None)
        await self._unschedule(key)
        value = self._run_now_registered.pop(key, None)
        if value is None and cached is not None and isinstance(cached.parsed, TaskSpec):
            value = cached.parsed.run_now
        if value:
            await self._unschedule(run_now_key(namespace, name, value))
        filled = self._backfill_registered.pop(key, None)
        if filled is None and cached is not None and isinstance(cached.parsed, TaskSpec):
            filled = cached.parsed.backfill
        if filled:
            await self._unschedule(backfill_key(namespace, name, filled))
        self._status.forget(namespace, name)
        self._events.forget(namespace, name)
        logger.info("PyncetteTask %s deleted: schedule removed", key)

    async def _unschedule(self, instance: str) -> None:
        self._fingerprints.pop(instance, None)
        await self.ctx.unschedule_task(self._template, instance)
        self._metrics.count("registrations", action="unschedule")

    async def _reconcile(self, body: Mapping[str, Any], *, verified: bool) -> None:
        """Brings the backend and the status in line with ``body``; ``verified``: it was just read back."""
        cached = self._parse(body)
        meta = body.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        key = task_key(namespace, name)
        generation = int(meta.get("generation") or 0)
        self._status.observe(
            namespace, name, body.get("status"), uid=cached.uid, resource_version=meta.get("resourceVersion")
        )
        state = self._status.state(namespace, name)
        previous_ready = state.ready
        parsed = cached.parsed
        ref = ObjectRef(namespace, name, cached.uid)

        if isinstance(parsed, InvalidTask):
            if key in self._fingerprints or key not in self._invalid_reported:
                await self._unschedule(key)
            self._dirty.discard(key)
            state.generation = generation
            state.ready = Condition(READY, False, parsed.reason, parsed.message, generation)
            state.next_run_time, state.next_run_known = None, True
            seen = find((body.get("status") or {}).get("conditions"), READY) or {}
            if (seen.get("status"), seen.get("reason"), seen.get("observedGeneration")) == (
                "False",
                parsed.reason,
                generation,
            ):
                self._invalid_reported[key] = (
                    generation,
                    parsed.reason,
                )  # reported before (another replica, a restart)
            if self._invalid_reported.get(key) != (generation, parsed.reason):
                self._invalid_reported[key] = (generation, parsed.reason)
                self._events.record(
                    ref, reason=EventReason.INVALID_SPEC, message=parsed.message, warning=True, force=True
                )
                logger.warning("PyncetteTask %s is invalid (%s): %s", key, parsed.reason, parsed.message)
            self._status.changed(namespace, name, urgent=previous_ready != state.ready)
            return
        self._invalid_reported.pop(key, None)
        state.generation = generation
        state.schedule_text = parsed.describe_schedule()
        state.max_success_age = parsed.max_success_age
        created = meta.get("creationTimestamp")
        try:
            state.created_at = parse_time(str(created)) if created else None
        except ValueError:
            state.created_at = None

        record = state.breaker_record()
        if not parsed.suspend and breaker.is_tripped(record, parsed):
            await self._unschedule(key)  # stopped by the circuit breaker, like a suspend (runs in flight finish)
            self._dirty.discard(key)
            message = breaker.stopped_message(parsed, record)
            state.ready = Condition(READY, False, breaker.TOO_MANY_FAILURES, message, generation)
            state.next_run_time, state.next_run_known = None, True
            self._status.changed(namespace, name, urgent=previous_ready != state.ready)
            return
        if breaker.resume_requested(record, parsed):
            breaker.resumed(state, now=self.ctx.clock.now())
            how = (
                "a new pyncette.dev/resume value"
                if parsed.generation == (record or {}).get("trippedGeneration")
                else "a spec change"
            )
            self._events.record(ref, reason=EventReason.RESUMED, message=f"resumed by {how}; failures counted from 0")
            logger.info("PyncetteTask %s resumed after the circuit breaker stopped it (%s)", key, how)
            self._status.changed(namespace, name, urgent=True)

        if parsed.suspend or self._one_off_done(parsed, body):
            # A one-off that started but has not ended keeps its entry: its lease may be held (for
            # failureMode), or released at a rollout or expired after a crash, for the replica that
            # takes the run over. It is not registered again either: its run may have ended already.
            if parsed.suspend or not (
                (parsed.execute_at is not None and state.has_run_at(parsed.execute_at)) or await self._leased(key)
            ):
                await self._unschedule(key)
            self._dirty.discard(key)
            reason = ReadyReason.SUSPENDED if parsed.suspend else ReadyReason.COMPLETED
            message = "suspended: no new runs start" if parsed.suspend else "the one-off run has run"
            state.ready = Condition(READY, True, reason, message, generation)
            state.next_run_time, state.next_run_known = None, True
        else:
            try:
                next_run = await self._ensure_registered(parsed, body, verified=verified)
            except _WriteNeeded:
                await self._reconcile_current(key)
                return
            except TaskLockedException:
                logger.info("PyncetteTask %s changed while a run holds its lease; applying after the run", key)
                self._dirty.add(key)
            except InvalidScheduleError as e:
                # Not the backend's fault and not cured by retrying: reported like a spec problem,
                # once per generation, and retried only when the object changes.
                self._dirty.discard(key)
                problem = f"spec.schedule: {e}"
                state.ready = Condition(READY, False, Reason.INVALID_SCHEDULE, problem, generation)
                state.next_run_time, state.next_run_known = None, True
                if self._invalid_reported.get(key) != (generation, Reason.INVALID_SCHEDULE):
                    self._invalid_reported[key] = (generation, Reason.INVALID_SCHEDULE)
                    self._events.record(ref, reason=EventReason.INVALID_SPEC, message=problem, warning=True, force=True)
                    logger.warning("PyncetteTask %s is invalid (%s): %s", key, Reason.INVALID_SCHEDULE, problem)
                self._status.changed(namespace, name, urgent=previous_ready != state.ready)
                return
            except Exception as e:
                logger.warning("Cannot mirror %s into the backend: %s: %s", key, type(e).__name__, e)
                self._dirty.add(key)
                # The tenant sees a short reason only: the driver's message names the backend's
                # hosts, tables and users, which are the operator's business.
                message = "the operator's backend is unavailable; retrying"
                state.ready = Condition(READY, False, ReadyReason.BACKEND_UNAVAILABLE, message, generation)
                self._status.changed(namespace, name, urgent=previous_ready != state.ready)
                return
            else:
                self._dirty.discard(key)
                if next_run is not None:
                    state.next_run_time, state.next_run_known = next_run, True
            state.ready = Condition(
                READY, True, ReadyReason.SCHEDULED, f"scheduled {parsed.describe_schedule()}", generation
            )
            await self._maybe_run_now(parsed, body)
            await self._maybe_backfill(parsed)
            if backfill.complete_if_done(state, now=self.ctx.clock.now()):  # the last count came from another replica
                self._events.record(
                    ref, reason=backfill.COMPLETED, message=backfill.completed_message(state), force=True
                )
                self._status.changed(namespace, name, urgent=True)
        self._status.changed(namespace, name, urgent=previous_ready != state.ready)

    async def _reconcile_current(self, key: str) -> None:
        """Reconciles the task as the apiserver has it now (see ``_WriteNeeded``)."""
        namespace, name = key.split("/", 1)
        try:
            current = await self._kube.get_task(namespace, name)
        except Exception as e:
            logger.warning("Cannot read PyncetteTask %s back before registering it: %s: %s", key, type(e).__name__, e)
            self._dirty.add(key)
            return
        if current is None:
            logger.info("PyncetteTask %s is gone from the apiserver: not registering it", key)
            self._dirty.discard(key)
            return
        await self._reconcile(current, verified=True)

    def _one_off_done(self, parsed: TaskSpec, body: Mapping[str, Any]) -> bool:
        if parsed.execute_at is None:
            return False
        last = (body.get("status") or {}).get("lastScheduleTime")
        local = self._status.state(parsed.namespace, parsed.name).last_schedule_time
        try:
            seen = parse_time(last) if last else None
        except ValueError:
            seen = None
        return any(t is not None and t >= parsed.execute_at for t in (seen, local))

    async def _leased(self, instance: str) -> bool:
        stored = await self.ctx.get_task(self._template, instance)
        return bool(stored and stored.locked_until and stored.locked_until > self.ctx.clock.now())

    def _fingerprint(self, parsed: TaskSpec) -> Fingerprint:
        return (parsed.uid, schedule_hash(parsed))

    def _anchor(self, parsed: TaskSpec, body: Mapping[str, Any]) -> datetime.datetime | None:
        """When the task last ran as far as the cluster knows (``status.lastScheduleTime``, or what
        this replica started since), else its creation: a (re-)registered schedule counts from
        there, so a wiped backend, a rollout or a spec change never restarts an interval's countdown."""
        state = self._status.state(parsed.namespace, parsed.name)
        status = body.get("status") or {}
        candidates = [state.last_schedule_time]
        for raw in (status.get("lastScheduleTime"), (body.get("metadata") or {}).get("creationTimestamp")):
            try:
                candidates.append(parse_time(str(raw)) if raw else None)
            except ValueError:
                continue
            if candidates[-1] is not None:
                break
        known = [t for t in candidates if t is not None]
        return max(known) if known else None

    async def _ensure_registered(
        self, parsed: TaskSpec, body: Mapping[str, Any], *, verified: bool
    ) -> datetime.datetime | None:
        """Makes the stored instance match ``parsed``; returns its next run time when it was read or written.

        Only the schedule fields count (``schedule_hash``): a new image or new handler args change
        nothing in the backend, so they never move the next run time. A write happens only from a
        ``verified`` body, one just read back from the apiserver; otherwise ``_WriteNeeded``.
        """
        key = parsed.key
        fingerprint = self._fingerprint(parsed)
        if self._fingerprints.get(key) == fingerprint:
            return None
        ctx = self.ctx
        stored = await ctx.get_task(self._template, key)
        if stored is not None and self._matches(stored, parsed):
            self._fingerprints[key] = fingerprint
            return stored.scheduled_at
        force = False
        if stored is not None:
            # A stored entry that cannot be loaded (``problem``) is only parked, not running: replace it.
            if stored.problem is None and stored.locked_until is not None and stored.locked_until > ctx.clock.now():
                raise TaskLockedException(stored.task, stored.locked_until)
            force = True  # a changed spec replaces the stored schedule instead of keeping the sooner time
        if not verified:
            raise _WriteNeeded()
        now = ctx.clock.now()
        anchor = self._anchor(parsed, body) if parsed.execute_at is None else None
        if anchor is not None and anchor > now:
            anchor = None  # a clock skew between apiserver and operator must not push the schedule out
        concrete = await ctx.schedule_task(
            self._template,
            key,
            force=force,
            uid=parsed.uid,
            generation=parsed.generation,
            sched=fingerprint[1],
            anchor=anchor,
            **parsed.schedule_kwargs(),
        )
        self._metrics.count("registrations", action="update" if force else "create")
        self.created += 0 if force else 1
        self._fingerprints[key] = fingerprint
        first = concrete.get_next_execution(now, None)
        logger.info("PyncetteTask %s mirrored (generation %s), next run %s", key, parsed.generation, first)
        if anchor is not None and first is not None and first <= now:
            missed = count_between(concrete, anchor, first)
            if missed:
                self.report_missed(parsed, missed, anchor, first)
        # Created or replaced: the stored next time is the new schedule's first one.
        return first

    def report_missed(self, task: TaskSpec, missed: int, after: datetime.datetime, before: datetime.datetime) -> None:
        """Counts scheduled times that will never run and says so in a Warning Event."""
        self._metrics.missed_schedules.inc(missed)
        count = f"more than {missed - 1}" if missed >= MISSED_COUNT_CAP else str(missed)
        self._events.record(
            ObjectRef(task.namespace, task.name, task.uid),
            reason=EventReason.MISSED_SCHEDULES,
            message=f"{count} scheduled run(s) between {format_time(after)} and {format_time(before)} were missed"
            " (operator down, suspended, or a run still in flight); only the most recent one runs",
            warning=True,
        )
        logger.warning("PyncetteTask %s: %s scheduled run(s) missed before %s", task.key, count, format_time(before))

    @staticmethod
    def _matches(stored: TaskState, parsed: TaskSpec) -> bool:
        args = stored.task.extra_args
        return args.get("uid") == parsed.uid and args.get("sched") == schedule_hash(parsed)

    async def _maybe_run_now(self, parsed: TaskSpec, body: Mapping[str, Any]) -> None:
        value = parsed.run_now
        if not value:
            return
        state = self._status.state(parsed.namespace, parsed.name)
        done = (body.get("status") or {}).get("lastRunNow")
        if value in (done, state.last_run_now, self._run_now_registered.get(parsed.key)):
            return
        instance = run_now_key(parsed.namespace, parsed.name, value)
        kwargs = parsed.schedule_kwargs()
        overrides = {k: kwargs[k] for k in ("execution_mode", "failure_mode", "lease_duration")}
        await self.ctx.schedule_task(
            self._template,
            instance,
            execute_at=self.ctx.clock.now(),
            uid=parsed.uid,
            generation=parsed.generation,
            run_now=value,
            **overrides,
        )
        self._run_now_registered[parsed.key] = value
        self._metrics.count("registrations", action="run-now")
        logger.info("PyncetteTask %s: run now (%s)", parsed.key, value)

    async def mark_run_now_done(self, task: TaskSpec, value: str) -> None:
        """Records in the backend that the run of run-now ``value`` has ended (see the module
        docstring)."""
        await self._mark_done(task, run_now_done_key(task.namespace, task.name, value))

    async def run_now_done(self, task: TaskSpec, value: str) -> bool:
        """True if the run of run-now ``value`` has ended already (its marker is stored)."""
        marker = run_now_done_key(task.namespace, task.name, value)
        return await self.ctx.get_task(self._template, marker) is not None

    async def mark_backfill_slot_done(self, task: TaskSpec, value: str, slot: datetime.datetime) -> None:
        """Records that the run of backfill ``value``'s slot ``slot`` has ended (slots start one
        after the other, each once the one before has ended or its Pod was handed to a watcher, so
        the latest slot covers every earlier one)."""
        marker = backfill_done_key(task.namespace, task.name, value)
        # Renewed at every slot: a backfill running for longer than the marker's memory keeps it.
        await self._mark_done(task, marker, renew=True, done_through=slot.isoformat())

    async def backfill_done_through(self, task: TaskSpec, value: str) -> datetime.datetime | None:
        """The latest slot of backfill ``value`` whose run has ended, or None."""
        stored = await self.ctx.get_task(self._template, backfill_done_key(task.namespace, task.name, value))
        raw = stored.task.extra_args.get("done_through") if stored is not None else None
        try:
            return datetime.datetime.fromisoformat(raw) if isinstance(raw, str) else None
        except ValueError:
            return None

    async def _mark_done(self, task: TaskSpec, marker: str, *, renew: bool = False, **extra: Any) -> None:
        """Writes a marker: a one-off due after ``DONE_MARKER_MEMORY``, counted from its first write
        (the core keeps the sooner time), or from this write with ``renew`` (written over, even
        while its own run holds it: that run's commit then finds its lease gone and deletes
        nothing). Its own run does nothing, and its commit deletes it."""
        await self.ctx.schedule_task(
            self._template,
            marker,
            force=renew,
            execute_at=self.ctx.clock.now() + DONE_MARKER_MEMORY,
            uid=task.uid,
            generation=task.generation,
            **extra,
        )

    async def _maybe_backfill(self, parsed: TaskSpec) -> None:
        """Starts the backfill a new ``pyncette.dev/backfill`` value asks for (see ``backfill``)."""
        value = parsed.backfill
        if not value or self._backfill_registered.get(parsed.key) == value:
            return
        state = self._status.state(parsed.namespace, parsed.name)
        previous = backfill.record(state)
        if previous is not None and previous.get("value") == value:
            self._backfill_registered[parsed.key] = value  # seen before: by another replica, or before a restart
            return
        ref = ObjectRef(parsed.namespace, parsed.name, parsed.uid)
        now = self.ctx.clock.now()
        try:
            start, end, slots = backfill.validate(parsed, value, now=now, max_slots=self._policy.backfill_max_slots)
        except backfill.BackfillError as e:
            backfill.refuse(state, value, str(e), now=now)
            self._backfill_registered[parsed.key] = value
            message = f"pyncette.dev/backfill {value!r}: {e}; nothing runs"
            self._events.record(ref, reason=backfill.INVALID, message=message, warning=True, force=True)
            self._status.changed(parsed.namespace, parsed.name, urgent=True)
            return
        if previous is not None and previous.get("value") and previous.get("phase") == "Running":
            await self._unschedule(backfill_key(parsed.namespace, parsed.name, str(previous["value"])))
        instance = backfill_key(parsed.namespace, parsed.name, value)
        if await self.ctx.get_task(self._template, instance) is None:  # another replica may have started it
            await self.ctx.schedule_task(
                self._template,
                instance,
                uid=parsed.uid,
                generation=parsed.generation,
                backfill_end=format_time(end),
                **backfill.registration(parsed, start),
            )
            self._metrics.count("registrations", action="backfill")
        backfill.begin(state, value, start=start, end=end, count=len(slots), now=now)
        self._backfill_registered[parsed.key] = value
        message = f"backfill of {len(slots)} scheduled time(s) from {format_time(start)} to {format_time(end)}"
        self._events.record(ref, reason=backfill.STARTED, message=message, force=True)
        logger.info("PyncetteTask %s: %s", parsed.key, message)
        self._status.changed(parsed.namespace, parsed.name, urgent=True)

    # ---- repair loops ----

    @staticmethod
    def _settle_waits(
        task: TaskSpec, pods: Iterable[PodView], quiet_for: datetime.timedelta
    ) -> Iterable[tuple[datetime.datetime, datetime.timedelta]]:
        """(when a Pod ended, how long to wait after that): ``quiet_for``, plus the retry backoff
        when the follower may still start another attempt of a failed one."""
        for pod in pods:
            ended = pod.finished_at or pod.created_at
            if ended is None:
                continue
            wait = quiet_for
            if not pod.succeeded and pod.attempt < task.backoff_limit:
                wait += backoff_delay(pod.attempt + 1)
            yield ended, wait

    async def settle_backfills(
        self, pods_of: Callable[[str, str], Iterable[PodView]], *, quiet_for: datetime.timedelta
    ) -> None:
        """Completes running backfills whose every slot has started (their instance is gone from
        the backend) and whose Pods all ended at least ``quiet_for`` ago (time for the counts of
        the replicas that followed them to arrive), though some outcomes were never counted (see
        ``backfill.settle_unfollowed``). ``pods_of(namespace, task uid)``: the run Pods seen."""
        now = self.ctx.clock.now()
        for key, cached in list(self._cache.items()):
            parsed = cached.parsed
            if isinstance(parsed, InvalidTask) or not parsed.is_pod or not self._mine(parsed.namespace):
                continue  # a handler slot is counted by the execution that runs it, or runs again
            state = self._status.state(parsed.namespace, parsed.name)
            current = backfill.record(state)
            if not current or current.get("phase") != "Running":
                continue
            value = str(current.get("value") or "")
            own = [p for p in pods_of(parsed.namespace, parsed.uid) if p.backfill == value]
            if any(not p.finished and not p.deleting for p in own):
                continue
            if any(now - ended < wait for ended, wait in self._settle_waits(parsed, own, quiet_for)):
                continue
            if await self.ctx.get_task(self._template, backfill_key(parsed.namespace, parsed.name, value)) is not None:
                continue  # slots still to start
            if not backfill.settle_unfollowed(state, value, now=now):
                continue
            message = backfill.completed_message(state)
            logger.info("PyncetteTask %s: %s (by the sweep)", key, message)
            ref = ObjectRef(parsed.namespace, parsed.name, parsed.uid)
            self._events.record(ref, reason=backfill.COMPLETED, message=message, force=True)
            self._status.changed(parsed.namespace, parsed.name, urgent=True)

    def request_reconcile(self, namespace: str, name: str) -> None:
        """Reconciles this task again soon (from the retry loop), e.g. after a run changed what it should be."""
        self._dirty.add(task_key(namespace, name))

    async def retry_dirty(self) -> None:
        """Re-reconciles the keys whose last attempt failed or hit a running lease."""
        for key in list(self._dirty):
            cached = self._cache.get(key)
            if cached is None:
                self._dirty.discard(key)
                continue
            await self.on_event("MODIFIED", cached.body)

    def _mine(self, namespace: str) -> bool:
        return self._namespaces is None or namespace in self._namespaces

    async def sweep(self) -> tuple[int, int]:
        """Removes backend entries without a PyncetteTask and registers tasks the backend lacks.

        Returns (removed, re-registered). The backend is listed first and the apiserver second, so a
        task created in between is simply seen by the LIST (and its registration is idempotent).
        """
        ctx = self.ctx
        stored: dict[str, TaskState] = {}
        token = None
        while True:
            page = await ctx.list_tasks(self._template, limit=1000, continuation_token=token)
            for state in page.tasks:
                stored[state.task.name] = state
            token = page.continuation_token
            if token is None:
                break
        bodies = await self._kube.list_tasks(None if self._namespaces is None else sorted(self._namespaces))
        live: dict[str, dict[str, Any]] = {}
        for body in bodies:
            meta = body.get("metadata") or {}
            live[task_key(meta.get("namespace", ""), meta.get("name", ""))] = body

        now = ctx.clock.now()
        self.leased = {i for i, st in stored.items() if st.locked_until is not None and st.locked_until > now}
        removed = 0
        for instance, state in stored.items():
            namespace, name, _ = split_instance_name(instance)
            if not self._mine(namespace):
                continue
            found = live.get(task_key(namespace, name))
            uid = ((found or {}).get("metadata") or {}).get("uid")
            if found is None or uid != state.task.extra_args.get("uid"):
                logger.info("Sweep: removing %s from the backend (its PyncetteTask is gone)", instance)
                await self._unschedule(instance)
                removed += 1
        added = 0
        for key, body in live.items():
            if key not in stored:
                self._fingerprints.pop(key, None)
                before = self.created
                await self.on_event("MODIFIED", body)
                if self.created > before:
                    logger.info("Sweep: re-registered %s (the backend lacked it)", key)
                    added += 1
        return removed, added
