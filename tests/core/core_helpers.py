"""Helpers shared by the app's unit tests (imported as ``core_helpers``)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from collections.abc import Callable
from typing import Any

from pyncette import FakeClock
from pyncette import Pyncette
from pyncette import PyncetteContext
from pyncette.memory import MemoryRepository

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def eventually(condition: Callable[[], bool], *, within: float = 5.0) -> None:
    """Waits until ``condition()`` holds, letting the event loop run; fails after ``within`` s.

    A safety net against hangs, not a timing assertion: conditions normally hold within a few
    event-loop iterations.
    """

    async def _poll() -> None:
        while not condition():  # noqa: ASYNC110 - an arbitrary condition has no event to wait on
            await asyncio.sleep(0.001)

    await asyncio.wait_for(_poll(), within)


@contextlib.asynccontextmanager
async def running(app: Pyncette, **create_kwargs: Any) -> AsyncIterator[PyncetteContext]:
    """Creates the app, runs its main loop in the background, shuts it down gracefully on exit."""
    async with app.create(**create_kwargs) as ctx:
        loop = asyncio.create_task(ctx.run())
        await FakeClock._settle()
        try:
            yield ctx
        finally:
            ctx.shutdown()
            await asyncio.wait_for(loop, 10)


def shared_memory() -> Callable[..., contextlib.AbstractAsyncContextManager[MemoryRepository]]:
    """A repository factory whose every ``create()`` sees the same in-memory state (a "restart")."""
    repository = MemoryRepository()

    @contextlib.asynccontextmanager
    async def factory(**kwargs: Any) -> AsyncIterator[MemoryRepository]:
        yield repository

    return factory
