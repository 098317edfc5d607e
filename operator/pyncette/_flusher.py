"""Batched commits and unlocks of finished executions.

pyncette 1.x committed every execution with its own round trip. Here a finished execution only
queues its result; one background task sends everything queued so far in a single
``commit_executions`` (and, if needed, one ``unlock_executions``) call, and starts the next flush
as soon as the previous one returns. Under load, batches grow by themselves; when idle, a result is
flushed at once.

A flush that fails (an error, or no answer within ``backend_timeout``) is not dropped: its results
are queued again and retried with a growing backoff (on the app's clock) for as long as their
leases would still hold, because a commit that lands before the lease expires is a run that does
not happen twice. Once a lease would have expired, another worker may already have leased the
entry, so the result is given up and logged (the run will likely happen again: at-least-once). At
shutdown the remaining results get one last attempt; nothing waits for a backend that is down.

With a backend that commits and leases in one round trip (``Repository.commits_with_lease``), the
main loop takes the queued commits (``take_commits``) and sends them with its next lease; it hands
them back (``sent``) with the outcome, and a failure is retried here like any failed flush. To
let it, a woken flusher lets the loop run once before flushing: while the app drains, results are
queued by executions the loop has just started, and its next lease follows at once.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import types
from collections.abc import Callable
from collections.abc import Generator
from types import TracebackType
from typing import NamedTuple

from pyncette.clock import Clock
from pyncette.deadline import DEFAULT_BACKEND_TIMEOUT
from pyncette.deadline import bounded
from pyncette.model import LeasedExecution
from pyncette.repository import Repository

logger = logging.getLogger(__name__)


# First retry delay of a failed flush; doubles per failed attempt up to _MAX_BACKOFF.
_FIRST_BACKOFF = datetime.timedelta(milliseconds=50)
_MAX_BACKOFF = datetime.timedelta(seconds=2)


@types.coroutine
def _one_loop_pass() -> Generator[None, None, None]:
    """Lets every other ready callback run once, as ``asyncio.sleep(0)`` does, without calling it:
    tests written for pyncette 1.x replace ``asyncio.sleep`` with a fake clock's, whose sleeps
    (even of 0 s) end only when that clock is moved on."""
    yield


class _Result(NamedTuple):
    """A queued result (a tuple: one is made per execution, so it is kept cheap)."""

    execution: LeasedExecution
    expires_at: datetime.datetime | None  # when its lease runs out; None: unknown (not retried)


class ResultFlusher:
    """Owns the queue of finished executions of one app context."""

    def __init__(
        self,
        repository: Repository,
        *,
        clock: Clock,
        on_next_due: Callable[[datetime.datetime], None],
        timeout: float = DEFAULT_BACKEND_TIMEOUT.total_seconds(),
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._on_next_due = on_next_due
        self._timeout = timeout
        self._commits: list[_Result] = []
        self._unlocks: list[_Result] = []
        self._queued = asyncio.Event()
        self._lock = asyncio.Lock()
        self._closing = False
        self._stop = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._backoff = datetime.timedelta()
        self._failing: str | None = None  # the error of the current failure streak (logged once)
        # The main loop sends queued commits with its leases (see the module docstring).
        self.commits_with_lease = bool(getattr(repository, "commits_with_lease", False))

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
        self._stop.set()
        self._queued.set()
        if self._worker is not None:
            await self._worker
        await self.flush()
        self._give_up(self._commits, commit=True, reason="the app is shutting down")
        self._give_up(self._unlocks, commit=False, reason="the app is shutting down")
        self._commits, self._unlocks = [], []

    def commit(self, execution: LeasedExecution, *, expires_at: datetime.datetime | None = None) -> None:
        """Queues a commit: the entry moves on to its next scheduled time.

        ``expires_at`` is when the execution's lease runs out: a failed commit is retried until then.
        """
        self._commits.append(_Result(execution, expires_at))
        self._queued.set()

    def unlock(self, execution: LeasedExecution, *, expires_at: datetime.datetime | None = None) -> None:
        """Queues an unlock: the entry becomes due again for a retry."""
        self._unlocks.append(_Result(execution, expires_at))
        self._queued.set()

    @property
    def pending(self) -> int:
        return len(self._commits) + len(self._unlocks)

    def take_commits(self) -> list[_Result]:
        """Hands over the queued commits to be sent with a lease; ``sent`` must follow."""
        if self._backoff or not self._commits:
            return []  # failing: retries keep their own pace
        commits, self._commits = self._commits, []
        return commits

    def sent(self, results: list[_Result], error: BaseException | None) -> None:
        """What became of commits taken with ``take_commits``: sent (``error`` None) or failed.

        Sent, they need no wake-up hint: the lease they went with ran after them and its next due
        time already counts the times they moved to."""
        if error is None:
            return
        if isinstance(error, asyncio.CancelledError):  # not sent: queued again as they were
            self._commits[:0] = results
            self._queued.set()
            return
        self._requeue(results, commit=True, problem=f"{type(error).__name__}: {error}")
        self._grow_backoff()
        self._queued.set()

    async def _run(self) -> None:
        while not self._closing:
            await self._queued.wait()
            if self.commits_with_lease:
                await _one_loop_pass()
            self._queued.clear()
            await self.flush()
            if self._backoff and not self._closing:
                await self._wait_for_retry(self._clock.now() + self._backoff)

    async def _wait_for_retry(self, when: datetime.datetime) -> None:
        """Sleeps until ``when`` (app clock) or shutdown; results queued meanwhile join the retry."""
        sleeper = asyncio.ensure_future(self._clock.sleep_until(when))
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stopper.cancel()
        self._queued.set()

    async def flush(self) -> None:
        """Sends everything queued so far (waits for a flush already in progress first).

        What fails stays queued for the next attempt while its lease holds.
        """
        async with self._lock:
            commits, self._commits = self._commits, []
            unlocks, self._unlocks = self._unlocks, []
            failed: str | None = None
            if commits:
                failed = await self._send(commits, commit=True) or failed
            if unlocks:
                failed = await self._send(unlocks, commit=False) or failed
            if failed is None:
                if self._failing is not None and not (self._commits or self._unlocks):
                    logger.warning("Committing results works again (it failed with %s)", self._failing)
                    self._failing = None
                self._backoff = datetime.timedelta()
            else:
                self._grow_backoff()

    async def _send(self, results: list[_Result], *, commit: bool) -> str | None:
        """One round trip for ``results``; on failure requeues what can still be retried."""
        now = self._clock.now()
        executions = [result.execution for result in results]
        try:
            if commit:
                await bounded(
                    self._repository.commit_executions(now, executions),
                    operation="commit_executions",
                    timeout=self._timeout,
                )
            else:
                await bounded(
                    self._repository.unlock_executions(now, executions),
                    operation="unlock_executions",
                    timeout=self._timeout,
                )
        except Exception as e:
            problem = f"{type(e).__name__}: {e}"
            self._requeue(results, commit=commit, problem=problem)
            return problem
        if commit:
            self._note_next_due(executions)
        return None

    def _grow_backoff(self) -> None:
        """After a failure: the next retry waits twice as long as the last (50 ms up to 2 s)."""
        self._backoff = min(max(self._backoff * 2, _FIRST_BACKOFF), _MAX_BACKOFF)

    def _requeue(self, results: list[_Result], *, commit: bool, problem: str) -> None:
        """Queues failed results again while their leases hold; gives up (and logs) the others."""
        if self._failing is None:
            logger.warning(
                "Failed to %s %d execution(s) (%s); retrying while their leases hold",
                "commit" if commit else "unlock",
                len(results),
                problem,
            )
            self._failing = problem
        now = self._clock.now()
        retry = [r for r in results if r.expires_at is not None and r.expires_at > now]
        expired = [r for r in results if r.expires_at is None or r.expires_at <= now]
        self._give_up(expired, commit=commit, reason=problem)
        (self._commits if commit else self._unlocks)[:0] = retry

    def _note_next_due(self, executions: list[LeasedExecution]) -> None:
        """Only a hint for the main loop's sleep (the backend holds the truth): the earliest next time."""
        now = self._clock.now()
        earliest: datetime.datetime | None = None
        for execution in executions:
            try:
                due = execution.task.get_next_execution(now, execution.scheduled_at)
            except Exception:
                due = None  # the backend reported it when it could not move the entry
            if due is not None and (earliest is None or due < earliest):
                earliest = due
        if earliest is not None:
            self._on_next_due(earliest)

    @staticmethod
    def _give_up(results: list[_Result], *, commit: bool, reason: str) -> None:
        if not results:
            return
        names = ", ".join(
            f"{r.execution.task.canonical_name}@{r.execution.scheduled_at.isoformat()}" for r in results[:5]
        )
        more = f" and {len(results) - 5} more" if len(results) > 5 else ""
        logger.error(
            "Gave up trying to %s %d execution(s) (%s%s): their leases expired (last error: %s); "
            "they will likely run again",
            "commit" if commit else "unlock",
            len(results),
            names,
            more,
            reason,
        )
