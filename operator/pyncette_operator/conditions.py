"""Kubernetes-style conditions (type, status, reason, message, lastTransitionTime, observedGeneration).

Conditions are merged by ``type``: the operator owns ``Ready`` and ``Running`` and leaves every
other type alone (the CRD declares the list ``x-kubernetes-list-type: map`` keyed by ``type`` and
status is written with server-side apply, so another writer's condition types survive).
``lastTransitionTime`` only moves when ``status`` changes, as the API conventions require.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyncette_operator.spec import format_time

READY = "Ready"
RUNNING = "Running"
OWNED_TYPES = (READY, RUNNING)


class ReadyReason:
    """Reasons of Ready beyond the spec problems in ``spec.Reason``."""

    SCHEDULED = "Scheduled"
    SUSPENDED = "Suspended"
    STARTED = "Started"
    """An ``executeAt`` task whose run is in flight (shown as ``Completed`` once it has ended)."""
    COMPLETED = "Completed"
    BACKEND_UNAVAILABLE = "BackendUnavailable"


WAITING = "Waiting"


class WaitingReason:
    GROUP_FULL = "ConcurrencyGroupFull"
    NOT_WAITING = "NotWaiting"


class RunningReason:
    RUN_IN_FLIGHT = "RunInFlight"
    IDLE = "Idle"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""
    observed_generation: int | None = None
    since: datetime.datetime | None = None
    """When the condition took this status, if known better than "now" (Stale: when the last success
    became too old); used as ``lastTransitionTime`` when the status changes."""

    @property
    def status_text(self) -> str:
        return "True" if self.status else "False"


def render_condition(
    condition: Condition, *, previous: Mapping[str, Any] | None, now: datetime.datetime
) -> dict[str, Any]:
    """The API form of ``condition``, keeping ``previous``'s transition time if the status is unchanged."""
    transition = format_time(condition.since or now)
    if previous is not None and previous.get("status") == condition.status_text and previous.get("lastTransitionTime"):
        transition = str(previous["lastTransitionTime"])
    out: dict[str, Any] = {
        "type": condition.type,
        "status": condition.status_text,
        "reason": condition.reason,
        "message": one_line(condition.message),
        "lastTransitionTime": transition,
    }
    if condition.observed_generation is not None:
        out["observedGeneration"] = condition.observed_generation
    return out


def merge_conditions(
    existing: Iterable[Mapping[str, Any]], updates: Iterable[Condition], *, now: datetime.datetime
) -> list[dict[str, Any]]:
    """``existing`` with each type in ``updates`` replaced (order kept, new types appended)."""
    merged: dict[str, dict[str, Any]] = {}
    for item in existing:
        if isinstance(item, Mapping) and item.get("type"):
            merged[str(item["type"])] = dict(item)
    for condition in updates:
        merged[condition.type] = render_condition(condition, previous=merged.get(condition.type), now=now)
    return list(merged.values())


def find(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    for item in conditions or ():
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None


def one_line(text: str, limit: int = 1024) -> str:
    """Messages are one line: newlines folded, long ones cut with an ellipsis."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
