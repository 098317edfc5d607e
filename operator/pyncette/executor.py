"""Executors: where task executions run once the main loop has leased them.

An executor is an async context manager with ``spawn_task(awaitable)`` (the pyncette 1.x shape, so
custom ``executor_cls`` classes written for 1.x keep working). Ours also answer ``free_slots()``:
the main loop leases at most that many entries per round trip, because a leased entry that cannot
start yet is a lease ticking away for nothing (and, for AT_MOST_ONCE tasks, a run that may be
skipped). An executor without ``free_slots`` is assumed to take a whole batch at once.

Leaving the context waits for the running executions, or cancels them if the block is being
cancelled.

``DefaultExecutor.start`` is the main loop's fast path (no coroutine per hand-over, no done
callback per execution: the bookkeeping runs in the execution's own ``finally``). On Python 3.12+
an execution is started eagerly: its body runs at once, as the current task of a Task created with
``eager_start``, and never touches the event loop's queue unless it suspends. Python 3.11 has no
eager start; there, driving the body's first step by hand would run it while ``current_task()`` is
the main loop's task, so ``asyncio.timeout``, ``TaskGroup`` and libraries that key state by the
current task (anyio, hence httpx) would bind to the wrong task. So on 3.11 every execution gets its
own Task, created directly, and the only thing saved is the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable
from collections.abc import Coroutine
from types import TracebackType
from typing import Any
from typing import TypeVar

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_CONCURRENCY_LIMIT = 100
# Python 3.12+: asyncio.Task(..., eager_start=True) runs the first step at once (see the module docstring).
_EAGER_START = sys.version_info >= (3, 12)


def start_task(coro: Coroutine[Any, Any, _T], name: str = "pyncette-execution") -> asyncio.Task[_T]:
    """A Task for ``coro`` that runs up to its first suspension right away on Python 3.12+ (eager
    start), or first among what is scheduled from now on 3.11.

    Named (one name for all executions): an unnamed Task formats a "Task-N" string of its own. With
    no task factory installed on the loop the Task is created directly, as ``create_task`` would.
    """
    loop = asyncio.get_running_loop()
    if _EAGER_START:
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    if loop.get_task_factory() is None:
        return asyncio.Task(coro, loop=loop, name=name)
    return loop.create_task(coro, name=name)


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
    """Runs executions as asyncio tasks, at most ``concurrency_limit`` (default 100) at a time."""

    _tasks: dict[object, asyncio.Future[None]]  # running executions, by their coroutine (or future)
    _limit: int
    _slot_freed: asyncio.Event

    def __init__(self, **kwargs: Any) -> None:
        limit = kwargs.get("concurrency_limit", DEFAULT_CONCURRENCY_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"concurrency_limit: must be an integer >= 1, got {limit!r}")
        self._limit = limit
        self._tasks = {}
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
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            logger.warning("Cancelling %d running task(s).", len(self._tasks))
            for task in self._tasks.values():
                task.cancel()
        logger.info("Waiting for %d running task(s) to finish.", len(self._tasks))
        await asyncio.wait(list(self._tasks.values()))

    @property
    def concurrency_limit(self) -> int:
        return self._limit

    def free_slots(self) -> int:
        """How many executions could start right now."""
        return self._limit - len(self._tasks)

    async def wait_for_free_slot(self) -> None:
        """Returns once at least one execution could start."""
        while self.free_slots() <= 0:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def spawn_task(self, task: Awaitable[None]) -> None:
        """Starts ``task`` in the background (waiting for a free slot first, like 1.x)."""
        await self.wait_for_free_slot()
        running = asyncio.ensure_future(task)
        self._tasks[running] = running
        running.add_done_callback(self._finished)

    def start(self, execution: Coroutine[Any, Any, None]) -> None:
        """Starts ``execution`` now, without waiting: the caller has seen ``free_slots() > 0``.

        Like ``spawn_task`` but with no coroutine of its own and no done callback; on Python 3.12+
        the execution runs eagerly up to its first suspension (a body that never suspends is done
        when this returns and takes no slot at all).
        """
        running = start_task(self._guarded(execution))
        if not running.done():  # done already: it finished eagerly (3.12+) and took no slot
            self._tasks[execution] = running

    async def _guarded(self, execution: Coroutine[Any, Any, None]) -> None:
        """Runs one execution started by ``start``; frees its slot when it ends, however it ends."""
        try:
            await execution
        except Exception as e:
            logger.error("Execution crashed outside of the task body", exc_info=e)
        finally:
            self._tasks.pop(execution, None)
            self._slot_freed.set()

    def _finished(self, task: asyncio.Future[None]) -> None:
        self._tasks.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("Execution crashed outside of the task body", exc_info=task.exception())
