"""Token buckets: the global bounds on apiserver writes (status, Events, run Pods) of one replica.

Kept separate and clock-injected so the bound itself is unit-tested without sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; starts full."""

    def __init__(self, *, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"token bucket: rate must be > 0 and burst >= 1, got rate={rate}, burst={burst}")
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._monotonic = monotonic
        self._stamp = monotonic()

    def _refill(self) -> None:
        now = self._monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def try_take(self) -> bool:
        """Takes a token if one is available now."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def wait_time(self) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate


class AsyncLimiter:
    """Callers ``await acquire()`` a token of a ``TokenBucket``, in arrival order.

    ``on_waiting(n)`` is told how many callers wait, each time that changes (a metric: a test sees a
    throttled create without timing anything).
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        on_waiting: Callable[[int], None] | None = None,
    ) -> None:
        self._bucket = TokenBucket(rate=rate, burst=burst, monotonic=monotonic)
        self._turn = asyncio.Lock()
        self._waiting = 0
        self._on_waiting = on_waiting or (lambda n: None)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self) -> None:
        if not self._waiting and self._bucket.try_take():
            return
        self._waiting += 1
        self._on_waiting(self._waiting)
        try:
            async with self._turn:  # one waiter sleeps for the next token at a time: first come, first served
                while not self._bucket.try_take():  # noqa: ASYNC110 - waiting for time to pass, not for an event
                    await asyncio.sleep(self._bucket.wait_time())
        finally:
            self._waiting -= 1
            self._on_waiting(self._waiting)
