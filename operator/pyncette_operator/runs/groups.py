"""Concurrency groups: ``spec.concurrencyGroup: {name, maxActive}`` across tasks and replicas.

At most ``maxActive`` runs of the tasks of one group (per namespace) are in flight at once,
whichever replica runs them. The limit lives in the shared backend, as leases: the group has
``maxActive`` slot entries (``namespace/group#i``) of a template the scheduler loop never polls,
and a run holds one by leasing it with the repository's atomic ``poll_task`` (the same lease that
makes every scheduled run exclusive), renews it while it runs, and unlocks it when it ends. A
replica that dies holding a slot frees it when the lease expires (``leaseDuration`` of the slot,
60 s), never later.

Waiting runs are queued, not skipped: each registers a waiter entry named after its scheduled time
(``namespace/group@wait:<time>:<task>``), and only the ``maxActive`` earliest waiters try for a
slot, so the queue drains in scheduled-time order across replicas. A run waits with its own lease
renewed, and its task shows ``Waiting=True`` (reason ``ConcurrencyGroupFull``) meanwhile.

A run in a group holds its slot until it ends: an ``Allow`` task's Pod is followed to its end
rather than handed over at the next scheduled time, so the count of Pods is what the limit bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass

from pyncette.errors import PyncetteException
from pyncette.model import Lease
from pyncette.model import ResultType
from pyncette.pyncette import PyncetteContext
from pyncette.task import Task
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time

logger = logging.getLogger(__name__)

SLOT_LEASE = datetime.timedelta(seconds=60)
RETRY_SECONDS = 1.0
_ALWAYS_DUE = datetime.timedelta(milliseconds=1)
_WAITER_TTL = datetime.timedelta(seconds=15)
"""A waiter entry re-registers itself every retry; one not refreshed for this long (its replica died)
is ignored and removed, so it never blocks the queue."""


@dataclass
class HeldSlot:
    instance: Task
    lease: Lease
    renewer: asyncio.Task[None] | None = None


def _group_key(task: TaskSpec) -> str:
    assert task.concurrency_group is not None
    return f"{task.namespace}/{task.concurrency_group[0]}"


class ConcurrencyGroups:
    """Acquires and releases group slots in the backend (see the module docstring)."""

    def __init__(self, *, template: Task, ctx: Callable[[], PyncetteContext]) -> None:
        self._template = template
        self._ctx = ctx

    def _slot(self, group: str, index: int) -> Task:
        return self._template.instantiate(f"{group}#{index}", interval=_ALWAYS_DUE, lease_duration=SLOT_LEASE)

    async def _waiters(self, group: str) -> list[str]:
        """The live waiters of ``group``, earliest scheduled time first; dead ones are removed."""
        ctx = self._ctx()
        prefix = f"{group}@wait:"
        now = ctx.clock.now()
        names: list[str] = []
        token = None
        while True:
            page = await ctx.list_tasks(self._template, limit=1000, continuation_token=token)
            for state in page.tasks:
                if not state.task.name.startswith(prefix):
                    continue
                if state.scheduled_at < now:
                    with contextlib.suppress(Exception):
                        await ctx.repository.unregister_task(now, state.task)
                    continue
                names.append(state.task.name)
            token = page.continuation_token
            if token is None:
                return sorted(names)

    async def acquire(
        self,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        *,
        trigger: str,
        heartbeat: Callable[[], Awaitable[None]],
        stopping: asyncio.Event,
        waiting: Callable[[bool, str], None],
    ) -> HeldSlot | None:
        """Waits for a slot of the task's group (None if the operator stops first)."""
        assert task.concurrency_group is not None
        ctx = self._ctx()
        repository, clock = ctx.repository, ctx.clock
        group, limit = _group_key(task), task.concurrency_group[1]
        me = f"{group}@wait:{format_time(scheduled_at)}:{task.name}:{trigger}"
        waiter = self._template.instantiate(me, interval=_WAITER_TTL)
        announced = False
        try:
            while not stopping.is_set():
                await repository.register_task(clock.now(), waiter, force=True)  # "still waiting"
                queue = await self._waiters(group)
                if me in queue[:limit]:
                    for index in range(limit):
                        slot = self._slot(group, index)
                        now = clock.now()
                        response = await self._poll(slot)
                        if response is not None:
                            held = HeldSlot(slot, response)
                            held.renewer = asyncio.ensure_future(self._renew(held))
                            if announced:
                                waiting(False, f"got a slot of concurrency group {task.concurrency_group[0]}")
                            logger.debug("%s took slot %s at %s", task.key, slot.name, now)
                            return held
                if not announced:
                    ahead = max(0, queue.index(me)) if me in queue else 0
                    waiting(
                        True,
                        f"concurrency group {task.concurrency_group[0]} has {limit} run(s) in flight"
                        f" (maxActive {limit}); {ahead} run(s) queued ahead of this one",
                    )
                    announced = True
                await heartbeat()
                sleeper = asyncio.ensure_future(clock.sleep(RETRY_SECONDS))
                stopper = asyncio.ensure_future(stopping.wait())
                try:
                    await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for future in (sleeper, stopper):
                        future.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await future
            return None
        finally:
            with contextlib.suppress(Exception):
                await repository.unregister_task(clock.now(), waiter)

    async def _poll(self, slot: Task) -> Lease | None:
        """The slot's lease if it is free now (the entry is created on first use)."""
        ctx = self._ctx()
        for _ in range(2):
            now = ctx.clock.now()
            try:
                response = await ctx.repository.poll_task(now, slot)
            except PyncetteException:
                response = None  # some backends raise for an entry that does not exist
            if response is not None and response.result == ResultType.READY and response.lease is not None:
                return response.lease
            if response is not None and response.result != ResultType.MISSING:
                return None  # leased by another run
            await ctx.repository.register_task(now - _ALWAYS_DUE * 2, slot)  # due at once
        return None

    async def _renew(self, held: HeldSlot) -> None:
        ctx = self._ctx()
        while True:
            await ctx.clock.sleep(SLOT_LEASE.total_seconds() / 3)
            renewed = await ctx.repository.extend_lease(ctx.clock.now(), held.instance, held.lease)
            if renewed is None:
                logger.warning("Lost the lease of concurrency group slot %s", held.instance.name)
                return
            held.lease = renewed

    async def release(self, held: HeldSlot) -> None:
        if held.renewer is not None:
            held.renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await held.renewer
        ctx = self._ctx()
        try:
            await ctx.repository.unlock_task(ctx.clock.now(), held.instance, held.lease)
        except Exception as e:
            logger.warning("Releasing concurrency group slot %s failed (its lease expires): %s", held.instance.name, e)
