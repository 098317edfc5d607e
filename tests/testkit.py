"""Small helpers shared by the test suites that drive real processes and clusters.

One polling loop for "wait until this holds" (with the last observation in the failure message)
and one way to get a free loopback port, so every suite waits and binds the same way.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not hold in time (an assertion failure, so pytest reports it as one)."""


def wait_until(
    check: Callable[[], T | None], *, timeout: float = 60, what: str = "condition", period: float = 0.25
) -> T:
    """Polls ``check`` until it returns something truthy; fails naming ``what`` after ``timeout`` seconds.

    An AssertionError raised by ``check`` counts as "not yet" and is shown if time runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(period)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
