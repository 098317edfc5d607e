"""Kubernetes Events for runs and invalid specs, rate-limited so they cannot flood the apiserver.

Events are a hint for humans (``kubectl describe``); status is the record. So the limits drop
rather than delay: a task posts at most one Event per reason per ``per_task_interval`` and the
replica at most ``rate`` per second (token bucket). Posting happens in a background queue, so a
slow apiserver never delays a run.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyncette_operator.conditions import one_line
from pyncette_operator.ratelimit import TokenBucket
from pyncette_operator.spec import GROUP
from pyncette_operator.spec import KIND
from pyncette_operator.spec import VERSION
from pyncette_operator.spec import format_time

logger = logging.getLogger(__name__)

COMPONENT = "pyncette-operator"


class EventReason:
    RUN_STARTED = "RunStarted"
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    INVALID_SPEC = "InvalidSpec"
    MISSED_SCHEDULES = "MissedSchedules"
    TOO_MANY_FAILURES = "TooManyFailures"
    RESUMED = "Resumed"


@dataclass(frozen=True)
class ObjectRef:
    namespace: str
    name: str
    uid: str


def render_event(
    ref: ObjectRef, *, reason: str, message: str, warning: bool, now: datetime.datetime, instance: str
) -> dict[str, Any]:
    stamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.name[:200]}.{uuid.uuid4().hex[:16]}", "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "name": ref.name,
            "namespace": ref.namespace,
            "uid": ref.uid,
        },
        "reason": reason,
        "message": one_line(message),
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance[:128],
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class EventRecorder:
    def __init__(
        self,
        *,
        send: Callable[[str, dict[str, Any]], Awaitable[None]],
        rate: float,
        burst: int,
        per_task_interval: float,
        instance: str,
        on_posted: Callable[[str], None] | None = None,
        on_dropped: Callable[[str], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        queue_size: int = 1000,
    ) -> None:
        self._send = send
        self._bucket = TokenBucket(rate=rate, burst=burst, monotonic=monotonic)
        self._interval = per_task_interval
        self._instance = instance
        self._monotonic = monotonic
        self._last: dict[tuple[str, str, str], float] = {}
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._on_posted = on_posted or (lambda reason: None)
        self._on_dropped = on_dropped or (lambda reason: None)

    def record(self, ref: ObjectRef, *, reason: str, message: str, warning: bool = False, force: bool = False) -> bool:
        """Queues an Event unless a limit drops it; ``force`` skips the per-task limit (not the global one)."""
        key = (ref.namespace, ref.name, reason)
        now = self._monotonic()
        last = self._last.get(key)
        if not force and last is not None and now - last < self._interval:
            self._on_dropped(reason)
            return False
        if not self._bucket.try_take():
            self._on_dropped(reason)
            return False
        self._last[key] = now
        if len(self._last) > 50_000:
            self._last.clear()
        body = render_event(
            ref,
            reason=reason,
            message=message,
            warning=warning,
            now=datetime.datetime.now(datetime.UTC),
            instance=self._instance,
        )
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self._on_dropped(reason)
            return False
        return True

    def forget(self, namespace: str, name: str) -> None:
        for key in [k for k in self._last if k[0] == namespace and k[1] == name]:
            del self._last[key]

    async def run(self) -> None:
        while True:
            body = await self._queue.get()
            try:
                await self._send(body["metadata"]["namespace"], body)
                self._on_posted(body["reason"])
            except Exception as e:
                logger.debug("Posting an Event failed (dropped): %s", e)
                self._on_dropped(body["reason"])
