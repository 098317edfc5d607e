"""Prometheus metrics keep pyncette 1.x's names, labels and counts although the work is batched.

Dashboards and alerts written for 1.x read ``pyncette_repository_ops_total`` by ``operation``
(``poll_task``, ``poll_dynamic_task``, ``commit_task``, ``unlock_task``, ``extend_lease``,
``register_task``...) and ``task_name``; the batch calls have their own family,
``pyncette_repository_batch_ops_*`` by ``operation``.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from core_helpers import eventually
from core_helpers import running
from prometheus_client import CollectorRegistry

from pyncette import Context
from pyncette import FailureMode
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.prometheus import use_prometheus


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def ops(registry: CollectorRegistry, operation: str, task_name: str) -> float:
    return sample(registry, "pyncette_repository_ops_total", operation=operation, task_name=task_name)


async def test_repository_operations_are_counted_per_task_under_1x_names(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    registry = CollectorRegistry()
    app = make_app()
    use_prometheus(app, registry=registry)
    runs: list[str] = []

    @app.task(interval=datetime.timedelta(seconds=2))
    async def beating(context: Context) -> None:
        await context.heartbeat()
        runs.append("beating")

    @app.dynamic_task(failure_mode=FailureMode.UNLOCK)
    async def failing(context: Context) -> None:
        runs.append("failing")
        raise RuntimeError("retried at the next poll")

    async with running(app) as ctx:
        await ctx.schedule_task(failing, "one", interval=datetime.timedelta(seconds=2))
        await clock.advance(seconds=6)
        await eventually(lambda: runs.count("beating") == 3 and runs.count("failing") >= 3)
        await ctx.drain()
        await ctx.unschedule_task(failing, "one")
        await ctx.get_task(beating)
        await ctx.list_tasks(failing)

    beats, failures = runs.count("beating"), runs.count("failing")
    polls = sample(registry, "pyncette_repository_batch_ops_total", operation="lease_due")
    assert polls >= 1
    # Every poll stands for 1.x's per-task polls: each task queried, each static task polled...
    assert ops(registry, "poll_dynamic_task", "beating") == polls
    assert ops(registry, "poll_dynamic_task", "failing") == polls
    assert ops(registry, "poll_task", "beating") == polls
    # ...and each leased instance polled, labelled with its template's name (not the instance's).
    assert ops(registry, "poll_task", "failing") == failures
    assert ops(registry, "commit_task", "beating") == beats
    assert ops(registry, "extend_lease", "beating") == beats
    assert ops(registry, "unlock_task", "failing") == failures
    assert ops(registry, "register_task", "failing") == 1
    assert ops(registry, "unregister_task", "failing") == 1
    assert ops(registry, "get_task_state", "beating") == 1
    assert ops(registry, "list_task_states", "failing") == 1
    assert (
        sample(registry, "pyncette_repository_ops_duration_seconds_count", operation="commit_task", task_name="beating")
        == beats
    )
    assert sample(registry, "pyncette_repository_ops_in_progress", operation="poll_task", task_name="beating") == 0
    assert sample(registry, "pyncette_tasks_total", task_name="failing") == failures
    # The batch calls themselves are counted apart, so summing the 1.x operations counts no call twice.
    assert sample(registry, "pyncette_repository_batch_ops_total", operation="commit_executions") >= 1
    assert sample(registry, "pyncette_repository_batch_ops_total", operation="unlock_executions") >= 1
    assert sample(registry, "pyncette_repository_batch_ops_total", operation="extend_leases") == beats
    assert (
        registry.get_sample_value("pyncette_repository_ops_total", {"operation": "lease_due", "task_name": "*"}) is None
    )
