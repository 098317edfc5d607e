"""The per-replica Pod-create limit: creates beyond the burst wait for tokens, in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from pyncette_operator.ratelimit import AsyncLimiter


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1024.0

    def __call__(self) -> float:
        return self.t


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


async def test_creates_beyond_the_burst_wait_for_the_rate() -> None:
    tick = Ticker()
    seen: list[int] = []
    limiter = AsyncLimiter(rate=64, burst=2, monotonic=tick, on_waiting=seen.append)
    await limiter.acquire()
    await limiter.acquire()  # the burst
    order: list[str] = []

    async def create(name: str) -> None:
        await limiter.acquire()
        order.append(name)

    third = asyncio.ensure_future(create("third"))
    await wait_for(lambda: limiter.waiting == 1, "the third create to wait")
    fourth = asyncio.ensure_future(create("fourth"))
    await wait_for(lambda: limiter.waiting == 2, "the fourth create to wait")
    assert order == []  # no token while the (fake) clock stands still
    tick.t += 1 / 64  # one token (binary fractions: no rounding)
    await wait_for(lambda: order == ["third"], "the third create")
    assert limiter.waiting == 1
    tick.t += 1 / 64
    await asyncio.gather(third, fourth)
    assert order == ["third", "fourth"]
    assert seen == [1, 2, 1, 0]
