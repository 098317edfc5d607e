"""One deadline for every call the app makes to its backend.

A database call can hang without failing: a half-open TCP connection (a failover, a NAT or
firewall dropping state, a blackholed route) delivers no reset, so the driver waits for an answer
that never comes, until the kernel's TCP keepalive gives up about two hours later. pyncette 1.x
awaited such calls without a deadline, so one hung connection stopped the loop, the commits and
the heartbeats.

Here every backend call of the core (the loop's lease, the flusher's commits and unlocks,
heartbeats, ``schedule_task``/``unschedule_task``/``get_task``/``list_tasks``, health checks) runs
under ``backend_timeout`` (``Pyncette(backend_timeout=...)``, default ``DEFAULT_BACKEND_TIMEOUT``).
A call that overruns is cancelled and raises ``BackendTimeoutError``; the caller treats it like any
other backend failure (the loop backs off and polls again, the flusher retries). Cancelling a call
must also discard the connection it was using, since its protocol state is unknown; each backend
takes care of that in its driver (see the backend modules), so the next call opens a fresh
connection and the app carries on as soon as the server answers again.

The deadline is real (monotonic, the event loop's) time, not the app's ``Clock``: it bounds I/O,
which happens in real time even when a test drives schedules with ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Awaitable
from collections.abc import Mapping
from typing import Any
from typing import TypeVar

from pyncette.errors import PyncetteException

T = TypeVar("T")

#: The default deadline of one backend call. Long enough for a batch of a few hundred rows on a
#: busy server, short enough that a hung connection is replaced well within the default 60 s lease
#: (so commits can still be retried before it expires) and within a liveness probe's patience.
DEFAULT_BACKEND_TIMEOUT = datetime.timedelta(seconds=10)

#: The app keyword that sets it (also read by the backends for their drivers' own timeouts).
SETTING = "backend_timeout"


class BackendTimeoutError(PyncetteException, TimeoutError):
    """A backend call did not answer within ``backend_timeout``; it was cancelled."""

    def __init__(self, operation: str, timeout: float) -> None:
        super().__init__(f"backend: {operation} did not answer within {timeout:g}s (backend_timeout)")
        self.operation = operation
        self.timeout = timeout


def backend_timeout(configuration: Mapping[str, Any]) -> datetime.timedelta:
    """The validated ``backend_timeout`` of an app's keywords (a timedelta or seconds)."""
    value = configuration.get(SETTING, DEFAULT_BACKEND_TIMEOUT)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = datetime.timedelta(seconds=value)
    if not isinstance(value, datetime.timedelta) or value <= datetime.timedelta():
        raise ValueError(
            f"Pyncette: {SETTING}: must be a positive timedelta or number of seconds, "
            f"got {configuration.get(SETTING)!r}"
        )
    return value


def backend_timeout_seconds(configuration: Mapping[str, Any]) -> float:
    """``backend_timeout`` in seconds, for drivers that take a float."""
    return backend_timeout(configuration).total_seconds()


async def bounded(call: Awaitable[T], *, operation: str, timeout: float) -> T:  # noqa: ASYNC109 - the point of it
    """Awaits ``call``, cancelling it and raising ``BackendTimeoutError`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await call
    except TimeoutError as error:
        if isinstance(error, BackendTimeoutError):
            raise
        # asyncio.timeout raises a bare TimeoutError; a driver's own timeout is a subclass or
        # carries a message. Either way the call overran.
        raise BackendTimeoutError(operation, timeout) from error
