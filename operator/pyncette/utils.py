"""Helpers for task authors.

``with_heartbeat`` keeps the lease of a long-running AT_LEAST_ONCE task alive in the background, so
its author does not have to sprinkle ``await context.heartbeat()`` through the body. It waits on the
app's clock (``context.app_context.clock``), so tests on a ``FakeClock`` see heartbeats exactly when
fake time says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import wraps

from pyncette.clock import Clock
from pyncette.clock import SystemClock
from pyncette.errors import LeaseLostException
from pyncette.model import Context
from pyncette.model import Decorator
from pyncette.model import TaskFunc

logger = logging.getLogger(__name__)

DEFAULT_LEASE_REMAINING_RATIO = 0.5


def _clock_of(context: Context) -> Clock:
    clock = getattr(getattr(context, "app_context", None), "clock", None)
    return clock if isinstance(clock, Clock) else SystemClock()


def with_heartbeat(
    lease_remaining_ratio: float = DEFAULT_LEASE_REMAINING_RATIO,
    cancel_on_lease_lost: bool = False,
) -> Decorator[TaskFunc]:
    """Heartbeats in the background every ``lease_remaining_ratio`` x ``lease_duration``.

    :param lease_remaining_ratio: in (0, 1); 0.5 (the default) renews the lease halfway through.
    :param cancel_on_lease_lost: cancel the task body when the lease turns out to be lost.
    Transient heartbeat errors are logged and retried at the next interval; once the lease is lost
    heartbeating stops.
    """
    if not 0 < lease_remaining_ratio < 1:
        raise ValueError(f"with_heartbeat: lease_remaining_ratio: must be in (0, 1), got {lease_remaining_ratio!r}")

    def decorator(func: TaskFunc) -> TaskFunc:
        @wraps(func)
        async def _func(context: Context) -> None:
            body = asyncio.ensure_future(func(context))
            clock = _clock_of(context)

            async def _heartbeater() -> None:
                delay = context.task.lease_duration.total_seconds() * lease_remaining_ratio
                while True:
                    await clock.sleep(delay)
                    try:
                        await asyncio.shield(context.heartbeat())
                    except LeaseLostException:
                        if cancel_on_lease_lost:
                            body.cancel()
                        return
                    except Exception as e:
                        logger.warning("Heartbeating on %s failed: %s", context.task, e)

            heartbeater = asyncio.ensure_future(_heartbeater())
            try:
                await body
            finally:
                heartbeater.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await heartbeater

        return _func

    return decorator
