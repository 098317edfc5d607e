"""Executors: where task executions run once the main loop has leased them.

An executor is an async context manager with ``spawn_task(awaitable)`` (the pyncette 1.x shape, so
custom ``executor_cls`` classes written for 1.x keep working). Ours also answer ``free_slots()``:
the main loop leases at most that many entries per round trip, because a leased entry that cannot
start yet is a lease ticking away for nothing (and, for AT_MOST_ONCE tasks, a run that may be
skipped). An executor without ``free_slots`` is assumed to take a whole batch at once.

Leaving the context waits for the running executions, or cancels them if the block is being
cancelled.

``DefaultExecutor.start_batch`` is the main loop's fast path: no asyncio Task per execution unless
its body suspends. A leased batch starts in one Task (a "runner"), which drives the executions one
after the other, each in a copy of the context it would have had as a Task of its own. A body that
finishes without suspending (most do: the work was quick, or it only queued something) costs no Task,
no event loop callback and no Task bookkeeping. A body that suspends keeps the runner it started in
for the rest of its life, and the executions after it move to a new runner, scheduled at once. So
``current_task()`` inside a body is always a Task that runs that body and nothing else from the
moment it can suspend: ``asyncio.timeout``, ``TaskGroup`` and libraries that key state by the
current task (anyio, hence httpx) bind to a Task that is the body's own, and cancelling it cancels
the body only. A batch whose bodies all suspend takes one Task per execution, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import sys
import types
from collections.abc import Awaitable
from collections.abc import Coroutine
from collections.abc import Generator
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from typing import TypeVar

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_CONCURRENCY_LIMIT = 100
_RUNNER_NAME = "pyncette-execution"  # one name for all (an unnamed Task formats one of its own)
# Python 3.12+: asyncio.Task(..., eager_start=True) runs the first step at once.
_EAGER_START = sys.version_info >= (3, 12)


def start_task(coro: Coroutine[Any, Any, _T], name: str = _RUNNER_NAME, *, eager: bool = True) -> asyncio.Task[_T]:
    """A Task for ``coro``. On Python 3.12+ it runs up to its first suspension right away (eager
    start) unless ``eager`` is False or the loop has a task factory: the factory is always honoured.

    Named: an unnamed Task formats a "Task-N" string of its own. With no task factory installed on
    the loop the Task is created directly, as ``create_task`` would.
    """
    loop = asyncio.get_running_loop()
    if loop.get_task_factory() is not None:
        return loop.create_task(coro, name=name)
    if eager and _EAGER_START:
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    return asyncio.Task(coro, loop=loop, name=name)


@types.coroutine
def _resume(
    execution: Coroutine[Any, Any, None], waiting_on: Any, context: contextvars.Context
) -> Generator[Any, Any, None]:
    """Drives an execution that suspended (on ``waiting_on``) to its end, from the Task it started in.

    What it waits on goes up to the Task unchanged, and what the Task sends or throws back (results,
    cancellation) goes down to it, every step inside the execution's own ``context``: to the body and
    to asyncio, it is as if it were the Task's coroutine.
    """
    while True:
        try:
            value = yield waiting_on
        except GeneratorExit:
            execution.close()
            raise
        except BaseException as e:
            try:
                waiting_on = context.run(execution.throw, e)
            except StopIteration:
                return
        else:
            try:
                waiting_on = context.run(execution.send, value)
            except StopIteration:
                return


class SynchronousExecutor(contextlib.AbstractAsyncContextManager["SynchronousExecutor"]):
    """Runs each execution inline: the main loop waits for it before doing anything else.

    Useful for debugging, and for apps that must never run two tasks at once.
    """

    def __init__(self, **kwargs: Any) -> None:
        del kwargs

    async def __aenter__(self) -> SynchronousExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def free_slots(self) -> int:
        """Always one: the next execution starts as soon as the loop hands it over."""
        return 1

    async def spawn_task(self, task: Awaitable[None]) -> None:
        await task


class DefaultExecutor(contextlib.AbstractAsyncContextManager["DefaultExecutor"]):
    """Runs executions concurrently on the event loop, at most ``concurrency_limit`` (default 100) at a time."""

    _limit: int
    _busy: int  # executions started (or about to start) and not finished: the slots taken
    _tasks: set[asyncio.Future[Any]]  # the runners and spawned tasks not done yet
    _unstarted: dict[asyncio.Future[Any], tuple[Sequence[Coroutine[Any, Any, None]], int]]
    _slot_freed: asyncio.Event
    _resume_from: int

    def __init__(self, **kwargs: Any) -> None:
        limit = kwargs.get("concurrency_limit", DEFAULT_CONCURRENCY_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"concurrency_limit: must be an integer >= 1, got {limit!r}")
        self._limit = limit
        self._busy = 0
        self._tasks = set()
        self._unstarted = {}  # runners that have not run yet: their executions, from which index
        self._resume_from = 0  # where start_batch goes on after an eager runner suspended
        self._slot_freed = asyncio.Event()

    async def __aenter__(self) -> DefaultExecutor:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._tasks:
            return
        cancelling = exc_type is not None and issubclass(exc_type, asyncio.CancelledError)
        if cancelling:
            logger.warning("Cancelling %d running task(s).", self._busy)
        else:
            logger.info("Waiting for %d running task(s) to finish.", self._busy)
        while self._tasks:  # a runner may hand executions over to a new one while we wait
            if cancelling:
                for task in self._tasks:
                    task.cancel()
            await asyncio.wait(list(self._tasks))
        # Runners cancelled before their first step never started their executions: close those.
        for executions, first in self._unstarted.values():
            for execution in executions[first:]:
                execution.close()
                self._busy -= 1
        self._unstarted.clear()

    @property
    def concurrency_limit(self) -> int:
        return self._limit

    def free_slots(self) -> int:
        """How many executions could start right now."""
        return self._limit - self._busy

    async def wait_for_free_slot(self) -> None:
        """Returns once at least one execution could start."""
        while self.free_slots() <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def spawn_task(self, task: Awaitable[None]) -> None:
        """Starts ``task`` in the background (waiting for a free slot first, like 1.x)."""
        await self.wait_for_free_slot()
        running = asyncio.ensure_future(task)
        self._busy += 1
        self._tasks.add(running)
        running.add_done_callback(self._spawned_task_done)

    def start_batch(self, executions: Sequence[Coroutine[Any, Any, None]]) -> None:
        """Starts ``executions`` now, without waiting: the caller has seen that many free slots.

        They run one after the other in one Task; each that suspends keeps that Task and the rest
        move on to a new one (see the module docstring). On Python 3.12+ (with no task factory on the
        loop) they start eagerly: the ones that do not suspend are done when this returns, and free
        their slots; each Task is started from here, never from inside another, so a batch of bodies
        that all suspend does not nest one eager start in the other.
        """
        if not executions:
            return
        self._busy += len(executions)
        loop = asyncio.get_running_loop()
        if not _EAGER_START or loop.get_task_factory() is not None:
            self._launch(executions, 0)
            return
        first, count = 0, len(executions)
        while first < count:
            self._resume_from = count
            runner = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
                self._run(executions, first, hand_over=False), loop=loop, name=_RUNNER_NAME, eager_start=True
            )
            if not runner.done():  # one of them suspended: the runner is its own from now on
                self._track(runner)
            first = self._resume_from

    def _launch(self, executions: Sequence[Coroutine[Any, Any, None]], first: int) -> None:
        """A runner for ``executions[first:]``, scheduled like any Task; it hands over to the next itself."""
        runner = start_task(self._run(executions, first, hand_over=True), eager=False)
        self._unstarted[runner] = (executions, first)
        self._track(runner)

    def _track(self, runner: asyncio.Task[None]) -> None:
        self._tasks.add(runner)
        runner.add_done_callback(self._tasks.discard)

    async def _run(self, executions: Sequence[Coroutine[Any, Any, None]], first: int, *, hand_over: bool) -> None:
        """A runner: starts ``executions[first:]`` in turn, and stays with the first one that suspends.

        The executions after that one are handed over to a new runner (``hand_over``), or left for
        ``start_batch`` to start, from ``_resume_from``, once this runner's eager start returns.
        """
        if self._unstarted:
            self._unstarted.pop(asyncio.current_task(), None)  # type: ignore[arg-type]
        last = len(executions) - 1
        for index in range(first, last + 1):
            execution = executions[index]
            context = contextvars.copy_context()  # what a Task of its own would have had
            try:
                waiting_on = context.run(execution.send, None)
            except StopIteration:
                self._execution_done()
                continue
            except Exception as e:
                logger.error("Execution crashed outside of the task body", exc_info=e)
                self._execution_done()
                continue
            except BaseException:  # e.g. SystemExit: it ends this Task, not the rest of the batch
                self._execution_done()
                self._pass_on(executions, index + 1, hand_over=hand_over)
                raise
            # It suspended: this Task is now its own, and the rest of the batch moves to another.
            self._pass_on(executions, index + 1, hand_over=hand_over)
            try:
                await _resume(execution, waiting_on, context)
            except Exception as e:
                logger.error("Execution crashed outside of the task body", exc_info=e)
            finally:
                self._execution_done()
            return

    def _pass_on(self, executions: Sequence[Coroutine[Any, Any, None]], first: int, *, hand_over: bool) -> None:
        if first >= len(executions):
            return
        if hand_over:
            self._launch(executions, first)
        else:
            self._resume_from = first

    def _execution_done(self) -> None:
        self._busy -= 1
        self._slot_freed.set()

    def _spawned_task_done(self, task: asyncio.Future[None]) -> None:
        self._tasks.discard(task)
        self._execution_done()
        if not task.cancelled() and task.exception() is not None:
            logger.error("Execution crashed outside of the task body", exc_info=task.exception())
