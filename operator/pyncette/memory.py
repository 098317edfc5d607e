"""The in-memory repository: the default when ``Pyncette()`` is given no persistence.

State lives in a dict owned by one process, so there is no coordination between processes and
nothing survives a restart: two processes running the same app each run every task. Use SQLite or
a network backend for that.

Speed matters here because the in-memory backend is what most unit tests and single-process apps
use. Entries are grouped by the task that polls them (one group per dynamic template or partition,
one shared group for static tasks), and every group keeps a binary heap ordered by the time the
entry becomes due (``max(execute_after, locked_until)``). ``lease_due`` therefore costs
O(k log n) for k returned entries instead of scanning every instance. The heaps are *lazy*: a
change to an entry pushes a new heap item and bumps the entry's version, and items whose version
is stale are dropped when they reach the top (and in bulk when a heap gets much larger than its
group).

Everything is synchronous Python between ``await`` points, so every method is atomic on the event
loop without a lock.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime
import heapq
import logging
import uuid
from collections.abc import AsyncIterator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyncette.errors import TaskLockedException
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import Lease
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import PollResponse
from pyncette.model import ResultType
from pyncette.model import TaskState
from pyncette.repository.kit import PARKED
from pyncette.repository.kit import BatchRepository
from pyncette.repository.kit import held
from pyncette.repository.kit import leased
from pyncette.repository.kit import next_time
from pyncette.repository.kit import plan_poll
from pyncette.repository.kit import positive_int
from pyncette.repository.kit import to_commit
from pyncette.repository.kit import token_of
from pyncette.repository.kit import unleased
from pyncette.task import Task
from pyncette.task import spec_text

logger = logging.getLogger(__name__)

BACKEND = "memory"

# Group of static tasks. Canonical names are never empty, so this cannot collide with a template.
_STATIC = ""


@dataclass
class _Entry:
    name: str
    group: str
    execute_after: datetime.datetime
    locked_until: datetime.datetime | None = None
    locked_by: str | None = None
    spec: str | None = None  # JSON of the instance's spec; None for static tasks
    version: int = 0
    # The last instance built from ``spec`` and the template it was built from (a cache).
    instance: Task | None = None
    template: Task | None = None

    @property
    def ready_at(self) -> datetime.datetime:
        if self.locked_until is not None and self.locked_until > self.execute_after:
            return self.locked_until
        return self.execute_after


# (ready_at, version, name): ordered by due time, ties broken deterministically.
_HeapItem = tuple[datetime.datetime, int, str]


@dataclass
class _Taken:
    """Due entries popped from the heaps, with the template (or static task) each belongs to."""

    entries: list[tuple[_Entry, Task]]
    has_more: bool
    next_due_at: datetime.datetime | None


class MemoryRepository(BatchRepository):
    """Task state in process memory (see the module docstring for the trade-offs)."""

    backend_name = BACKEND

    def __init__(self, *, batch_size: int = 100) -> None:
        super().__init__(batch_size=positive_int(BACKEND, {"batch_size": batch_size}, "batch_size", 100))
        self._entries: dict[str, _Entry] = {}
        self._groups: dict[str, set[str]] = {}
        self._heaps: dict[str, list[_HeapItem]] = {}
        self._versions = 0
        # Sorted member names per group for list_task_states; dropped when membership changes.
        self._sorted: dict[str, list[str]] = {}

    # ---- entry bookkeeping ----

    def _store(self, entry: _Entry) -> None:
        """Inserts or updates an entry and pushes its new position into its group's heap."""
        self._versions += 1
        entry.version = self._versions
        self._entries[entry.name] = entry
        members = self._groups.setdefault(entry.group, set())
        if entry.name not in members:
            members.add(entry.name)
            self._sorted.pop(entry.group, None)
        heap = self._heaps.setdefault(entry.group, [])
        heapq.heappush(heap, (entry.ready_at, entry.version, entry.name))
        if len(heap) > 2 * len(self._groups[entry.group]) + 64:
            self._compact(entry.group)

    def _delete(self, name: str) -> None:
        entry = self._entries.pop(name, None)
        if entry is not None:
            self._groups[entry.group].discard(name)
            self._sorted.pop(entry.group, None)

    def _compact(self, group: str) -> None:
        live = [self._entries[name] for name in self._groups.get(group, ())]
        heap = [(e.ready_at, e.version, e.name) for e in live]
        heapq.heapify(heap)
        self._heaps[group] = heap

    def _is_current(self, item: _HeapItem) -> bool:
        entry = self._entries.get(item[2])
        return entry is not None and entry.version == item[1]

    def _instance(self, entry: _Entry, template: Task) -> Task | None:
        """The concrete task of a dynamic entry, rebuilt from its spec (None: quarantined)."""
        if entry.instance is None or entry.template is not template:
            instance = self.entries.load(template, entry.name, entry.spec)
            if instance is None:
                return None
            entry.instance = instance
            entry.template = template
        return entry.instance

    def _state(self, entry: _Entry, template: Task | None, task: Task) -> TaskState:
        if template is None or entry.spec is None:
            return TaskState(task, entry.execute_after, entry.locked_until, entry.locked_by)
        if entry.instance is not None and entry.template is template:
            return TaskState(entry.instance, entry.execute_after, entry.locked_until, entry.locked_by)
        return self.entries.state(
            template,
            entry.name,
            entry.spec,
            scheduled_at=entry.execute_after,
            locked_until=entry.locked_until,
            locked_by=entry.locked_by,
            known=task if task.parent_task is not None else None,
        )

    def _advance(self, entry: _Entry, nxt: datetime.datetime | None) -> None:
        """Moves an entry to its next scheduled time and clears its lease (deletes it if none)."""
        if nxt is None:
            self._delete(entry.name)
        else:
            entry.execute_after = nxt
            entry.locked_until = None
            entry.locked_by = None
            self._store(entry)

    def _lease(self, entry: _Entry, token: str, until: datetime.datetime) -> None:
        entry.locked_by = token
        entry.locked_until = until
        self._store(entry)

    @staticmethod
    def _holds(entry: _Entry | None, token: str | None) -> bool:
        return entry is not None and token is not None and entry.locked_by == token

    # ---- pyncette 1.x protocol ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        self._delete(task.canonical_name)

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        entry = self._entries.get(task.canonical_name)
        if entry is None:
            if task.parent_task is not None:
                raise self.instance_not_found(task)
            created = self.statics.due_for_creation(utc_now, [task])
            if not created:
                return PollResponse(result=ResultType.MISSING, scheduled_at=utc_now, lease=None)
            entry = _Entry(name=task.canonical_name, group=_STATIC, execute_after=created[0][1])
            self._store(entry)
        plan = plan_poll(
            utc_now,
            task,
            lease,
            execute_after=entry.execute_after,
            locked_until=entry.locked_until,
            locked_by=entry.locked_by,
            new_token=uuid.uuid4().hex,
        )
        if plan.advance:
            self._advance(entry, plan.next_at)
        elif plan.lease_until is not None and plan.token is not None:
            self._lease(entry, plan.token, plan.lease_until)
        return plan.response

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        entry = self._entries.get(task.canonical_name)
        if entry is None:
            return None
        return self._state(entry, task.parent_task, task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        limit = self._batch_size if limit is None else limit
        group = parent_task.canonical_name
        names = self._sorted.get(group)
        if names is None:
            names = self._sorted[group] = sorted(self._groups.get(group, ()))
        start = 0 if continuation_token is None else bisect.bisect_right(names, str(continuation_token))
        page = names[start : start + limit]
        states = [self._state(self._entries[name], parent_task, parent_task) for name in page]
        token = ContinuationToken(page[-1]) if len(names) > start + limit and page else None
        return ListTasksResponse(tasks=states, continuation_token=token)

    # ---- batch protocol ----

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        fresh = self.statics.due_for_creation(utc_now, tasks)
        for task, first in fresh:
            if task.canonical_name not in self._entries:
                self._store(_Entry(name=task.canonical_name, group=_STATIC, execute_after=first))
        self.statics.created(task for task, _ in fresh)

        taken = self._take_due(utc_now, tasks, limit=limit)
        batch = LeaseBatch(has_more=taken.has_more, next_due_at=taken.next_due_at)
        token = uuid.uuid4().hex
        for entry, template in taken.entries:
            concrete = template if entry.spec is None else self._instance(entry, template)
            if concrete is None:  # quarantined: parked for one lease duration, not run
                self._lease(entry, PARKED, utc_now + template.lease_duration)
                continue
            scheduled_at = entry.execute_after
            if concrete.execution_mode == ExecutionMode.AT_MOST_ONCE:
                ok, nxt = next_time(concrete, utc_now, scheduled_at)
                if not ok:
                    self._lease(entry, token, utc_now + concrete.lease_duration)
                    continue
                self._advance(entry, nxt)
                if nxt is not None and (batch.next_due_at is None or nxt < batch.next_due_at):
                    batch.next_due_at = nxt
                batch.executions.append(unleased(concrete, scheduled_at))
            else:
                self._lease(entry, token, utc_now + concrete.lease_duration)
                batch.executions.append(leased(concrete, scheduled_at, token))
        return batch

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        for execution, token in to_commit(executions):
            entry = self._entries.get(execution.task.canonical_name)
            if entry is None:
                logger.warning("Task %s not found, skipping commit.", execution.task)
            elif not self._holds(entry, token):
                logger.warning("Lease lost on task %s, skipping commit.", execution.task)
            else:
                ok, nxt = next_time(execution.task, utc_now, entry.execute_after)
                if ok:
                    self._advance(entry, nxt)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        for execution, token in held(executions):
            entry = self._entries.get(execution.task.canonical_name)
            if entry is not None and self._holds(entry, token):
                entry.locked_by = None
                entry.locked_until = None
                self._store(entry)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        results: list[Lease | None] = []
        for execution in executions:
            entry = self._entries.get(execution.task.canonical_name)
            if not self._holds(entry, token_of(execution.lease)):
                results.append(None)
                continue
            assert entry is not None
            self._lease(entry, str(entry.locked_by), utc_now + execution.task.lease_duration)
            results.append(execution.lease)
        return results

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        # All-or-nothing: a locked instance fails the whole batch before anything is written.
        self._check_locks(utc_now, tasks, force=force)
        for task in tasks:
            self._register(utc_now, task, force=force)

    # ---- shared steps ----

    def _check_locks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool) -> None:
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            if force:
                continue
            entry = self._entries.get(task.canonical_name)
            leased = entry is not None and entry.locked_until is not None and entry.locked_until > utc_now
            if leased and entry is not None and entry.locked_by != PARKED:
                raise TaskLockedException(task, entry.locked_until)

    def _register(self, utc_now: datetime.datetime, task: Task, *, force: bool) -> None:
        assert task.parent_task is not None
        new_time = task.get_next_execution(utc_now, None)
        entry = self._entries.get(task.canonical_name)
        if new_time is None:
            self._delete(task.canonical_name)
            return
        spec = spec_text(task)
        if entry is None:
            entry = _Entry(name=task.canonical_name, group=task.parent_task.canonical_name, execute_after=new_time)
        elif force or entry.locked_by == PARKED:
            entry.execute_after = new_time
            entry.locked_by = None
            entry.locked_until = None
        else:
            # Keep the sooner time so that rescheduling never starves an instance.
            entry.execute_after = min(entry.execute_after, new_time)
        entry.spec = spec
        # The registered Task is exactly what ``spec`` rebuilds: keep it instead of re-parsing later.
        entry.instance = task
        entry.template = task.parent_task
        self._store(entry)

    def _take_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> _Taken:
        """Pops up to ``limit`` due entries of ``tasks``, earliest first, from the group heaps.

        The caller must re-store every returned entry (it is no longer in its heap).
        """
        templates: dict[str, Task] = {}
        statics: dict[str, Task] = {}
        for task in tasks:
            if task.dynamic:
                templates[task.canonical_name] = task
            else:
                statics[task.canonical_name] = task
        groups = list(templates)
        if statics:
            groups.append(_STATIC)

        # Due static entries of tasks not polled now are set aside and pushed back at the end.
        skipped: list[_HeapItem] = []

        def top(group: str) -> _HeapItem | None:
            heap = self._heaps.get(group)
            while heap:
                item = heap[0]
                if not self._is_current(item):
                    heapq.heappop(heap)
                elif group == _STATIC and item[2] not in statics:
                    skipped.append(heapq.heappop(heap))
                else:
                    return item
            return None

        fronts: list[tuple[datetime.datetime, int, str]] = []
        for group in groups:
            item = top(group)
            if item is not None:
                fronts.append((item[0], item[1], group))
        heapq.heapify(fronts)

        taken: list[tuple[_Entry, Task]] = []
        while fronts and len(taken) < limit and fronts[0][0] <= utc_now:
            _, _, group = heapq.heappop(fronts)
            item = heapq.heappop(self._heaps[group])
            entry = self._entries[item[2]]
            taken.append((entry, statics[entry.name] if group == _STATIC else templates[group]))
            nxt = top(group)
            if nxt is not None:
                heapq.heappush(fronts, (nxt[0], nxt[1], group))

        has_more = bool(fronts) and fronts[0][0] <= utc_now
        next_due_at = fronts[0][0] if fronts else None
        for item in skipped:
            heapq.heappush(self._heaps[_STATIC], item)
        return _Taken(entries=taken, has_more=has_more, next_due_at=next_due_at)


@contextlib.asynccontextmanager
async def memory_repository(**kwargs: Any) -> AsyncIterator[MemoryRepository]:
    """Factory for ``Pyncette(repository_factory=memory_repository)``; ignores other backends' settings."""
    yield MemoryRepository(batch_size=positive_int(BACKEND, kwargs, "batch_size", 100))
