"""Batched commits and unlocks of finished executions.

pyncette 1.x committed every execution with its own round trip. Here a finished execution only
queues its result; one background task sends everything queued so far in a single
``commit_executions`` (and, if needed, one ``unlock_executions``) call, and starts the next flush
as soon as the previous one returns. Under load, batches grow by themselves; when idle, a result is
flushed at once.

A failed flush is logged and dropped, like a failed commit in 1.x: the leases then expire and the
executions will likely run again (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from types import TracebackType

from pyncette.clock import Clock
from pyncette.model import LeasedExecution
from pyncette.repository import Repository

logger = logging.getLogger(__name__)


class ResultFlusher:
    """Owns the queue of finished executions of one app context."""

    def __init__(
        self,
        repository: Repository,
        *,
        clock: Clock,
        on_next_due: Callable[[datetime.datetime], None],
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._on_next_due = on_next_due
        self._commits: list[LeasedExecution] = []
        self._unlocks: list[LeasedExecution] = []
        self._queued = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ResultFlusher:
        self._worker = asyncio.create_task(self._run(), name="pyncette-result-flusher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._closing = True
        self._queued.set()
        if self._worker is not None:
            await self._worker
        await self.flush()

    def commit(self, execution: LeasedExecution) -> None:
        """Queues a commit: the entry moves on to its next scheduled time."""
        self._commits.append(execution)
        self._queued.set()

    def unlock(self, execution: LeasedExecution) -> None:
        """Queues an unlock: the entry becomes due again for a retry."""
        self._unlocks.append(execution)
        self._queued.set()

    @property
    def pending(self) -> int:
        return len(self._commits) + len(self._unlocks)

    async def _run(self) -> None:
        while not self._closing:
            await self._queued.wait()
            self._queued.clear()
            await self.flush()

    async def flush(self) -> None:
        """Sends everything queued so far (waits for a flush already in progress first)."""
        async with self._lock:
            commits, self._commits = self._commits, []
            unlocks, self._unlocks = self._unlocks, []
            if commits:
                await self._send(commits, commit=True)
            if unlocks:
                await self._send(unlocks, commit=False)

    async def _send(self, executions: list[LeasedExecution], *, commit: bool) -> None:
        now = self._clock.now()
        try:
            if commit:
                await self._repository.commit_executions(now, executions)
            else:
                await self._repository.unlock_executions(now, executions)
        except Exception as e:
            what = "commit" if commit else "unlock"
            logger.warning(
                "Failed to %s %d execution(s) (%s: %s); they will likely run again.",
                what,
                len(executions),
                type(e).__name__,
                e,
            )
            return
        if not commit:
            return
        for execution in executions:
            # Only a hint for the main loop's sleep; the backend holds the truth.
            with contextlib.suppress(Exception):
                due = execution.task.get_next_execution(now, execution.scheduled_at)
                if due is not None:
                    self._on_next_due(due)
