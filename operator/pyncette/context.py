"""The running app (``PyncetteContext``): its run-time API and the main loop.

The main loop is where this rewrite differs from pyncette 1.x:

* One round trip leases a whole batch of due entries (``Repository.lease_due``); the lease is the
  readiness check, so nothing is polled twice. It never leases more than the executor can start
  right now, so no lease ticks away while its execution waits for a slot.
* Finished executions are committed or unlocked in batches by a background ``ResultFlusher``.
* Between polls the loop sleeps until the earliest due time it knows of (what the backend reported,
  what this process scheduled, what its own commits moved), bounded by ``poll_interval``, and
  wakes early when this process learns of something sooner. Start lag is therefore not a poll
  interval.
* Every "now" and every wait goes through one injectable ``Clock``, so tests drive schedules with
  ``FakeClock`` instead of sleeping.
* A failing backend is logged once per outage and retried with a backoff bounded by
  ``poll_interval``; the loop itself never dies of it. Every backend call (lease, commit, unlock,
  heartbeat, registration, reads) has a deadline, ``backend_timeout`` (see ``pyncette.deadline``),
  so a hung connection is a failure like any other instead of a loop stuck for hours.

Shutdown (``shutdown()``, or the first SIGINT/SIGTERM under ``main()``) stops leasing and lets the
running executions finish; ``Pyncette.create()`` then flushes their results and only then closes
fixtures and the backend. Declaring tasks is ``pyncette.pyncette``'s job, the process entry point
(signals, logging) is ``pyncette._main``'s.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Coroutine
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING
from typing import Any
from typing import TypeVar

from pyncette._flusher import ResultFlusher
from pyncette.clock import Clock
from pyncette.deadline import bounded
from pyncette.errors import LeaseLostException
from pyncette.errors import PyncetteException
from pyncette.executor import DefaultExecutor
from pyncette.executor import start_task
from pyncette.model import Context
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import TaskState
from pyncette.repository import Repository
from pyncette.schedule import UTC
from pyncette.schedule import resolve_timezone
from pyncette.task import PartitionedTask
from pyncette.task import Task

if TYPE_CHECKING:
    from pyncette.pyncette import Pyncette

logger = logging.getLogger("pyncette.pyncette")  # the 1.x logger name, which users filter on
_T = TypeVar("_T")

# First retry delay after a failed poll; doubles per failure, capped at poll_interval.
_FIRST_BACKOFF = datetime.timedelta(milliseconds=50)
# A placeholder schedule for instances built only to address a stored entry (get/unschedule).
_ADDRESS_ONLY = datetime.timedelta(seconds=1)


_STARTING = "starting"
_POLLING = "polling the backend"
_SLEEPING = "sleeping"
_WAITING_FOR_SLOT = "waiting for a free slot (concurrency_limit reached)"
_STARTING_TASKS = "starting tasks"
_STOPPED = "stopped"


@dataclass(frozen=True)
class Health:
    """The app's health as probes see it (``PyncetteContext.health()``).

    ``alive`` (liveness): the main loop is not wedged. A loop busy at ``concurrency_limit`` is
    alive, and so is one whose backend is down: restarting the process would not help either.
    ``ready`` (readiness): the backend answered the last poll, recently (or the loop is busy and
    its last poll succeeded), and the app is not shutting down.
    """

    alive: bool
    ready: bool
    loop: str
    backend: str
    last_poll: datetime.datetime | None
    running: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "alive": self.alive,
            "ready": self.ready,
            "loop": self.loop,
            "backend": self.backend,
            "lastPoll": self.last_poll.isoformat() if self.last_poll else None,
            "running": self.running,
        }


class _Run:
    """One leased execution while it runs.

    Its current lease lives in ``context._lease`` (as in 1.x, where code may read or replace it):
    heartbeats refresh it, and None there means the lease was lost.
    """

    __slots__ = ("app", "execution", "expires_at", "leased_at")

    def __init__(self, app: PyncetteContext, execution: LeasedExecution, leased_at: datetime.datetime) -> None:
        self.app = app
        self.execution = execution
        self.leased_at = leased_at
        # When the lease runs out unless a heartbeat extends it (results are retried until then).
        self.expires_at = leased_at + execution.task.lease_duration

    def __call__(self, context: Context) -> Awaitable[None]:
        """``context.heartbeat()`` of this execution (``Context._extend_lease``)."""
        return self.app._heartbeat(self, context)


class PyncetteContext:
    """A running Pyncette app: the API used at run time, and the main loop."""

    _app: Pyncette
    _repository: Repository
    _executor: Any
    _root_context: Context | None
    _last_tick: datetime.datetime | None

    def __init__(
        self,
        app: Pyncette,
        repository: Repository,
        executor: Any,
        *,
        clock: Clock | None = None,
        flusher: ResultFlusher | None = None,
    ) -> None:
        self._app = app
        self._repository = repository
        self._executor = executor
        self._clock = clock or app.clock
        self._timeout = app._backend_timeout.total_seconds()
        self._flusher = flusher or ResultFlusher(
            repository, clock=self._clock, on_next_due=self._note_due, timeout=self._timeout
        )
        self._root_context = None
        self._last_tick = None
        # What the main loop is doing and since when (by the app's clock), for the health checks.
        self._stage = _STARTING
        self._stage_since: datetime.datetime | None = None
        self._outage: str | None = None
        self._shutting_down = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._hint: datetime.datetime | None = None
        self._sleeping_until: datetime.datetime | None = None
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def initialize(self, root_context: Context) -> None:
        self._root_context = root_context
        self._last_tick = self._clock.now()
        self._stage_since = self._last_tick

    # ---- public run-time API ----

    @property
    def clock(self) -> Clock:
        """The app's time source (use it instead of the wall clock in tasks that must be testable)."""
        return self._clock

    @property
    def last_tick(self) -> datetime.datetime | None:
        """When the last successful poll of the backend happened (by the app's clock)."""
        return self._last_tick

    def health(self) -> Health:
        """What the liveness and readiness probes need to know, without calling the backend."""
        now = self._clock.now()
        poll = self._app._poll_interval
        deadline = self._app._backend_timeout
        since = self._stage_since or now
        # A poll takes at most backend_timeout, a sleep at most poll_interval: a loop that stays in
        # either much longer is wedged. Waiting for a free slot, or for a synchronous executor to
        # finish a task, is busy, not wedged: those may last as long as the tasks do.
        wedged = self._stage in (_POLLING, _SLEEPING) and now - since > 2 * (poll + deadline)
        fresh = self._last_tick is not None and now - self._last_tick < 2 * poll + deadline
        busy = self._stage in (_WAITING_FOR_SLOT, _STARTING_TASKS)
        ready = not self.shutting_down and self._outage is None and (fresh or busy)
        if self._outage is not None:
            backend = f"failing: {self._outage}"
        elif fresh or busy:
            backend = "ok"
        else:
            backend = "not polled since " + (self._last_tick.isoformat() if self._last_tick else "start")
        return Health(
            alive=not wedged,
            ready=ready,
            loop=f"{self._stage} since {since.isoformat()}",
            backend=backend,
            last_poll=self._last_tick,
            running=self._running,
        )

    def _enter(self, stage: str) -> None:
        self._stage = stage
        self._stage_since = self._clock.now()

    @property
    def repository(self) -> Repository:
        return self._repository

    @property
    def backend_timeout(self) -> datetime.timedelta:
        """The deadline of every backend call this app makes (``Pyncette(backend_timeout=...)``)."""
        return self._app._backend_timeout

    def _bounded(self, call: Awaitable[_T], operation: str) -> Awaitable[_T]:
        return bounded(call, operation=operation, timeout=self._timeout)

    async def check_backend(self) -> None:
        """Raises unless the backend answers a trivial request within ``backend_timeout``."""
        await self._bounded(self._repository.check_health(), "check_health")

    async def schedule_task(self, task: Task, instance_name: str, force: bool = False, **kwargs: Any) -> Task:
        """Creates or updates an instance of a dynamic task and returns it.

        ``schedule=``/``interval=``/``execute_at=`` (and ``timezone=``) set its schedule; other
        keywords land in ``context.args``. Without ``force`` a running instance raises
        ``TaskLockedException`` and the sooner of the old and new times is kept; ``force=True``
        drops the lease and replaces the schedule. The instance is validated before anything is
        stored, so a bad call leaves the stored state untouched.
        """
        if not task.dynamic or task.parent_task is not None:
            raise ValueError(f"task {task.canonical_name!r}: schedule_task needs a dynamic task template")
        concrete = task.instantiate(instance_name, **kwargs)
        now = self._clock.now()
        await self._bounded(self._repository.register_task(now, concrete, force=force), "register_task")
        due = concrete.get_next_execution(now, None)
        if due is not None:
            self._note_due(due)
        return concrete

    async def unschedule_task(self, task: Task, instance_name: str | None = None) -> None:
        """Removes an instance of a dynamic task (given as the instance, or template + name)."""
        if task.parent_task is not None:
            concrete = task
        else:
            if instance_name is None:
                raise ValueError("instance name must be provided")
            concrete = task.instantiate(instance_name, interval=_ADDRESS_ONLY)
        await self._bounded(self._repository.unregister_task(self._clock.now(), concrete), "unregister_task")

    async def get_task(self, task: Task, instance_name: str | None = None) -> TaskState | None:
        """The stored state of a static task, or of a dynamic instance (instance, or template + name)."""
        if task.parent_task is not None:
            if instance_name is not None:
                raise ValueError("Cannot provide instance_name with already-instantiated dynamic task")
            concrete = task
        elif instance_name is None:
            concrete = task
        else:
            if not task.dynamic:
                raise ValueError("instance_name provided but task is not dynamic")
            concrete = task.instantiate(instance_name, interval=_ADDRESS_ONLY)
        return await self._bounded(self._repository.get_task_state(self._clock.now(), concrete), "get_task_state")

    async def list_tasks(
        self,
        task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        """One page of a dynamic task's instances; pass the returned token back for the next page."""
        if not task.dynamic or task.parent_task is not None:
            raise ValueError("Cannot list instances of non-dynamic task")
        now = self._clock.now()
        if not isinstance(task, PartitionedTask):
            return await self._bounded(
                self._repository.list_task_states(now, task, limit, continuation_token), "list_task_states"
            )
        return await self._list_partitioned(now, task, limit, continuation_token)

    async def _list_partitioned(
        self,
        now: datetime.datetime,
        task: PartitionedTask,
        limit: int | None,
        continuation_token: ContinuationToken | None,
    ) -> ListTasksResponse:
        # The token is (partition index, that partition's own token).
        index, inner = continuation_token if isinstance(continuation_token, tuple) else (0, None)
        partitions = task.get_partitions()
        result = ListTasksResponse(tasks=[], continuation_token=None)
        while index < len(partitions):
            remaining = None if limit is None else limit - len(result.tasks)
            if remaining is not None and remaining <= 0:
                result.continuation_token = ContinuationToken((index, inner))
                break
            page = await self._bounded(
                self._repository.list_task_states(now, partitions[index], remaining, inner), "list_task_states"
            )
            result.tasks.extend(page.tasks)
            if page.continuation_token is not None:
                inner = page.continuation_token
            else:
                index, inner = index + 1, None
        return result

    def add_to_context(self, name: str, value: Any) -> None:
        """Makes ``value`` available to every task as ``context.<name>``."""
        if name in Context.__annotations__:
            raise ValueError(f"Cannot use reserved name {name}")
        if hasattr(self._root_context, name):
            raise ValueError(f"Key {name} already exists")
        setattr(self._root_context, name, value)

    def shutdown(self) -> None:
        """Stops leasing new work and makes ``run()`` return; running executions are let finish."""
        if not self._shutting_down.is_set():
            logger.info("Initiating graceful shutdown")
        self._shutting_down.set()
        self._wakeup.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down.is_set()

    # ---- the main loop ----

    async def run(self) -> None:
        """Runs the scheduler until ``shutdown()``.

        Like 1.x, it returns as soon as it stops leasing; executions still running finish (and their
        results are flushed) when the ``create()`` block exits, or earlier with ``await drain()``.
        """
        if self._root_context is None:
            raise PyncetteException("Context is not yet initialized")
        tasks = [task for task in self._app._tasks if task.enabled]
        outage: str | None = None
        backoff = datetime.timedelta()

        # The next lease, already sent while the current batch runs (see _lease_ahead), and its "now".
        ahead: asyncio.Task[LeaseBatch] | None = None
        ahead_now = self._clock.now()
        try:
            while True:
                if ahead is None:
                    if self._shutting_down.is_set() or not await self._wait_for_capacity():
                        break
                    limit = min(self._app._batch_size, self._free_slots())
                    self._hint = None  # everything learned so far is covered by this poll
                    self._enter(_POLLING)
                    now = self._clock.now()
                    lease: Awaitable[LeaseBatch] = self._tick(now, tasks, limit)
                else:
                    # Sent before shutdown or not, what it leased is started: nothing leased is left idle.
                    self._enter(_POLLING)
                    now, lease, ahead = ahead_now, ahead, None
                try:
                    batch = await lease
                except Exception as e:
                    problem = f"{type(e).__name__}: {e}"
                    if outage is None:
                        logger.error("Polling the backend failed, retrying: %s", problem)
                        outage = problem
                    self._outage = problem
                    backoff = min(max(backoff * 2, _FIRST_BACKOFF), self._app._poll_interval)
                    self._wakeup.clear()
                    if not self._shutting_down.is_set():
                        self._enter(_SLEEPING)
                        await self._sleep(now + backoff)
                    continue
                if outage is not None:
                    logger.warning("Polling the backend works again (it failed with %s)", outage)
                    outage, backoff = None, datetime.timedelta()
                self._outage = None
                self._last_tick = now

                if batch.has_more:
                    ahead_now = self._clock.now()
                    ahead = self._lease_ahead(ahead_now, tasks, starting=len(batch.executions))
                self._enter(_STARTING_TASKS)
                await self._start_all(batch.executions, now)
                if batch.has_more:
                    if ahead is None:
                        await asyncio.sleep(0)  # let the started executions run before leasing more
                    continue
                self._enter(_SLEEPING)
                await self._sleep_until_due(now, batch.next_due_at)
        finally:
            if ahead is not None:  # only if run() itself is cancelled between sending and awaiting it
                ahead.cancel()
            self._enter(_STOPPED)

    def _lease_ahead(
        self, now: datetime.datetime, tasks: Sequence[Task], *, starting: int
    ) -> asyncio.Task[LeaseBatch] | None:
        """While draining (the last lease hit its limit), sends the next lease before the batch it
        returned starts, so that the backend works on it while this process runs that batch and
        commits the one before: the round trip overlaps the work instead of following it.

        It leases at most the slots that stay free once the ``starting`` executions of the current
        batch have started, so whatever it returns can start at once even if none of the current
        batch has finished by then. None (lease after the batch, as usual) when no slot would be
        free or the app is stopping.
        """
        if self._shutting_down.is_set() or getattr(self._executor, "free_slots", None) is None:
            return None
        limit = min(self._app._batch_size, self._free_slots() - starting)
        if limit <= 0:
            return None
        self._hint = None  # everything learned so far is covered by this poll
        # Its request goes out before the batch runs.
        return start_task(self._tick(now, tasks, limit), "pyncette-lease-ahead")

    async def _tick(self, now: datetime.datetime, tasks: Sequence[Task], limit: int) -> LeaseBatch:
        """One poll: leases up to ``limit`` due entries in one round trip, which also carries the
        results queued so far when the backend can commit and lease at once."""
        commits = self._flusher.take_commits() if self._flusher.commits_with_lease else None
        if not commits:
            return await self._bounded(self._repository.lease_due(now, tasks, limit=limit), "lease_due")
        executions = [result.execution for result in commits]
        try:
            batch = await self._bounded(
                self._repository.commit_and_lease_due(now, executions, tasks, limit=limit), "lease_due"
            )
        except BaseException as e:  # cancelled too: the flusher sends them at the latest when it closes
            self._flusher.sent(commits, e)
            raise
        self._flusher.sent(commits, None)
        return batch

    def _free_slots(self) -> int:
        free_slots = getattr(self._executor, "free_slots", None)
        if free_slots is None:
            return self._app._batch_size
        return max(0, int(free_slots()))

    async def _wait_for_capacity(self) -> bool:
        """Waits until the executor can start something; False if shutdown came first."""
        wait = getattr(self._executor, "wait_for_free_slot", None)
        if self._free_slots() <= 0:
            self._enter(_WAITING_FOR_SLOT)
        while self._free_slots() <= 0 and not self._shutting_down.is_set():
            if wait is None:  # an executor that cannot tell when a slot frees up: check every poll interval
                self._wakeup.clear()
                await self._sleep(self._clock.now() + self._app._poll_interval)
                continue
            waiter = asyncio.ensure_future(wait())
            stopper = asyncio.ensure_future(self._shutting_down.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                stopper.cancel()
        return not self._shutting_down.is_set()

    async def _sleep_until_due(self, now: datetime.datetime, next_due_at: datetime.datetime | None) -> None:
        base = now + self._app._poll_interval
        if next_due_at is not None and next_due_at < base:
            base = next_due_at
        while not self._shutting_down.is_set():
            self._wakeup.clear()
            deadline = base if self._hint is None or self._hint >= base else self._hint
            if self._clock.now() >= deadline:
                return
            await self._sleep(deadline)

    async def _sleep(self, deadline: datetime.datetime) -> None:
        """Sleeps until ``deadline`` by the app's clock, or until woken (earlier due time, shutdown)."""
        if self._wakeup.is_set():
            return
        self._sleeping_until = deadline
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        waker = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._sleeping_until = None
            sleeper.cancel()
            waker.cancel()

    def _note_due(self, when: datetime.datetime) -> None:
        """Something will be due at ``when``: sleep no longer than that."""
        if self._hint is None or when < self._hint:
            self._hint = when
        if self._sleeping_until is not None and when < self._sleeping_until:
            self._wakeup.set()

    async def drain(self) -> None:
        """Waits until no execution is running and their results are flushed to the backend."""
        await self._idle.wait()
        await self._flusher.flush()

    # ---- executing one leased entry ----

    def _fast_start(self) -> Callable[[Sequence[Coroutine[Any, Any, None]]], None] | None:
        """``DefaultExecutor.start_batch`` when the executor is ours (or a subclass keeping our spawn_task)."""
        executor = self._executor
        if isinstance(executor, DefaultExecutor) and type(executor).spawn_task is DefaultExecutor.spawn_task:
            return executor.start_batch
        return None

    async def _start_all(self, executions: Sequence[LeasedExecution], now: datetime.datetime) -> None:
        """Starts a leased batch: at once as far as the executor has free slots, the rest through
        ``spawn_task`` (which waits for slots)."""
        start_batch = self._fast_start()
        if start_batch is not None:
            room = max(0, self._executor.free_slots())
            if room:
                start_batch([self._execute(self._begin(execution, now)) for execution in executions[:room]])
            executions = executions[room:]
        for execution in executions:
            await self._spawn(execution, now)

    def _begin(self, execution: LeasedExecution, now: datetime.datetime) -> _Run:
        """What happens before an execution starts, on every path."""
        task = execution.task
        if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            # Its schedule already moved forward when it was leased.
            try:
                due = task.get_next_execution(now, execution.scheduled_at)
            except Exception:
                due = None
            if due is not None:
                self._note_due(due)
        if logger.isEnabledFor(logging.DEBUG):  # one call instead of two per execution when off
            logger.debug("Executing task %s scheduled at %s", task, execution.scheduled_at)
        if not self._running:
            self._idle.clear()
        self._running += 1
        return _Run(self, execution, now)

    async def _spawn(self, execution: LeasedExecution, now: datetime.datetime) -> None:
        run = self._begin(execution, now)
        try:
            await self._executor.spawn_task(self._execute(run))
        except BaseException:
            self._finished()
            raise

    def _finished(self) -> None:
        self._running -= 1
        if self._running == 0:
            self._idle.set()

    def _populate_context(self, run: _Run) -> Context:
        assert self._root_context is not None
        execution = run.execution
        task = execution.task
        scheduled_at = execution.scheduled_at
        if task.timezone is not None or scheduled_at.tzinfo is not UTC:  # backends hand back UTC times
            scheduled_at = scheduled_at.astimezone(resolve_timezone(task.timezone))
        context = Context.__new__(Context)
        fields = self._root_context.__dict__.copy()  # faster than a literal unpacking it
        fields["task"] = task
        fields["scheduled_at"] = scheduled_at
        fields["args"] = dict(task.extra_args)
        fields["_lease"] = execution.lease
        fields["_extend_lease"] = run
        context.__dict__ = fields
        return context

    async def _release_lease(self, context: Context) -> None:
        """``context.release()``: unlocks the entry now and wakes the loop to lease it again."""
        lease = context._lease
        if lease is None:
            return
        scheduled_at = context.scheduled_at.astimezone(UTC)
        execution = LeasedExecution(context.task, scheduled_at, lease)
        await self._bounded(self._repository.unlock_executions(self._clock.now(), [execution]), "unlock_executions")
        context._lease = None
        context._released = True
        self._note_due(scheduled_at)

    async def _heartbeat(self, run: _Run, context: Context) -> None:
        execution = run.execution
        if execution.lease is None or execution.task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            return  # nothing is leased
        if context._lease is None:
            raise LeaseLostException(execution.task)
        current = replace(execution, lease=context._lease)
        now = self._clock.now()
        # A heartbeat that fails or overruns raises and keeps the lease as it was: it may still be
        # held (with_heartbeat retries at its next interval); only the backend can say it is lost.
        [lease] = await self._bounded(self._repository.extend_leases(now, [current]), "extend_leases")
        context._lease = lease
        if lease is None:
            raise LeaseLostException(execution.task)
        run.expires_at = now + execution.task.lease_duration

    async def _execute(self, run: _Run) -> None:
        try:
            task = run.execution.task
            context = self._populate_context(run)
            middlewares = self._app._middlewares
            try:
                if middlewares:
                    call: Callable[[], Awaitable[None]] = partial(task, context)
                    for middleware in reversed(middlewares):
                        call = partial(middleware, context, call)
                    await call()
                else:
                    await task(context)
            except Exception as e:
                logger.warning("Task %s failed", task, exc_info=e)
                succeeded = False
            else:
                succeeded = True
            self._settle(run, context, succeeded=succeeded)
        finally:
            self._finished()

    def _settle(self, run: _Run, context: Context, *, succeeded: bool) -> None:
        """Queues the result of a finished execution, following execution and failure modes."""
        execution = run.execution
        task = execution.task
        if execution.lease is None or task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            return
        if context._lease is None:
            # Another worker may own the entry now; committing or unlocking would be wrong.
            if not context._released:
                logger.warning("Lease on task %s lost, not committing", task)
            return
        if context._lease is not execution.lease:
            execution = replace(execution, lease=context._lease)
        if succeeded or task.failure_mode == FailureMode.COMMIT:
            self._flusher.commit(execution, expires_at=run.expires_at)
        elif task.failure_mode == FailureMode.UNLOCK:
            self._flusher.unlock(execution, expires_at=run.expires_at)  # retried on the next poll
        else:
            self._note_due(run.leased_at + task.lease_duration)  # retried once the lease expires
