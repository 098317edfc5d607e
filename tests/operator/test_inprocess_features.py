"""Issue-12 features wired together in one process on fake time (see test_inprocess.py's world)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from test_inprocess import POD
from test_inprocess import T0
from test_inprocess import World
from test_inprocess import until
from test_inprocess import world

from pyncette_operator.runs.jitter import jitter_delay

__all__ = ["world"]


async def leased(world: World, instance: str) -> None:
    """Waits until the run of ``instance`` holds its lease (a condition wait with a deadline)."""
    for _ in range(2000):
        state = await world.ctx.get_task(world.parts.mirror._template, instance)
        if state is not None and state.locked_until is not None:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{instance} was never leased")


def test_jitter_delay_is_fixed_per_slot_and_spread_within_the_bound() -> None:
    jitter = datetime.timedelta(seconds=30)
    slot = T0 + datetime.timedelta(minutes=1)
    delays = [jitter_delay(task_uid=f"uid-{n}", scheduled_at=slot, jitter=jitter) for n in range(200)]
    assert all(datetime.timedelta() <= d < jitter for d in delays)
    assert len(set(delays)) > 150  # spread, not one value
    again = jitter_delay(task_uid="uid-7", scheduled_at=slot, jitter=jitter)
    assert again == delays[7]  # the same in every replica and after a restart
    other_slot = jitter_delay(task_uid="uid-7", scheduled_at=slot + jitter, jitter=jitter)
    assert other_slot != again


async def test_jitter_delays_the_pod_but_not_the_slot(world: World) -> None:
    await world.apply("j", {"interval": "1m", "jitter": "30s", "podTemplate": POD})
    slot = T0 + datetime.timedelta(minutes=1)
    delay = jitter_delay(task_uid="uid-j", scheduled_at=slot, jitter=datetime.timedelta(seconds=30))
    assert delay > datetime.timedelta(seconds=1)  # this uid's first slot; keeps the test meaningful

    await world.clock.set(slot + delay - datetime.timedelta(seconds=1))
    await leased(world, "ns/j")
    assert world.pods_of("j") == []  # leased, waiting for its delay
    await world.clock.set(slot + delay)
    [pod] = await until(lambda: world.pods_of("j"), "the run Pod after the delay")
    assert pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"] == "2030-01-01T00:01:00Z"
    assert str(int(slot.timestamp())) in pod["metadata"]["name"]
    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.kube.status("j").get("lastSuccessfulTime"), "success")
    assert world.kube.status("j")["lastScheduleTime"] == "2030-01-01T00:01:00Z"


def ready(world: World, name: str) -> dict[str, Any]:
    return next((c for c in world.kube.status(name).get("conditions", []) if c["type"] == "Ready"), {})


async def fail_next_run(world: World, name: str, count_before: int) -> None:
    """Moves the clock to the next run of an every-10s task and fails its Pod."""
    await world.clock.advance(seconds=10)
    pods = await until(lambda: len(world.pods_of(name)) > count_before and world.pods_of(name), "the next run Pod")
    newest = max(pods, key=lambda p: p["metadata"]["annotations"]["pyncette.dev/scheduled-at"])
    world.finish_pod(newest["metadata"]["name"], succeeded=False)
    await until(lambda: world.kube.status(name).get("lastFailureTime"), "the failure recorded")


async def test_circuit_breaker_stops_after_n_failed_runs_and_resumes(world: World) -> None:
    spec = {
        "interval": "10s",
        "backoffLimit": 0,
        "suspendAfterFailures": 2,
        "failedRunsHistoryLimit": 10,
        "podTemplate": POD,
    }
    await world.apply("cb", spec)
    template = world.parts.mirror._template
    await fail_next_run(world, "cb", 0)
    assert (await until(lambda: world.kube.status("cb").get("circuitBreaker"), "a count"))["consecutiveFailures"] == 1
    assert ready(world, "cb")["status"] == "True"
    await fail_next_run(world, "cb", 1)

    await until(lambda: ready(world, "cb").get("reason") == "TooManyFailures", "Ready=False TooManyFailures")
    assert ready(world, "cb")["status"] == "False"
    assert "stopped after 2 failed runs in a row (suspendAfterFailures: 2)" in ready(world, "cb")["message"]
    record = world.kube.status("cb")["circuitBreaker"]
    assert record["consecutiveFailures"] == 2 and record["trippedGeneration"] == 1 and record["trippedAt"]
    warnings = [e for e in world.kube.events if e["reason"] == "TooManyFailures"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    await world.parts.mirror.retry_dirty()  # what the operator's repair loop does every 2 s
    assert await world.ctx.get_task(template, "ns/cb") is None
    await world.clock.advance(seconds=60)
    assert len(world.pods_of("cb")) == 2  # nothing runs while stopped
    # A status echo (or another replica's watch event) keeps it stopped.
    await world.apply("cb", spec)
    assert await world.ctx.get_task(template, "ns/cb") is None

    # kubectl ptask resume: a new pyncette.dev/resume value.
    await world.apply("cb", spec, annotations={"pyncette.dev/resume": "2030-01-01T00:01:30Z"})
    assert await world.ctx.get_task(template, "ns/cb") is not None
    await until(lambda: ready(world, "cb").get("reason") == "Scheduled", "Ready again")
    assert world.kube.status("cb")["circuitBreaker"]["consecutiveFailures"] == 0
    assert [e for e in world.kube.events if e["reason"] == "Resumed"]
    await world.clock.advance(seconds=10)
    await until(lambda: len(world.pods_of("cb")) > 2, "a run after the resume")


async def test_a_spec_change_resumes_and_a_success_resets_the_count(world: World) -> None:
    spec = {
        "interval": "10s",
        "backoffLimit": 0,
        "suspendAfterFailures": 1,
        "failedRunsHistoryLimit": 10,
        "podTemplate": POD,
    }
    await world.apply("sc", spec)
    await fail_next_run(world, "sc", 0)
    await until(lambda: ready(world, "sc").get("reason") == "TooManyFailures", "stopped after one failure")
    await world.parts.mirror.retry_dirty()
    await world.apply("sc", {**spec, "suspendAfterFailures": 3})  # generation 2
    await until(lambda: ready(world, "sc").get("reason") == "Scheduled", "resumed by the spec change")

    await fail_next_run(world, "sc", 1)
    await until(lambda: world.kube.status("sc")["circuitBreaker"]["consecutiveFailures"] == 1, "one failure")
    await world.clock.advance(seconds=10)
    pods = await until(lambda: len(world.pods_of("sc")) > 2 and world.pods_of("sc"), "a third run")
    newest = max(pods, key=lambda p: p["metadata"]["annotations"]["pyncette.dev/scheduled-at"])
    world.finish_pod(newest["metadata"]["name"], succeeded=True)
    await until(lambda: world.kube.status("sc")["circuitBreaker"]["consecutiveFailures"] == 0, "reset by a success")
    assert ready(world, "sc")["reason"] == "Scheduled"
