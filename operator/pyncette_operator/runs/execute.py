"""The body of every PyncetteTask run: what a worker does with a leased ``namespace/name`` instance.

pyncette leases the instance and calls ``RunExecutor.__call__``; returning commits the run,
raising applies the task's failureMode (pyncette's own semantics). Here the run:

1. looks up the task's *latest* spec in the mirror's cache (a GET if the watch has not seen it);
   an instance whose PyncetteTask is gone or was re-created (other uid) is removed instead;
2. records the start in status (lastScheduleTime, nextRunTime, active, Running) and an Event;
3. runs a Pod (``PodRunner``) or a handler, renewing the lease while it waits;
4. retries a failed attempt up to ``backoffLimit`` times with exponential backoff (``catchup``),
   then records the end (lastSuccessfulTime / lastFailureTime, an Event) and prunes old Pods.

Before any of that, a stale slot (a later scheduled time is already due: the operator was down)
or one past ``startingDeadlineSeconds`` is skipped and reported as missed.

The run always returns normally once the scheduled time is settled, succeeded or failed, so the
schedule moves on; failureMode Commit only means "no retries". On shutdown a run still waiting
for its Pod *releases* its lease instead (the entry is due again at once), so another replica
adopts the Pod without waiting for leaseDuration.

Status changes go to the coalescing ``StatusWriter``: a run costs no status write of its own.
The exceptions are one-off runs (run-now, executeAt), whose start is written at once because the
mirror relies on it not to run them twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import logging

from pyncette.errors import LeaseLostException
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette_operator import backfill
from pyncette_operator import breaker
from pyncette_operator.conditions import READY
from pyncette_operator.conditions import WAITING
from pyncette_operator.conditions import Condition
from pyncette_operator.conditions import WaitingReason
from pyncette_operator.events import EventReason
from pyncette_operator.events import EventRecorder
from pyncette_operator.events import ObjectRef
from pyncette_operator.metrics import Metrics
from pyncette_operator.mirror import Mirror
from pyncette_operator.ratelimit import AsyncLimiter
from pyncette_operator.runs.catchup import backoff_delay
from pyncette_operator.runs.catchup import count_between
from pyncette_operator.runs.catchup import stale_slot
from pyncette_operator.runs.groups import ConcurrencyGroups
from pyncette_operator.runs.handlers import HandlerError
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.jitter import jitter_delay
from pyncette_operator.runs.jitter import wait_for_start
from pyncette_operator.runs.pod_runner import PodRunner
from pyncette_operator.runs.pod_runner import RunAbandoned
from pyncette_operator.runs.pod_runner import RunFailed
from pyncette_operator.runs.pod_runner import SlotState
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.runs.pods import PodView
from pyncette_operator.spec import InvalidTask
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import backfill_of
from pyncette_operator.spec import format_duration
from pyncette_operator.spec import format_time
from pyncette_operator.spec import is_done_marker
from pyncette_operator.spec import parse_time
from pyncette_operator.spec import split_instance_name
from pyncette_operator.status import ActiveRun
from pyncette_operator.status import StatusWriter
from pyncette_operator.status import TaskStatus

logger = logging.getLogger(__name__)

_BACKFILL: contextvars.ContextVar[str | None] = contextvars.ContextVar("pyncette_backfill", default=None)
"""The backfill value of the run this task executes (None: not a backfill run). A context variable,
so the watchers of handed-over Pods (asyncio tasks started from the run) inherit it."""

_FINISHED_MEMORY = 64
LATE_START = datetime.timedelta(milliseconds=500)
"""A handler run starting this late may be taken over from another replica: its attempt is read
fresh from the apiserver (runs start within milliseconds of their time otherwise)."""
TRANSIENT_RETRY = datetime.timedelta(seconds=1)
"""Wait before creating a run's Pod again when the apiserver could not be reached (an outage, a
restart): such a failure is not an attempt, and is retried until the run's deadline."""


class RunExecutor:
    def __init__(
        self,
        *,
        mirror: Mirror,
        pods: PodRunner,
        tracker: PodTracker,
        handlers: HandlerRegistry,
        status: StatusWriter,
        events: EventRecorder,
        metrics: Metrics,
        stopping: asyncio.Event,
        pod_create_limiter: AsyncLimiter | None = None,
        groups: ConcurrencyGroups | None = None,
        replica_id: str = "replica",
    ) -> None:
        self._replica_id = replica_id
        """This replica's name: its entry in ``status.backfill.counts``."""
        self._pod_create_limiter = pod_create_limiter
        self._groups = groups
        """``spec.concurrencyGroup`` slots in the shared backend (None: groups are not enforced)."""
        """``--pod-create-qps``/``--pod-create-burst``: a run waits its turn (renewing its lease) to create a Pod."""
        self._mirror = mirror
        self._pods = pods
        self._tracker = tracker
        self._handlers = handlers
        self._status = status
        self._events = events
        self._metrics = metrics
        self._stopping = stopping
        self._handovers: set[asyncio.Task[None]] = set()
        self._handler_calls: set[asyncio.Future[None]] = set()
        self._retrying: dict[tuple[str, str], set[str]] = {}
        """Scheduled times (RFC 3339) of runs this replica is retrying, per task: pruning keeps their Pods."""

    async def __call__(self, context: Context) -> None:
        instance = context.task.name
        if is_done_marker(instance):
            return  # a run-now or backfill marker past its time: committing it deletes it
        namespace, name, run_now = split_instance_name(instance)
        cached = await self._mirror.current(namespace, name)
        if cached is None or cached.uid != context.args.get("uid"):
            logger.info("Run of %s skipped: its PyncetteTask is gone; removing the schedule", instance)
            await self._mirror.ctx.unschedule_task(context.task)
            return
        task = cached.parsed
        filling = backfill_of(instance)
        if filling is not None and not isinstance(task, InvalidTask):
            await self._backfill_slot(context, task, filling)
            return
        if isinstance(task, InvalidTask) or (task.suspend and run_now is None):
            return  # the mirror unschedules it; a run already leased does nothing
        if run_now is not None and await self._mirror.run_now_done(task, run_now):
            logger.info("Run now %r of %s has run already (registered again by a lagging replica)", run_now, task.key)
            return
        if run_now is None and breaker.is_tripped(self._status.state(namespace, name).breaker_record(), task):
            return  # stopped by the circuit breaker: the mirror unschedules it
        clock = self._mirror.ctx.clock
        now = clock.now()
        scheduled_at = context.scheduled_at.astimezone(datetime.UTC)
        skip = self._skip(context, task, scheduled_at, now) if run_now is None else None
        follow = False
        if skip is not None and task.is_pod:
            slot = await self._slot_after_sync(task, scheduled_at)
            if slot.running is not None or slot.succeeded is not None or slot.next_attempt > 0:
                # This time has a Pod (created before an outage, or by a replica that died): it was
                # not missed, only the times after it that its lease held back.
                missed, _, before = skip
                skip = (missed - 1, scheduled_at, before)
                # One still running is followed (status, deadlines; never an orphan); committing it
                # then moves the schedule to the latest time.
                follow = slot.running is not None
        if skip is not None:
            if skip[0] > 0:
                self._mirror.report_missed(task, *skip)
            if not follow:
                return
        self._metrics.start_skew.observe(max(0.0, (now - scheduled_at).total_seconds()))
        next_time = None if run_now is not None else context.task.get_next_execution(now, scheduled_at)
        one_off = run_now is not None or task.execute_at is not None
        if task.jitter is not None and run_now is None:
            delay = jitter_delay(task_uid=task.uid, scheduled_at=scheduled_at, jitter=task.jitter)
            await wait_for_start(
                scheduled_at + delay,
                clock=clock,
                heartbeat=context.heartbeat,
                renew_every=task.lease_duration / 3,
                stopping=self._stopping,
            )
            latest = self._mirror.cached(namespace, name)
            if latest is not None and isinstance(latest.parsed, TaskSpec) and latest.parsed.suspend:
                return  # suspended during the delay: the run does not start
        await self._in_group(context, task, scheduled_at, run_now or "", run_now, next_time=next_time, one_off=one_off)
        if not one_off and not self._stopping.is_set():
            if skip is None:
                self._report_overrun(context, task, scheduled_at, scheduled_at_ran=True)
            elif follow:
                # The times up to skip's ``before`` were reported when the run was taken over;
                # ``before`` itself was to run next, unless the followed Pod outlasted it too.
                self._report_overrun(context, task, skip[2], scheduled_at_ran=False)

    def _report_overrun(
        self, context: Context, task: TaskSpec, since: datetime.datetime, *, scheduled_at_ran: bool
    ) -> None:
        """A run that outlasted later scheduled times (a Forbid Pod, a slow handler, a Pod the node
        started late): committing it moves the schedule to the most recent of them, so the ones in
        between never run. They are counted and reported like any other missed time. ``since`` is
        the run's own time (``scheduled_at_ran``) or the first time not reported yet."""
        gap = _stale_gap(context, since, self._mirror.ctx.clock.now())
        if gap is None:
            return
        missed, after, later = gap
        if scheduled_at_ran:
            missed, after = missed - 1, since
        if missed > 0:
            self._mirror.report_missed(task, missed, after, later)

    async def _in_group(
        self,
        context: Context,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        trigger: str,
        run_now: str | None,
        *,
        next_time: datetime.datetime | None,
        one_off: bool,
    ) -> None:
        """Runs the Pod or handler, first taking a slot of the task's concurrency group if it has one."""
        held = None
        if task.concurrency_group is not None and self._groups is not None:
            state = self._status.state(task.namespace, task.name)

            def waiting(now_waiting: bool, message: str) -> None:
                reason = WaitingReason.GROUP_FULL if now_waiting else WaitingReason.NOT_WAITING
                state.waiting = Condition(WAITING, now_waiting, reason, message, task.generation)
                self._status.changed(task.namespace, task.name, urgent=True)

            held = await self._groups.acquire(
                task,
                scheduled_at,
                trigger=trigger,
                heartbeat=context.heartbeat,
                stopping=self._stopping,
                waiting=waiting,
            )
            if held is None:
                await self._release(context)  # shutting down while queued: another replica takes it
                return
        try:
            if task.is_pod:
                ended = await self._run_pod(context, task, scheduled_at, run_now, next_time=next_time, one_off=one_off)
            else:
                ended = await self._run_handler(
                    context, task, scheduled_at, run_now, next_time=next_time, one_off=one_off
                )
        finally:
            if held is not None and self._groups is not None:
                await self._groups.release(held)
        if ended:
            await self._record_ended(task, scheduled_at, run_now)

    async def _record_ended(self, task: TaskSpec, scheduled_at: datetime.datetime, run_now: str | None) -> None:
        """Before the commit of a run-now or of a backfill slot that has ended: a lagging replica's
        registration of the same request then finds the marker (see ``Mirror``). A backfill's Pod
        slots carry the backfill on their Pods too, but the history limits may have pruned those.
        A Pod slot has "ended" here once its run is over for the schedule: followed to its end, or
        handed to a watcher (Allow), which only happens after its Pod was created."""
        filling = _BACKFILL.get()
        if run_now is not None:
            try:
                await self._mirror.mark_run_now_done(task, run_now)
            except Exception as e:
                logger.warning(
                    "Could not record that run now %r of %s has run: %s: %s", run_now, task.key, type(e).__name__, e
                )
        elif filling is not None:
            await self._mark_backfill_slot(task, filling, scheduled_at)

    async def _mark_backfill_slot(self, task: TaskSpec, value: str, scheduled_at: datetime.datetime) -> None:
        """Moves backfill ``value``'s marker to this settled slot (run, or skipped for another run)."""
        try:
            await self._mirror.mark_backfill_slot_done(task, value, scheduled_at)
        except Exception as e:
            logger.warning(
                "Could not record that backfill %r slot %s of %s has run: %s: %s",
                value,
                format_time(scheduled_at),
                task.key,
                type(e).__name__,
                e,
            )

    async def _backfill_slot(self, context: Context, task: TaskSpec, value: str) -> None:
        """One slot of a backfill (see ``pyncette_operator.backfill``): run it unless it has a run."""
        clock = self._mirror.ctx.clock
        now = clock.now()
        scheduled_at = context.scheduled_at.astimezone(datetime.UTC)
        end = parse_time(str(context.args.get("backfill_end")))
        if scheduled_at > end:
            logger.info("Backfill %s of %s: every slot has started", value, task.key)
            await self._mirror.ctx.unschedule_task(context.task)
            return
        slot = self._pods.slot(task, scheduled_at, "") if task.is_pod else None
        if slot is not None and value in slot.backfills:
            await self._backfill_slot_again(context, task, value, scheduled_at, running=slot.running is not None)
            return
        # Slots are settled in order, each after the one before has ended, been handed over or been
        # skipped, and each moves the marker: a slot at or before it was settled by this backfill
        # (a handler slot has no Pod to tell, a Pod slot's Pod may have been pruned since).
        done = await self._mirror.backfill_done_through(task, value)
        if done is not None and scheduled_at <= done:
            # Registered again by a lagging replica after this slot ran: neither run nor counted.
            logger.info("Backfill %s of %s: slot %s has run already", value, task.key, format_time(scheduled_at))
            return
        if slot is not None and (slot.succeeded is not None or slot.running is not None or slot.next_attempt > 0):
            logger.info(
                "Backfill %s of %s: slot %s has a run already; skipped", value, task.key, format_time(scheduled_at)
            )
            self._backfill_count(task, value, "skipped")  # it has a run already (on schedule, or before)
            await self._mark_backfill_slot(task, value, scheduled_at)
            return
        self._backfill_count(task, value, "started")
        sequential = task.concurrency_policy != "Allow"
        next_time = None if sequential else context.task.get_next_execution(now, scheduled_at)
        await self._run_backfill(context, task, scheduled_at, value, next_time=next_time, one_off=sequential)

    async def _run_backfill(
        self,
        context: Context,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        value: str,
        *,
        next_time: datetime.datetime | None,
        one_off: bool,
    ) -> None:
        """Runs (or adopts) a slot's Pod or handler as a run of backfill ``value`` (see ``_BACKFILL``)."""
        token = _BACKFILL.set(value)
        try:
            await self._in_group(
                context, task, scheduled_at, f"backfill:{value}", None, next_time=next_time, one_off=one_off
            )
        finally:
            _BACKFILL.reset(token)

    async def _backfill_slot_again(
        self, context: Context, task: TaskSpec, value: str, scheduled_at: datetime.datetime, *, running: bool
    ) -> None:
        """A slot this backfill started already, leased again: the instance was registered a second
        time after slots had run (two replicas seeing the request at once), or its lease expired
        (the replica running the slot died). Counted once, never as skipped.

        With Forbid or Replace the run that started the slot held the lease until its Pod ended, so
        a Pod still running has lost its follower: it is adopted, and its outcome counted here; the
        next slot waits for it. Otherwise (a finished Pod, or Allow, whose runs hand their Pods to a
        watcher of the replica that created them) the run that started it counts its outcome.
        """
        stamp = format_time(scheduled_at)
        if not running or task.concurrency_policy == "Allow":
            logger.info("Backfill %s of %s: slot %s was started by this backfill already", value, task.key, stamp)
            return
        logger.info("Backfill %s of %s: adopting the running Pod of slot %s", value, task.key, stamp)
        await self._run_backfill(context, task, scheduled_at, value, next_time=None, one_off=True)

    def _backfill_count(self, task: TaskSpec, value: str, what: str) -> None:
        state = self._status.state(task.namespace, task.name)
        if backfill.count(state, value, what, replica=self._replica_id, now=self._mirror.ctx.clock.now()):
            ref = ObjectRef(task.namespace, task.name, task.uid)
            self._events.record(ref, reason=backfill.COMPLETED, message=backfill.completed_message(state), force=True)
        self._status.changed(task.namespace, task.name, urgent=True)

    def _skip(
        self, context: Context, task: TaskSpec, scheduled_at: datetime.datetime, now: datetime.datetime
    ) -> tuple[int, datetime.datetime, datetime.datetime] | None:
        """(missed, after, before) when this scheduled time must be skipped: stale (a later one is
        already due) or past startingDeadlineSeconds; None to run it."""
        gap = _stale_gap(context, scheduled_at, now)
        if gap is not None:
            # Committing this run moves the entry to ``later`` (catch_up_latest), which runs next.
            return gap
        if (
            task.starting_deadline is not None
            and task.execute_at is None
            and now - scheduled_at > task.starting_deadline
        ):
            logger.info(
                "Run of %s for %s skipped: later than startingDeadlineSeconds (%s)",
                task.key,
                format_time(scheduled_at),
                format_duration(task.starting_deadline),
            )
            return 1, scheduled_at - datetime.timedelta(microseconds=1), now
        return None

    async def _slot_after_sync(self, task: TaskSpec, scheduled_at: datetime.datetime) -> SlotState:
        """What the cluster says about this scheduled run's Pods (after the first Pod LIST)."""
        for _ in range(100):
            if self._tracker.synced or self._stopping.is_set():
                break
            await asyncio.sleep(0.1)  # a replica that just started: its first LIST comes within seconds
        return self._pods.slot(task, scheduled_at, "")

    def _retries_allowed(self, context: Context, task: TaskSpec) -> int:
        """How many retries a failed scheduled run gets: backoffLimit, or none (Commit, AtMostOnce)."""
        if context.task.execution_mode == ExecutionMode.AT_MOST_ONCE or context.task.failure_mode == FailureMode.COMMIT:
            return 0
        return task.backoff_limit

    # ---- status bookkeeping ----

    def _started(
        self,
        task: TaskSpec,
        run: ActiveRun,
        *,
        run_now: str | None,
        next_time: datetime.datetime | None,
        one_off: bool,
        attempt: int = 0,
    ) -> None:
        state = self._status.state(task.namespace, task.name)
        if state.last_schedule_time is None or run.scheduled_at > state.last_schedule_time:
            state.last_schedule_time = run.scheduled_at
        if run_now is not None:
            state.last_run_now = run_now
        elif _BACKFILL.get() is None:
            state.next_run_time, state.next_run_known = next_time, True
        run.attempt = attempt + 1
        state.active[run.name] = run
        state.finished.pop(run.name, None)
        self._status.changed(task.namespace, task.name, urgent=one_off)
        self._metrics.count("runs_started", kind=run.kind)
        what = f"Pod {run.name}" if run.kind == "Pod" else f"handler {task.handler_name}"
        trigger = f" (run now: {run_now})" if run_now else ""
        retry = f", attempt {attempt + 1}" if attempt else ""
        self._events.record(
            ObjectRef(task.namespace, task.name, task.uid),
            reason=EventReason.RUN_STARTED,
            message=f"started {what} for {format_time(run.scheduled_at)}{trigger}{retry}",
        )

    def _waiting_to_retry(self, task: TaskSpec, run: ActiveRun, attempt: int, *, urgent: bool) -> None:
        """A handler attempt failed and another may follow: the run stays in ``active`` with the
        number of the next attempt. ``urgent`` (the retry fits before the next scheduled time)
        writes it at once, for whoever takes the run over during the backoff; otherwise the run is
        given up next and the usual coalescing applies."""
        run.attempt = attempt + 1
        self._status.changed(task.namespace, task.name, urgent=urgent)

    def _attempt_failed(self, task: TaskSpec, run: ActiveRun) -> None:
        """One attempt failed and another follows: the run leaves ``active``; nothing is recorded yet."""
        state = self._status.state(task.namespace, task.name)
        state.active.pop(run.name, None)
        self._remember_finished(state, run.name)
        self._status.changed(task.namespace, task.name)

    @staticmethod
    def _remember_finished(state: TaskStatus, name: str) -> None:
        state.finished[name] = None
        while len(state.finished) > _FINISHED_MEMORY:
            state.finished.pop(next(iter(state.finished)))

    def _finished(
        self,
        task: TaskSpec,
        run: ActiveRun,
        *,
        succeeded: bool,
        message: str,
        finished_at: datetime.datetime,
        one_off: bool,
        attempts: int = 1,
    ) -> None:
        state = self._status.state(task.namespace, task.name)
        state.active.pop(run.name, None)
        self._remember_finished(state, run.name)
        if succeeded:
            if state.last_successful_time is None or finished_at > state.last_successful_time:
                state.last_successful_time = finished_at
        elif state.last_failure_time is None or finished_at > state.last_failure_time:
            state.last_failure_time = finished_at
        self._status.changed(task.namespace, task.name, urgent=one_off)
        filling = _BACKFILL.get()
        if filling is not None:
            self._backfill_count(task, filling, "succeeded" if succeeded else "failed")
        elif task.suspend_after_failures is not None and not (one_off and task.execute_at is None):  # not run-now
            self._count_for_breaker(task, run.scheduled_at, succeeded=succeeded)
        self._metrics.count("runs_finished", kind=run.kind, outcome="succeeded" if succeeded else "failed")
        what = f"Pod {run.name}" if run.kind == "Pod" else f"handler {task.handler_name}"
        ref = ObjectRef(task.namespace, task.name, task.uid)
        when = format_time(run.scheduled_at)
        if succeeded:
            self._events.record(ref, reason=EventReason.RUN_SUCCEEDED, message=f"{what} for {when} succeeded")
        else:
            tries = f" after {attempts} attempt(s)" if attempts > 1 else " (attempt 1, not retried)"
            self._events.record(
                ref,
                reason=EventReason.RUN_FAILED,
                message=f"{what} for {when} failed{tries}: {message}",
                warning=True,
                force=True,
            )

    def _count_for_breaker(self, task: TaskSpec, slot: datetime.datetime, *, succeeded: bool) -> None:
        """Counts a settled scheduled run for ``suspendAfterFailures``; stops the task at the limit."""
        state = self._status.state(task.namespace, task.name)
        now = self._mirror.ctx.clock.now()
        if breaker.settled(state, task, slot=slot, succeeded=succeeded, now=now):
            message = breaker.stopped_message(task, state.breaker)
            state.ready = Condition(READY, False, breaker.TOO_MANY_FAILURES, message, task.generation)
            state.next_run_time, state.next_run_known = None, True
            self._events.record(
                ObjectRef(task.namespace, task.name, task.uid),
                reason=EventReason.TOO_MANY_FAILURES,
                message=message,
                warning=True,
                force=True,
            )
            logger.warning("PyncetteTask %s stopped by its circuit breaker: %s", task.key, message)
            self._mirror.request_reconcile(task.namespace, task.name)
        self._status.changed(task.namespace, task.name, urgent=True)  # the next run may be on another replica

    # ---- leases ----

    async def _release(self, context: Context) -> None:
        """Gives the run's lease back so that the entry is due again at once (another replica adopts
        the Pod now, not after leaseDuration); the run then commits nothing."""
        try:
            await context.release()
        except Exception as e:
            logger.warning("Releasing the lease of %s failed (it expires after leaseDuration): %s", context.task, e)

    async def _attempt_reached(self, task: TaskSpec, name: str, scheduled_at: datetime.datetime) -> int:
        """The attempt a handler run starts at: 1, or the one it reached on the replica it is taken
        over from (its ``status.active`` item). A run that starts late may be such a takeover, and
        this replica's watch may not show the other replica's last write yet (it lags under load):
        then the status is read from the apiserver first."""
        attempt = self._status.state(task.namespace, task.name).observed_run_attempt(name)
        if attempt == 1 and self._mirror.ctx.clock.now() - scheduled_at > LATE_START:
            await self._mirror.refresh_status(task.namespace, task.name, task.uid)
            attempt = self._status.state(task.namespace, task.name).observed_run_attempt(name)
        return attempt

    async def _backoff(
        self, context: Context, task: TaskSpec, until: datetime.datetime, limit: datetime.datetime | None
    ) -> bool:
        """Waits (renewing the lease) until ``until``; False if ``limit`` or shutdown comes first."""
        clock = self._mirror.ctx.clock
        if limit is not None and until >= limit:
            return False
        tick = datetime.timedelta(seconds=max(task.lease_duration.total_seconds() / 3, 0.2))
        while clock.now() < until:
            if self._stopping.is_set():
                return False
            sleeper = asyncio.ensure_future(clock.sleep_until(min(until, clock.now() + tick)))
            stopper = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                stopper.cancel()
            await context.heartbeat()
        return not self._stopping.is_set()

    async def _pod_create_turn(self, context: Context, task: TaskSpec) -> None:
        """Waits for a token of the per-replica Pod-create bucket, renewing the lease meanwhile (a run
        queued behind a burst of creates keeps its lease, so no other replica takes it over)."""
        limiter = self._pod_create_limiter
        if limiter is None:
            return
        turn = asyncio.ensure_future(limiter.acquire())
        tick = max(task.lease_duration.total_seconds() / 3, 0.2)
        try:
            while not (await asyncio.wait({turn}, timeout=tick))[0]:
                await context.heartbeat()
            turn.result()
        finally:
            turn.cancel()

    # ---- Pod runs ----

    async def _run_pod(
        self,
        context: Context,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        run_now: str | None,
        *,
        next_time: datetime.datetime | None,
        one_off: bool,
    ) -> bool:
        """Runs (or adopts) the run's Pod, retried with backoff. True once the run has ended for
        the schedule (succeeded, given up, or handed to a watcher), False if it was released."""
        clock = self._mirror.ctx.clock
        trigger = run_now or ""
        retries = self._retries_allowed(context, task)
        # A run holding a concurrency group slot is followed to its end, never handed over.
        in_group = task.concurrency_group is not None
        deadline = None if task.concurrency_policy == "Forbid" or one_off or in_group else next_time
        stamp = format_time(scheduled_at)
        slot_key = (task.namespace, task.uid)
        retrying = self._retrying.setdefault(slot_key, set())
        retrying.add(stamp)
        try:
            while True:
                slot = self._pods.slot(task, scheduled_at, trigger)
                if slot.succeeded is not None:
                    # Another replica (or an earlier life of this one) ran it to success already.
                    self._pods.adopted()
                    return True
                if slot.running is not None:
                    pod_name, attempt = slot.running.name, slot.running.attempt
                    self._pods.adopted()
                else:
                    attempt = slot.next_attempt
                    if attempt > retries:
                        run = ActiveRun(f"{task.name}@{stamp}", "Pod", scheduled_at)
                        self._given_up(task, run, attempt, slot.last_message or "failed", one_off)
                        return True
                    if attempt > 0:
                        after = (slot.last_finished_at or clock.now()) + backoff_delay(attempt)
                        if not await self._backoff(context, task, after, deadline):
                            if self._stopping.is_set():
                                await self._release(context)
                                return False
                            run = ActiveRun(f"{task.name}@{stamp}", "Pod", scheduled_at)
                            message = f"{slot.last_message or 'failed'}; no retry before the next scheduled time"
                            self._given_up(task, run, attempt, message, one_off)
                            return True
                        self._metrics.retries.inc()
                    await self._pod_create_turn(context, task)
                    try:
                        created = await self._pods.create(
                            task, scheduled_at, trigger, attempt=attempt, backfill=_BACKFILL.get()
                        )
                    except RunFailed as e:
                        if e.transient and await self._backoff(
                            context, task, clock.now() + TRANSIENT_RETRY, deadline if deadline else None
                        ):
                            logger.info("Creating the Pod of %s for %s failed, retrying: %s", task.key, stamp, e)
                            continue  # the apiserver is unreachable: not an attempt of the run
                        if self._stopping.is_set():
                            await self._release(context)
                            return False
                        run = ActiveRun(f"{task.name}@{stamp}", "Pod", scheduled_at)
                        self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off)
                        self._finished(
                            task, run, succeeded=False, message=str(e), finished_at=clock.now(), one_off=one_off
                        )
                        return True
                    if created is None:
                        continue  # that attempt's Pod had already finished: read the slot again
                    pod_name = created
                run = ActiveRun(pod_name, "Pod", scheduled_at)
                self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off, attempt=attempt)
                try:
                    result = await self._pods.wait(
                        task,
                        pod_name,
                        heartbeat=context.heartbeat,
                        deadline=deadline,
                        now=clock.now,
                        stopping=self._stopping,
                    )
                except RunAbandoned:
                    logger.info(
                        "Released Pod %s/%s (shutting down); another replica adopts it now", task.namespace, pod_name
                    )
                    await self._release(context)
                    return False
                except LeaseLostException:
                    # The entry was removed (task deleted or changed) or taken over after a stall: someone
                    # else owns the schedule now. Follow the Pod to its end for status, commit nothing.
                    logger.info(
                        "Lease on %s lost while Pod %s runs; following it without the lease", task.key, pod_name
                    )
                    self._hand_over(task, run, one_off=one_off)
                    return False
                if not result.finished:
                    # Allow/Replace: the next run is due; let the schedule move on and watch this Pod to its end.
                    # Shown in status.active: no retry follows, so whichever replica finds the Pod
                    # finished (this one may be stopped first) records its outcome.
                    run.handed_over = True
                    self._status.changed(task.namespace, task.name)
                    self._hand_over(task, run, one_off=one_off)
                    return True
                if result.succeeded or attempt >= retries:
                    retrying.discard(stamp)
                    self._finished(
                        task,
                        run,
                        succeeded=result.succeeded,
                        message=result.message,
                        finished_at=result.finished_at or clock.now(),
                        one_off=one_off,
                        attempts=attempt + 1,
                    )
                    if not result.succeeded and attempt > 0:
                        self._metrics.runs_given_up.inc()
                    await self._prune(task)
                    return True
                self._attempt_failed(task, run)
        finally:
            retrying.discard(stamp)
            if not retrying:
                self._retrying.pop(slot_key, None)

    def _given_up(self, task: TaskSpec, run: ActiveRun, attempts: int, message: str, one_off: bool) -> None:
        self._metrics.runs_given_up.inc()
        self._finished(
            task,
            run,
            succeeded=False,
            message=message,
            finished_at=self._mirror.ctx.clock.now(),
            one_off=one_off,
            attempts=attempts,
        )

    def _hand_over(self, task: TaskSpec, run: ActiveRun, *, one_off: bool) -> None:
        async def follow() -> None:
            view = await self._follow(task, run.name)
            finished_at = (view.finished_at if view else None) or self._mirror.ctx.clock.now()
            if view is None:
                self._finished(
                    task, run, succeeded=False, message="Pod deleted", finished_at=finished_at, one_off=one_off
                )
            else:
                self._finished(
                    task, run, succeeded=view.succeeded, message=view.message, finished_at=finished_at, one_off=one_off
                )
            await self._prune(task)

        handover = asyncio.ensure_future(follow())
        self._handovers.add(handover)
        handover.add_done_callback(self._handovers.discard)

    async def _follow(self, task: TaskSpec, pod_name: str) -> PodView | None:
        """Waits for a handed-over Pod to end, still enforcing activeDeadlineSeconds."""
        clock = self._mirror.ctx.clock
        while True:
            current = self._tracker.get(task.namespace, pod_name)
            timeout: float | None = None
            if task.active_deadline is not None and current is not None and current.created_at is not None:
                left = (current.created_at + task.active_deadline - clock.now()).total_seconds()
                if left <= 0 and not current.finished and not current.deleting:
                    await self._pods.stop_overdue(task, current)
                    left = 1.0
                timeout = max(left, 0.5)
            try:
                return await self._tracker.wait_finished(task.namespace, pod_name, timeout=timeout)
            except TimeoutError:
                continue

    async def enforce_deadlines(self) -> int:
        """Deletes every run Pod past its task's activeDeadlineSeconds, whoever started it: the safety
        net for Pods no run follows any more (released at shutdown, then the task suspended...)."""
        now = self._mirror.ctx.clock.now()
        stopped = 0
        for view in self._tracker.running():
            cached = self._mirror.cached_by_uid(view.namespace, view.owner_uid or "")
            task = cached.parsed if cached is not None else None
            if not isinstance(task, TaskSpec) or task.active_deadline is None or view.created_at is None:
                continue
            if view.created_at + task.active_deadline <= now and await self._pods.stop_overdue(task, view):
                stopped += 1
        return stopped

    async def _prune(self, task: TaskSpec) -> None:
        latest = self._mirror.cached(task.namespace, task.name)
        spec = latest.parsed if latest is not None and isinstance(latest.parsed, TaskSpec) else task
        keep = frozenset(self._retrying.get((task.namespace, task.uid), ()))
        await self._pods.prune(spec, keep_slots=keep)

    async def close(self) -> None:
        """Stops following handed-over Pods and cancels handler calls still running (shutdown)."""
        for handover in list(self._handovers):
            handover.cancel()
        for call in list(self._handler_calls):
            call.cancel()

    # ---- handler runs ----

    async def _run_handler(
        self,
        context: Context,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        run_now: str | None,
        *,
        next_time: datetime.datetime | None,
        one_off: bool,
    ) -> bool:
        """Calls the handler; a failure is retried after a backoff. The attempt in flight, or waiting
        out its backoff, is in the run's ``status.active`` item: a replica that takes the run over
        (a rollout, a crash) continues from there, so ``backoffLimit`` holds across replicas.
        Returns True once the run has ended (succeeded or given up), False if it was handed over."""
        assert task.handler_name is not None
        clock = self._mirror.ctx.clock
        func = self._handlers.get(task.handler_name, namespace=task.namespace)
        run = ActiveRun(f"handler:{task.handler_name}@{format_time(scheduled_at)}", "Handler", scheduled_at)
        retries = self._retries_allowed(context, task)
        deadline = None if one_off else next_time
        attempt = await self._attempt_reached(task, run.name, scheduled_at) - 1
        last_failure = clock.now()
        message = "failed on another replica"
        if attempt > 0:
            logger.info("Handler run of %s taken over at attempt %d", task.key, attempt + 1)
        if attempt > retries:
            self._given_up(task, run, attempt, message, one_off)
            return True
        while True:
            if attempt > 0:
                if not await self._backoff(context, task, last_failure + backoff_delay(attempt), deadline):
                    if self._stopping.is_set():
                        await self._release(context)
                        return False
                    self._given_up(task, run, attempt, f"{message}; no retry before the next scheduled time", one_off)
                    return True
                self._metrics.retries.inc()
            self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off, attempt=attempt)
            if func is None:
                message = f"no handler named {task.handler_name!r} serves namespace {task.namespace!r}"
                self._finished(task, run, succeeded=False, message=message, finished_at=clock.now(), one_off=one_off)
                return True
            context.args = dict(task.handler_args)
            context.resource = ObjectRef(task.namespace, task.name, task.uid)
            limit = task.active_deadline.total_seconds() if task.active_deadline is not None else None
            call = asyncio.ensure_future(func(context))
            self._handler_calls.add(call)
            try:
                await asyncio.wait_for(asyncio.shield(call), timeout=limit)
            except asyncio.CancelledError:
                if not call.cancelled():
                    call.cancel()
                    raise
                # Cancelled by close() at shutdown: give the run back for another replica to redo.
                logger.warning("Handler run of %s cancelled by the shutdown; releasing its lease", task.key)
                await self._release(context)
                return False
            except TimeoutError:
                call.cancel()
                assert task.active_deadline is not None
                message = f"cancelled after activeDeadlineSeconds ({format_duration(task.active_deadline)})"
            except LeaseLostException:
                raise
            except Exception as e:
                # The task's owner sees a HandlerError's message, or else only the exception's type:
                # a message may quote the operator's internals (its backend, its files, other tenants).
                logger.warning("Handler run of %s (attempt %d) failed", task.key, attempt + 1, exc_info=e)
                message = (
                    str(e) if isinstance(e, HandlerError) else f"{type(e).__name__} (details in the operator's log)"
                )
            else:
                self._finished(task, run, succeeded=True, message="", finished_at=clock.now(), one_off=one_off)
                return True
            finally:
                self._handler_calls.discard(call)
            last_failure = clock.now()
            if attempt >= retries:
                if attempt > 0:
                    self._metrics.runs_given_up.inc()
                self._finished(
                    task,
                    run,
                    succeeded=False,
                    message=message,
                    finished_at=last_failure,
                    one_off=one_off,
                    attempts=attempt + 1,
                )
                return True
            attempt += 1
            retry_at = last_failure + backoff_delay(attempt)
            self._waiting_to_retry(task, run, attempt, urgent=deadline is None or retry_at < deadline)


def _stale_gap(
    context: Context, since: datetime.datetime, now: datetime.datetime
) -> tuple[int, datetime.datetime, datetime.datetime] | None:
    """(missed, after, later) when a scheduled time after ``since`` is already due: ``since`` and
    the times up to ``later`` (the most recent due one, which runs next) are missed; else None."""
    later = stale_slot(context.task, since, now)
    if later is None:
        return None
    return 1 + count_between(context.task, since, later), since - datetime.timedelta(microseconds=1), later
