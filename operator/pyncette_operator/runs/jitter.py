"""``spec.jitter``: start each scheduled run a little after its slot, to spread load.

The delay is a pure function of the task's uid and the slot's scheduled time (SHA-256, uniform in
``[0, jitter)``), not a draw from a random generator: it looks random across tasks and slots, but a
replica that takes over a leased run after the first one died waits for the same moment, and the
delay is the same however often the run is retried. The slot identity does not move: the Pod name,
its ``pyncette.dev/scheduled-at`` annotation, ``status.lastScheduleTime`` and the run's lease all
stay on the scheduled time, so there is still exactly one run per slot.

While it waits the worker holds the run's lease (renewed every ``leaseDuration/3``) and one of the
replica's concurrent run slots. Run-now and backfill runs are not delayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
from collections.abc import Awaitable
from collections.abc import Callable

from pyncette.clock import Clock
from pyncette_operator.runs.pod_runner import RunAbandoned


def jitter_delay(*, task_uid: str, scheduled_at: datetime.datetime, jitter: datetime.timedelta) -> datetime.timedelta:
    """The delay of one slot's run: in ``[0, jitter)``, whole milliseconds, the same in every process."""
    stamp = scheduled_at.astimezone(datetime.UTC).isoformat()
    digest = hashlib.sha256(f"{task_uid}|{stamp}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return datetime.timedelta(milliseconds=int(jitter / datetime.timedelta(milliseconds=1) * fraction))


async def wait_for_start(
    start: datetime.datetime,
    *,
    clock: Clock,
    heartbeat: Callable[[], Awaitable[None]],
    renew_every: datetime.timedelta,
    stopping: asyncio.Event,
) -> None:
    """Waits until ``start`` by ``clock``, renewing the lease; RunAbandoned if the operator stops first."""
    while (left := (start - clock.now()).total_seconds()) > 0:
        if stopping.is_set():
            raise RunAbandoned("the operator is shutting down")
        sleeper = asyncio.ensure_future(clock.sleep(min(left, max(renew_every.total_seconds(), 0.2))))
        stopper = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (sleeper, stopper):
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
        if stopping.is_set():
            raise RunAbandoned("the operator is shutting down")
        if clock.now() < start:
            await heartbeat()
