"""The single time source of the scheduler core.

Every component that needs "now" or needs to wait until a point in time asks a ``Clock``. In
production it is ``SystemClock``; tests inject ``FakeClock`` and move time forward explicitly, so
schedules are exercised without sleeping. Times are always timezone-aware UTC datetimes.
"""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools

UTC = datetime.UTC


class Clock:
    """Interface: the current UTC time, and a way to wait until a given UTC time."""

    def now(self) -> datetime.datetime:
        raise NotImplementedError

    async def sleep_until(self, deadline: datetime.datetime) -> None:
        """Returns once ``now() >= deadline`` (immediately if it already is)."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Waits for ``seconds`` of this clock's time."""
        await self.sleep_until(self.now() + datetime.timedelta(seconds=seconds))


class SystemClock(Clock):
    """Wall-clock time. Waiting uses the event loop's monotonic timer."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(UTC)

    async def sleep_until(self, deadline: datetime.datetime) -> None:
        delay = (deadline - self.now()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)


class FakeClock(Clock):
    """A clock that only moves when told to.

    ``advance()``/``set()`` wake every sleeper whose deadline has been reached, in deadline order,
    and let the event loop run them before returning, so a test can write
    ``await clock.advance(seconds=10)`` and then assert on what ran.
    """

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2030, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._sleepers: list[tuple[datetime.datetime, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    def now(self) -> datetime.datetime:
        return self._now

    async def sleep_until(self, deadline: datetime.datetime) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._counter), future))
        await future

    @property
    def next_deadline(self) -> datetime.datetime | None:
        """The earliest time anyone is waiting for, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def set(self, when: datetime.datetime) -> None:
        if when < self._now:
            raise ValueError("FakeClock cannot go backwards")
        await self._settle()
        while self._sleepers and self._sleepers[0][0] <= when:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._now = max(self._now, deadline)
            future.set_result(None)
            await self._settle()
        self._now = when
        await self._settle()

    async def advance(self, delta: datetime.timedelta | None = None, *, seconds: float = 0) -> None:
        step = (delta or datetime.timedelta()) + datetime.timedelta(seconds=seconds)
        await self.set(self._now + step)

    @staticmethod
    async def _settle(rounds: int = 20) -> None:
        # Let woken coroutines run until they block again (on I/O or on this clock).
        for _ in range(rounds):
            await asyncio.sleep(0)
