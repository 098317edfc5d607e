"""Issue-12 features wired together in one process on fake time (see test_inprocess.py's world)."""

from __future__ import annotations

import asyncio
import datetime

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
