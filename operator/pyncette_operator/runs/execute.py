"""The body of every PyncetteTask run: what a worker does with a leased ``namespace/name`` instance.

pyncette leases the instance and calls ``RunExecutor.__call__``; returning commits the run,
raising applies the task's failureMode (pyncette's own semantics). Here the run:

1. looks up the task's *latest* spec in the mirror's cache (a GET if the watch has not seen it);
   an instance whose PyncetteTask is gone or was re-created (other uid) is removed instead;
2. records the start in status (lastScheduleTime, nextRunTime, active, Running) and an Event;
3. runs a Pod (``PodRunner``) or a handler, renewing the lease while it waits;
4. records the end (lastSuccessfulTime / lastFailureTime, an Event), prunes old Pods, and raises
   ``RunFailed`` on failure.

Status changes go to the coalescing ``StatusWriter``: a run costs no status write of its own.
The exceptions are one-off runs (run-now, executeAt), whose start is written at once because the
mirror relies on it not to run them twice.
"""

from __future__ import annotations

import asyncio
import datetime
import logging

from pyncette.errors import LeaseLostException
from pyncette.model import Context
from pyncette_operator.events import EventReason
from pyncette_operator.events import EventRecorder
from pyncette_operator.events import ObjectRef
from pyncette_operator.metrics import Metrics
from pyncette_operator.mirror import Mirror
from pyncette_operator.runs.handlers import HandlerError
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.pod_runner import PodRunner
from pyncette_operator.runs.pod_runner import RunAbandoned
from pyncette_operator.runs.pod_runner import RunFailed
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.spec import InvalidTask
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time
from pyncette_operator.spec import split_instance_name
from pyncette_operator.status import ActiveRun
from pyncette_operator.status import StatusWriter

logger = logging.getLogger(__name__)

_FINISHED_MEMORY = 64


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
    ) -> None:
        self._mirror = mirror
        self._pods = pods
        self._tracker = tracker
        self._handlers = handlers
        self._status = status
        self._events = events
        self._metrics = metrics
        self._stopping = stopping
        self._handovers: set[asyncio.Task[None]] = set()

    async def __call__(self, context: Context) -> None:
        instance = context.task.name
        namespace, name, run_now = split_instance_name(instance)
        cached = await self._mirror.current(namespace, name)
        if cached is None or cached.uid != context.args.get("uid"):
            logger.info("Run of %s skipped: its PyncetteTask is gone; removing the schedule", instance)
            await self._mirror.ctx.unschedule_task(context.task)
            return
        task = cached.parsed
        if isinstance(task, InvalidTask) or (task.suspend and run_now is None):
            return  # the mirror unschedules it; a run already leased does nothing
        clock = self._mirror.ctx.clock
        now = clock.now()
        scheduled_at = context.scheduled_at.astimezone(datetime.UTC)
        self._metrics.start_skew.observe(max(0.0, (now - scheduled_at).total_seconds()))
        next_time = None if run_now is not None else context.task.get_next_execution(now, scheduled_at)
        one_off = run_now is not None or task.execute_at is not None
        if task.is_pod:
            await self._run_pod(context, task, scheduled_at, run_now, next_time=next_time, one_off=one_off)
        else:
            await self._run_handler(context, task, scheduled_at, run_now, next_time=next_time, one_off=one_off)

    # ---- status bookkeeping ----

    def _started(
        self,
        task: TaskSpec,
        run: ActiveRun,
        *,
        run_now: str | None,
        next_time: datetime.datetime | None,
        one_off: bool,
    ) -> None:
        state = self._status.state(task.namespace, task.name)
        if state.last_schedule_time is None or run.scheduled_at > state.last_schedule_time:
            state.last_schedule_time = run.scheduled_at
        if run_now is not None:
            state.last_run_now = run_now
        else:
            state.next_run_time, state.next_run_known = next_time, True
        state.active[run.name] = run
        self._status.changed(task.namespace, task.name, urgent=one_off)
        self._metrics.count("runs_started", kind=run.kind)
        what = f"Pod {run.name}" if run.kind == "Pod" else f"handler {task.handler_name}"
        trigger = f" (run now: {run_now})" if run_now else ""
        self._events.record(
            ObjectRef(task.namespace, task.name, task.uid),
            reason=EventReason.RUN_STARTED,
            message=f"started {what} for {format_time(run.scheduled_at)}{trigger}",
        )

    def _finished(
        self,
        task: TaskSpec,
        run: ActiveRun,
        *,
        succeeded: bool,
        message: str,
        finished_at: datetime.datetime,
        one_off: bool,
    ) -> None:
        state = self._status.state(task.namespace, task.name)
        state.active.pop(run.name, None)
        state.finished[run.name] = None
        while len(state.finished) > _FINISHED_MEMORY:
            state.finished.pop(next(iter(state.finished)))
        if succeeded:
            if state.last_successful_time is None or finished_at > state.last_successful_time:
                state.last_successful_time = finished_at
        elif state.last_failure_time is None or finished_at > state.last_failure_time:
            state.last_failure_time = finished_at
        self._status.changed(task.namespace, task.name, urgent=one_off)
        self._metrics.count("runs_finished", kind=run.kind, outcome="succeeded" if succeeded else "failed")
        what = f"Pod {run.name}" if run.kind == "Pod" else f"handler {task.handler_name}"
        ref = ObjectRef(task.namespace, task.name, task.uid)
        when = format_time(run.scheduled_at)
        if succeeded:
            self._events.record(ref, reason=EventReason.RUN_SUCCEEDED, message=f"{what} for {when} succeeded")
        else:
            self._events.record(
                ref, reason=EventReason.RUN_FAILED, message=f"{what} for {when} failed: {message}", warning=True
            )

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
    ) -> None:
        clock = self._mirror.ctx.clock
        try:
            pod_name = await self._pods.start(task, scheduled_at, run_now or "")
        except RunFailed as e:
            run = ActiveRun(f"{task.name}@{format_time(scheduled_at)}", "Pod", scheduled_at)
            self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off)
            self._finished(task, run, succeeded=False, message=str(e), finished_at=clock.now(), one_off=one_off)
            raise
        run = ActiveRun(pod_name, "Pod", scheduled_at)
        self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off)
        deadline = None if task.concurrency_policy == "Forbid" or one_off else next_time
        try:
            result = await self._pods.wait(
                task, pod_name, heartbeat=context.heartbeat, deadline=deadline, now=clock.now, stopping=self._stopping
            )
        except RunAbandoned:
            logger.info(
                "Stopped waiting for Pod %s/%s (shutting down); another replica adopts it", task.namespace, pod_name
            )
            raise
        except LeaseLostException:
            # The entry was removed (task deleted or changed) or taken over after a stall: someone
            # else owns the schedule now. Follow the Pod to its end for status, commit nothing.
            logger.info("Lease on %s lost while Pod %s runs; following it without the lease", task.key, pod_name)
            self._hand_over(task, run, one_off=one_off)
            return
        if not result.finished:
            # Allow/Replace: the next run is due; let the schedule move on and watch this Pod to its end.
            self._hand_over(task, run, one_off=one_off)
            return
        self._finished(
            task,
            run,
            succeeded=result.succeeded,
            message=result.message,
            finished_at=result.finished_at or clock.now(),
            one_off=one_off,
        )
        await self._prune(task)
        if not result.succeeded:
            raise RunFailed(result.message)

    def _hand_over(self, task: TaskSpec, run: ActiveRun, *, one_off: bool) -> None:
        async def follow() -> None:
            view = await self._tracker.wait_finished(task.namespace, run.name, timeout=None)
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

    async def _prune(self, task: TaskSpec) -> None:
        latest = self._mirror.cached(task.namespace, task.name)
        spec = latest.parsed if latest is not None and isinstance(latest.parsed, TaskSpec) else task
        await self._pods.prune(spec)

    async def close(self) -> None:
        for handover in list(self._handovers):
            handover.cancel()

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
    ) -> None:
        assert task.handler_name is not None
        clock = self._mirror.ctx.clock
        func = self._handlers.get(task.handler_name, namespace=task.namespace)
        run = ActiveRun(f"handler:{task.handler_name}@{format_time(scheduled_at)}", "Handler", scheduled_at)
        self._started(task, run, run_now=run_now, next_time=next_time, one_off=one_off)
        if func is None:
            message = f"no handler named {task.handler_name!r} serves namespace {task.namespace!r}"
            self._finished(task, run, succeeded=False, message=message, finished_at=clock.now(), one_off=one_off)
            raise RunFailed(message)
        context.args = dict(task.handler_args)
        context.resource = ObjectRef(task.namespace, task.name, task.uid)
        try:
            await func(context)
        except Exception as e:
            # The task's owner sees a HandlerError's message, or else only the exception's type:
            # a message may quote the operator's internals (its backend, its files, other tenants).
            # (pyncette logs the traceback.)
            message = str(e) if isinstance(e, HandlerError) else f"{type(e).__name__} (details in the operator's log)"
            self._finished(task, run, succeeded=False, message=message, finished_at=clock.now(), one_off=one_off)
            raise
        self._finished(task, run, succeeded=True, message="", finished_at=clock.now(), one_off=one_off)
