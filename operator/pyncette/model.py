"""Plain data types shared by the app, the repository contract and the backends.

The names and shapes of pyncette 1.x are kept (``Context``, ``Lease``, ``PollResponse``,
``QueryResponse``, ``TaskState``, ``ListTasksResponse``...), so third-party code written against
them keeps working. ``LeasedExecution`` and ``LeaseBatch`` are new: they carry the batched protocol
(one round trip leases many due instances; the lease itself is the readiness check).
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from enum import Enum
from typing import TYPE_CHECKING
from typing import Any
from typing import NewType
from typing import Protocol
from typing import TypeVar

if TYPE_CHECKING:
    from pyncette.pyncette import PyncetteContext
    from pyncette.task import Task

T = TypeVar("T")
Decorator = Callable[[T], T]
Lease = NewType("Lease", object)
ContinuationToken = NewType("ContinuationToken", object)


class Heartbeater(Protocol):
    def __call__(self) -> Awaitable[None]:
        """Extends the lease of the running execution; raises LeaseLostException if it was lost."""


class Context:
    """What a task function receives. Fixtures add attributes to it by name."""

    app_context: PyncetteContext
    task: Task
    scheduled_at: datetime.datetime
    _lease: Lease | None
    _released: bool = False  # the lease was given back on purpose (``release``), not lost
    args: dict[str, Any]
    # Set per execution by the app: extends the lease held through the given context.
    _extend_lease: Callable[[Context], Awaitable[None]]

    def heartbeat(self) -> Awaitable[None]:
        """Extends the lease of the running execution; raises LeaseLostException if it was lost.

        A method rather than a closure stored on each context (as in 1.x): a closure over its own
        context makes every execution a reference cycle, garbage that only the cyclic collector
        frees, which cost a draining worker about a tenth of its CPU. Assigning
        ``context.heartbeat = ...`` still replaces it for that context, as before.
        """
        return self._extend_lease(self)

    async def release(self) -> None:
        """Gives the running execution's lease back now: the entry is due again at once (another
        worker may run this scheduled time) and this execution commits nothing when it ends.

        For a body that hands its work over instead of finishing it (shutting down while waiting
        for something, say). Unlike a lease that expired, this is not reported as lost. A no-op
        without a lease (at-most-once, or released already).
        """
        await self.app_context._release_lease(self)

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...

        def __setattr__(self, name: str, value: Any) -> None: ...


class TaskFunc(Protocol):
    def __call__(self, context: Context) -> Awaitable[None]:
        """Executes the task."""


class PartitionSelector(Protocol):
    def __call__(self, partition_count: int, task_id: str) -> int:
        """Returns the partition (0 <= n < partition_count) an instance name belongs to."""


class NextFunc(Protocol):
    def __call__(self) -> Awaitable[None]:
        """Enters the next middleware or the task body."""


class MiddlewareFunc(Protocol):
    def __call__(self, context: Context, next: NextFunc) -> Awaitable[None]:
        """Wraps every task execution."""


class FixtureFunc(Protocol):
    def __call__(self, app_context: PyncetteContext) -> AsyncIterator[Any]:
        """An async generator yielding the value put on every task's context."""


class ResultType(Enum):
    """Outcome of polling one task (pyncette 1.x single-task protocol)."""

    MISSING = 0
    PENDING = 1
    READY = 2
    LOCKED = 3
    LEASE_MISMATCH = 4


class ExecutionMode(Enum):
    """AT_LEAST_ONCE leases the instance while it runs and retries it if the worker dies;
    AT_MOST_ONCE moves the schedule forward before running, so a crash skips the run."""

    AT_LEAST_ONCE = 0
    AT_MOST_ONCE = 1


class FailureMode(Enum):
    """What happens to an AT_LEAST_ONCE instance whose execution raised.

    NONE: keep the lease until it expires, then retry. UNLOCK: release at once, retry on the next
    poll. COMMIT: treat as done and move on to the next scheduled time."""

    NONE = 0
    UNLOCK = 1
    COMMIT = 2


@dataclass
class PollResponse:
    """The result of polling one task (pyncette 1.x protocol)."""

    result: ResultType
    scheduled_at: datetime.datetime
    lease: Lease | None


@dataclass
class QueryResponse:
    """Due instances of a dynamic task, already leased (pyncette 1.x protocol)."""

    tasks: list[tuple[Task, Lease]]
    continuation_token: ContinuationToken | None


@dataclass
class TaskState:
    """The stored state of a task instance.

    ``problem`` is set when the stored entry cannot be run (its spec cannot be loaded by this
    worker): it is skipped and kept as it is, ``task`` is then a stand-in that only addresses it.
    """

    task: Task
    scheduled_at: datetime.datetime
    locked_until: datetime.datetime | None
    locked_by: str | None
    problem: str | None = None


@dataclass
class ListTasksResponse:
    """A page of dynamic task instances."""

    tasks: list[TaskState]
    continuation_token: ContinuationToken | None


@dataclass(frozen=True)
class LeasedExecution:
    """One due execution that this worker now owns.

    ``task`` is the concrete task (a static task or an instance of a dynamic one), ``scheduled_at``
    the UTC time it was due. ``lease`` is None for AT_MOST_ONCE tasks: their schedule was already
    moved forward when they were leased, so there is nothing to commit.
    """

    task: Task
    scheduled_at: datetime.datetime
    lease: Lease | None


@dataclass
class LeaseBatch:
    """What one ``Repository.lease_due`` round trip returns.

    ``has_more``: the limit was reached and more instances may be due now; poll again at once.
    ``next_due_at``: the earliest time at which an entry of the polled tasks that was *not* returned
    becomes due (its schedule or the end of its current lease), or None when unknown or nothing is
    scheduled. The main loop sleeps until then, bounded by ``poll_interval``.
    """

    executions: list[LeasedExecution] = field(default_factory=list)
    has_more: bool = False
    next_due_at: datetime.datetime | None = None
