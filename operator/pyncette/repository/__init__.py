"""The repository contract: how the scheduler talks to a storage backend.

Two layers:

* The pyncette 1.x abstract methods (``poll_dynamic_task``, ``register_task``, ``poll_task``,
  ``commit_task``, ``extend_lease``, ``unlock_task``, ``get_task_state``, ``list_task_states``).
  They remain the extension point: a third-party backend that implements only these works.
* The batch protocol the main loop actually uses: ``lease_due``, ``commit_executions``,
  ``unlock_executions``, ``extend_leases``, ``register_tasks``. Their default implementations are
  built on the 1.x methods (so they cost one round trip per instance, like 1.x); every bundled
  backend overrides them to cost one round trip per *batch*.

The bundled backends build on ``pyncette.repository.kit`` (``BatchRepository``): the 1.x methods
over the batch ones, per-row quarantine, static entry creation and one lease type, written once.

Semantics of an entry (a static task's state, or one instance of a dynamic task):

* It has ``execute_after`` (the next scheduled UTC time) and optionally a lease
  (``locked_by``, ``locked_until``). It is *due* when ``execute_after <= now`` and it is not leased
  (no lease, or ``locked_until <= now``).
* Leasing an AT_LEAST_ONCE entry sets ``locked_by`` to a fresh id and ``locked_until`` to
  ``now + lease_duration``; the returned lease proves ownership for commit/unlock/extend.
* Leasing an AT_MOST_ONCE entry moves ``execute_after`` to the next scheduled time (deleting the
  entry when there is none) and returns it without a lease: a crash after that skips the run.
* Committing with the right lease moves ``execute_after`` to
  ``task.get_next_execution(now, scheduled_at)`` and clears the lease (deletes the entry when there
  is no next time). With a wrong or expired-and-retaken lease it does nothing.
* Unlocking with the right lease clears the lease, so the entry is due again at once.
* Static tasks are created on first sight with ``execute_after = get_next_execution(now, None)``;
  dynamic instances exist only once ``register_task`` created them.
"""

from __future__ import annotations

import abc
import datetime
import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any
from typing import Protocol

from pyncette.errors import PyncetteException
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import Lease
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import PollResponse
from pyncette.model import QueryResponse
from pyncette.model import ResultType
from pyncette.model import TaskState
from pyncette.task import Task

logger = logging.getLogger(__name__)


class Repository(abc.ABC):
    """A store of task state shared by every process of one app."""

    # ---- pyncette 1.x single-entry protocol (the extension point) ----

    @abc.abstractmethod
    async def poll_dynamic_task(
        self, utc_now: datetime.datetime, task: Task, continuation_token: ContinuationToken | None = None
    ) -> QueryResponse:
        """Leases a batch of due instances of a dynamic task."""

    @abc.abstractmethod
    async def register_task(self, utc_now: datetime.datetime, task: Task, force: bool = False) -> None:
        """Creates or updates a dynamic task instance.

        Without ``force`` a currently leased instance raises ``TaskLockedException`` and the sooner
        of the old and new next times is kept; with ``force`` the lease is dropped and the new
        schedule replaces the old one.
        """

    @abc.abstractmethod
    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        """Deletes a dynamic task instance (a no-op if it does not exist)."""

    @abc.abstractmethod
    async def poll_task(self, utc_now: datetime.datetime, task: Task, lease: Lease | None = None) -> PollResponse:
        """Checks one entry and leases it if it is due."""

    @abc.abstractmethod
    async def commit_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        """Records a finished execution and moves the entry to its next time."""

    @abc.abstractmethod
    async def extend_lease(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> Lease | None:
        """Extends a lease; returns it if still held, None if it was lost."""

    @abc.abstractmethod
    async def unlock_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        """Releases a lease so the entry is retried."""

    @abc.abstractmethod
    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        """The stored state of one entry, or None."""

    @abc.abstractmethod
    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        """One page of a dynamic task's instances (no particular order, stable pagination)."""

    # ---- batch protocol used by the main loop (override for one round trip per batch) ----

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        """Leases up to ``limit`` due entries of ``tasks`` (static tasks and dynamic templates).

        Earliest-due first where the backend can order. The lease is the readiness check: every
        returned execution is owned by the caller and must not be re-polled. See ``LeaseBatch``
        for ``has_more`` and ``next_due_at``.
        """
        batch = LeaseBatch()
        for task in tasks:
            if len(batch.executions) >= limit:
                batch.has_more = True
                break
            if not task.dynamic:
                await self._lease_one(utc_now, task, None, batch)
                continue
            response = await self.poll_dynamic_task(utc_now, task)
            for instance, lease in response.tasks:
                await self._lease_one(utc_now, instance, lease, batch)
            if response.continuation_token is not None:
                batch.has_more = True
        return batch

    async def _lease_one(self, utc_now: datetime.datetime, task: Task, lease: Lease | None, batch: LeaseBatch) -> None:
        try:
            response = await self.poll_task(utc_now, task, lease)
        except PyncetteException:
            if task.parent_task is None:
                raise
            # 1.x's poll_task raises "Task not found" for an instance unscheduled since the query
            # found it: nothing to run, and no reason to fail the other entries of the batch.
            logger.debug("Task %s was unscheduled while being polled, skipping it", task)
            return
        if response.result == ResultType.READY:
            batch.executions.append(LeasedExecution(task, response.scheduled_at, response.lease))
        elif response.result == ResultType.PENDING and not task.dynamic:
            due = response.scheduled_at
            if batch.next_due_at is None or due < batch.next_due_at:
                batch.next_due_at = due

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        """Commits finished executions (entries with ``lease is None`` are skipped)."""
        for execution in executions:
            if execution.lease is not None and execution.task.execution_mode == ExecutionMode.AT_LEAST_ONCE:
                await self.commit_task(utc_now, execution.task, execution.lease)

    #: True when ``commit_and_lease_due`` does both in one round trip: the main loop then sends the
    #: results queued so far along with its next lease instead of in a call of their own.
    commits_with_lease = False

    async def commit_and_lease_due(
        self,
        utc_now: datetime.datetime,
        commits: Sequence[LeasedExecution],
        tasks: Sequence[Task],
        *,
        limit: int,
    ) -> LeaseBatch:
        """``commit_executions(commits)`` then ``lease_due(tasks)``, all or nothing where the backend
        sets ``commits_with_lease`` (one atomic round trip); otherwise the two calls in turn."""
        await self.commit_executions(utc_now, commits)
        return await self.lease_due(utc_now, tasks, limit=limit)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        """Releases the leases of executions that should be retried."""
        for execution in executions:
            if execution.lease is not None:
                await self.unlock_task(utc_now, execution.task, execution.lease)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        """Extends several leases; the result is aligned with ``executions`` (None: lost)."""
        results: list[Lease | None] = []
        for execution in executions:
            if execution.lease is None:
                results.append(None)
            else:
                results.append(await self.extend_lease(utc_now, execution.task, execution.lease))
        return results

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        """Registers many dynamic instances (bulk ``register_task``)."""
        for task in tasks:
            await self.register_task(utc_now, task, force=force)

    async def check_health(self) -> None:  # noqa: B027 - an optional hook with a default, not abstract
        """Raises if the backend cannot be reached (used by health checks). Default: no check."""


class RepositoryFactory(Protocol):
    """A factory returning an async context manager that owns the repository's connections."""

    def __call__(self, **kwargs: Any) -> AbstractAsyncContextManager[Repository]: ...
