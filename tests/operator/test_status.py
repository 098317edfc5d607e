"""Status: conditions merged by type, coalesced writes within the per-task interval and global rate."""

from __future__ import annotations

import datetime
from typing import Any

from pyncette_operator.conditions import Condition
from pyncette_operator.conditions import merge_conditions
from pyncette_operator.ratelimit import TokenBucket
from pyncette_operator.status import ActiveRun
from pyncette_operator.status import StaleView
from pyncette_operator.status import StatusWriter
from pyncette_operator.status import TaskStatus

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


class Ticker:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_merge_keeps_other_types_and_transition_time() -> None:
    existing = [
        {"type": "Ready", "status": "True", "reason": "Scheduled", "lastTransitionTime": "2029-01-01T00:00:00Z"},
        {"type": "Healthy", "status": "True", "reason": "SomeoneElse"},
    ]
    merged = merge_conditions(existing, [Condition("Ready", True, "Scheduled", "again")], now=NOW)
    assert merged[0]["lastTransitionTime"] == "2029-01-01T00:00:00Z"
    assert merged[0]["message"] == "again"
    assert merged[1] == {"type": "Healthy", "status": "True", "reason": "SomeoneElse"}
    flipped = merge_conditions(merged, [Condition("Ready", False, "InvalidSchedule", "bad\ncron")], now=NOW)
    assert flipped[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    assert flipped[0]["message"] == "bad cron"


def test_token_bucket() -> None:
    tick = Ticker()
    bucket = TokenBucket(rate=2, burst=2, monotonic=tick)
    assert bucket.try_take() and bucket.try_take() and not bucket.try_take()
    assert bucket.wait_time() == 0.5
    tick.t += 0.5
    assert bucket.try_take()


def make_writer(
    tick: Ticker,
    sent: list[tuple[str, str, dict[str, Any]]],
    *,
    interval: float = 10,
    rate: float = 100,
    burst: int = 100,
) -> StatusWriter:
    async def send(namespace: str, name: str, body: dict[str, Any]) -> None:
        sent.append((namespace, name, body))

    return StatusWriter(send=send, interval=interval, rate=rate, burst=burst, monotonic=tick, wall_clock=lambda: NOW)


async def test_writes_are_coalesced_per_task_interval() -> None:
    tick = Ticker()
    sent: list[tuple[str, str, dict[str, Any]]] = []
    writer = make_writer(tick, sent)
    # A run every second for 60 s: 120 changes.
    for second in range(60):
        state = writer.state("ns", "t")
        at = NOW + datetime.timedelta(seconds=second)
        state.active[f"p{second}"] = ActiveRun(f"p{second}", "Pod", at)
        state.last_schedule_time = at
        writer.changed("ns", "t")
        await writer.flush_due()
        state.active.pop(f"p{second}")
        state.last_successful_time = at
        writer.changed("ns", "t")
        await writer.flush_due()
        tick.t += 1
    await writer.flush_due()
    assert 6 <= len(sent) <= 7  # the first change at once, then one per 10 s
    last = sent[-1][2]["status"]
    assert last["lastScheduleTime"] >= "2030-01-01T00:00:5"
    assert {c["type"] for c in last["conditions"]} == {"Running"}


async def test_urgent_skips_interval_but_not_rate() -> None:
    tick = Ticker()
    sent: list[tuple[str, str, dict[str, Any]]] = []
    writer = make_writer(tick, sent, rate=1, burst=1)
    writer.changed("ns", "a")
    writer.changed("ns", "b", urgent=True)
    assert await writer.flush_due() == 1.0  # one token: the second write waits for the bucket
    assert len(sent) == 1
    tick.t += 1
    await writer.flush_due()
    assert [s[1] for s in sent] == ["a", "b"]
    writer.changed("ns", "a", urgent=True)
    tick.t += 1
    await writer.flush_due()
    assert len(sent) == 3


async def test_a_write_built_on_a_stale_view_is_built_again_on_a_fresh_read() -> None:
    """Another replica wrote a later success after what this replica observed: the write based on
    the old version is refused, and the one built on a fresh read keeps that success."""
    sent: list[dict[str, Any]] = []
    later = "2030-01-01T00:10:00Z"
    apiserver = {"metadata": {"uid": "u", "resourceVersion": "7"}, "status": {"lastSuccessfulTime": later}}

    async def send(namespace: str, name: str, body: dict[str, Any]) -> str | None:
        if body["resourceVersion"] != apiserver["metadata"]["resourceVersion"]:
            raise StaleView()
        sent.append(body)
        return "8"

    async def read(namespace: str, name: str) -> dict[str, Any]:
        return apiserver

    writer = StatusWriter(
        send=send, read=read, interval=10, rate=100, burst=100, monotonic=Ticker(), wall_clock=lambda: NOW
    )
    writer.observe("ns", "t", {"lastSuccessfulTime": "2030-01-01T00:00:00Z"}, uid="u", resource_version="5")
    failed = NOW + datetime.timedelta(minutes=20)
    writer.state("ns", "t").last_failure_time = failed
    writer.changed("ns", "t", urgent=True)
    await writer.flush_due()
    [body] = sent
    assert (body["status"]["lastSuccessfulTime"], body["status"]["lastFailureTime"]) == (later, "2030-01-01T00:20:00Z")
    assert writer.state("ns", "t").resource_version == "8"  # what the next write is based on


async def test_render_merges_observed_monotonic_and_running_condition() -> None:
    tick = Ticker()
    sent: list[tuple[str, str, dict[str, Any]]] = []
    writer = make_writer(tick, sent)
    writer.observe(
        "ns",
        "t",
        {
            "lastSuccessfulTime": "2030-01-01T00:05:00Z",
            "active": [{"name": "other-replica-pod", "kind": "Pod", "scheduledAt": "2030-01-01T00:04:00Z"}],
            "conditions": [{"type": "Foreign", "status": "True"}],
        },
    )
    state = writer.state("ns", "t")
    state.last_successful_time = NOW  # older than observed: must not roll back
    state.ready = Condition("Ready", True, "Scheduled", "ok", 3)
    writer.changed("ns", "t")
    await writer.flush_due()
    body = sent[0][2]["status"]
    assert body["lastSuccessfulTime"] == "2030-01-01T00:05:00Z"
    assert [a["name"] for a in body["active"]] == ["other-replica-pod"]
    running = next(c for c in body["conditions"] if c["type"] == "Running")
    assert running["status"] == "True"
    ready = next(c for c in body["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == 3
    # The Foreign condition is not ours: server-side apply leaves it alone, we do not send it.
    assert all(c["type"] != "Foreign" for c in body["conditions"])
    # A run this replica saw finish is not resurrected by a stale echo.
    state.finished["other-replica-pod"] = None
    writer.changed("ns", "t", urgent=True)
    await writer.flush_due()
    assert sent[-1][2]["status"]["active"] == []


def test_status_active_is_capped_and_running_counts_every_run() -> None:
    state = TaskStatus()
    for minute in range(30):
        when = NOW + datetime.timedelta(minutes=minute)
        state.active[f"pod-{minute:02d}"] = ActiveRun(f"pod-{minute:02d}", "Pod", when)
    body = state.render(NOW)
    # The 20 most recently scheduled runs, oldest first.
    assert [a["name"] for a in body["active"]] == [f"pod-{minute:02d}" for minute in range(10, 30)]
    running = next(c for c in body["conditions"] if c["type"] == "Running")
    assert running["message"].startswith("30 run(s) in flight")
