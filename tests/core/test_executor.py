"""The default executor: a batch starts in one Task, and only a body that suspends takes a Task of its own.

These check what a body can observe (its task, its context, running beside others, cancellation)
and what an operator would (slots freed, nothing left running, no Task per quick execution).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from collections.abc import Coroutine
from typing import Any

import pytest
from core_helpers import START
from core_helpers import eventually

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.executor import DefaultExecutor


def at(seconds: float) -> datetime.datetime:
    return START + datetime.timedelta(seconds=seconds)


def count_tasks(created: list[asyncio.Task[Any]]) -> None:
    """Installs a task factory on the running loop that records every Task it creates."""
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        created.append(task)  # named after the factory returns (Python 3.11)
        return task

    loop.set_task_factory(factory)  # type: ignore[arg-type]


async def test_bodies_that_do_not_suspend_take_no_task_each(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    ran: list[str] = []
    created: list[asyncio.Task[Any]] = []

    @app.dynamic_task()
    async def quick(context: Context) -> None:
        ran.append(context.task.name)

    count_tasks(created)
    try:
        async with app.create() as ctx:
            loop_task = asyncio.create_task(ctx.run())
            await FakeClock._settle()
            for i in range(40):
                await ctx.schedule_task(quick, f"job-{i:02}", execute_at=at(1))
            await clock.advance(seconds=1)
            await eventually(lambda: len(ran) == 40 and not ctx._running)
            ctx.shutdown()
            await asyncio.wait_for(loop_task, 10)
    finally:
        asyncio.get_running_loop().set_task_factory(None)

    assert sorted(ran) == [f"job-{i:02}" for i in range(40)]
    # One lease (batch_size 100), so one Task started all 40; 40 would mean a Task per execution.
    assert [task.get_name() for task in created].count("pyncette-execution") == 1


async def test_a_body_that_suspends_keeps_its_task_and_the_rest_of_the_batch_runs_meanwhile(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    release = asyncio.Event()
    tasks: dict[str, list[asyncio.Task[Any] | None]] = {}
    finished: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        name = context.task.name
        tasks[name] = [asyncio.current_task()]
        if name == "b":
            await release.wait()
            tasks[name].append(asyncio.current_task())
        finished.append(name)

    async with app.create() as ctx:
        loop_task = asyncio.create_task(ctx.run())
        await FakeClock._settle()
        for name in ("a", "b", "c", "d"):
            await ctx.schedule_task(job, name, execute_at=at(1))
        await clock.advance(seconds=1)
        # b waits; the executions leased with it after it still ran.
        await eventually(lambda: sorted(finished) == ["a", "c", "d"])
        release.set()
        await eventually(lambda: sorted(finished) == ["a", "b", "c", "d"] and not ctx._running)
        ctx.shutdown()
        await asyncio.wait_for(loop_task, 10)

    b_before, b_after = tasks["b"]
    assert b_before is b_after  # the Task it suspended in is the one it went on in
    assert b_before is not None and b_before is not loop_task
    # What was leased after b ran elsewhere: from the moment b could suspend, its Task is b's alone.
    assert tasks["c"][0] is not b_before and tasks["d"][0] is not b_before


async def test_bodies_that_all_suspend_run_side_by_side(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    """Each waits until all five have started: they can only finish if none waits for another."""
    app = make_app()
    started: list[str] = []
    all_started = asyncio.Event()
    finished: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        started.append(context.task.name)
        if len(started) == 5:
            all_started.set()
        await all_started.wait()
        finished.append(context.task.name)

    async with app.create() as ctx:
        loop_task = asyncio.create_task(ctx.run())
        await FakeClock._settle()
        for i in range(5):
            await ctx.schedule_task(job, str(i), execute_at=at(1))
        await clock.advance(seconds=1)
        await eventually(lambda: len(finished) == 5 and not ctx._running)
        ctx.shutdown()
        await asyncio.wait_for(loop_task, 10)

    assert sorted(finished) == ["0", "1", "2", "3", "4"]


async def _waits_forever(name: str, events: list[str]) -> None:
    events.append(f"{name} started")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        events.append(f"{name} cancelled")
        raise


async def test_cancelling_the_executor_cancels_every_waiting_execution_and_frees_its_slots() -> None:
    events: list[str] = []
    executor = DefaultExecutor(concurrency_limit=10)

    async def use() -> None:
        async with executor:
            executor.start_batch([_waits_forever(name, events) for name in ("a", "b", "c")])
            await asyncio.Event().wait()

    user = asyncio.create_task(use())
    await eventually(lambda: len(events) == 3)
    assert executor.free_slots() == 7
    user.cancel()
    with pytest.raises(asyncio.CancelledError):
        await user

    assert sorted(events) == ["a cancelled", "a started", "b cancelled", "b started", "c cancelled", "c started"]
    assert executor.free_slots() == 10


async def test_an_execution_that_crashes_is_logged_and_the_rest_of_its_batch_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The executions the app hands over catch their bodies' errors; this is the net below that."""
    ran: list[str] = []

    async def fine(name: str) -> None:
        ran.append(name)

    async def broken() -> None:
        raise RuntimeError("bookkeeping bug")

    async def broken_after_waiting() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("bookkeeping bug after a wait")

    executor = DefaultExecutor(concurrency_limit=10)
    batch: list[Coroutine[Any, Any, None]] = [fine("a"), broken(), fine("b"), broken_after_waiting(), fine("c")]
    with caplog.at_level(logging.ERROR, logger="pyncette.executor"):
        async with executor:
            executor.start_batch(batch)
        # Leaving the block waited for all of them.
        assert executor.free_slots() == 10

    assert ran == ["a", "b", "c"]
    crashes = [r for r in caplog.records if r.getMessage() == "Execution crashed outside of the task body"]
    assert [str(r.exc_info[1]) for r in crashes if r.exc_info] == [
        "bookkeeping bug",
        "bookkeeping bug after a wait",
    ]


def test_leased_rows_built_on_the_fast_path_are_the_same_frozen_objects() -> None:
    """``kit.leased``/``unleased`` skip the frozen dataclasses' ``__init__``; nothing else may differ."""
    import dataclasses

    from pyncette.model import Lease
    from pyncette.model import LeasedExecution
    from pyncette.repository.kit import TokenLease
    from pyncette.repository.kit import leased
    from pyncette.repository.kit import token_of
    from pyncette.repository.kit import unleased

    app = Pyncette()

    @app.task(interval=datetime.timedelta(seconds=1))
    async def job(context: Context) -> None:
        pass

    fast = leased(job, at(1), "token-1")
    assert fast == LeasedExecution(job, at(1), Lease(TokenLease("token-1", at(1))))
    assert token_of(fast.lease) == "token-1" and str(fast.lease) == "token-1"
    assert unleased(job, at(1)) == LeasedExecution(job, at(1), None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.task = job  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.lease.scheduled_at = at(2)  # type: ignore[union-attr]
    assert dataclasses.replace(fast, lease=None) == unleased(job, at(1))
