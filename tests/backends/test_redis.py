"""Redis-specific behaviour: configuration errors, namespaces, partitions, round trips, Lua details.

Semantics shared by every backend live in tests/conformance; this file covers what only Redis has.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conformance_backends.redis import delete_namespace
from core.core_helpers import eventually
from core.core_helpers import running
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.errors import BackendConfigurationError
from pyncette.errors import TaskLockedException
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.redis import RedisRepository
from pyncette.redis import redis_repository
from pyncette.repository.kit import PARKED
from pyncette.task import PartitionedTask
from pyncette.task import Task

pytestmark = [pytest.mark.services]

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def noop(context: Context) -> None:
    pass


def template(name: str = "tpl", **kwargs: Any) -> Task:
    return Task(name=name, func=noop, dynamic=True, **kwargs)


@pytest.fixture
async def namespace(redis_url: str) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await delete_namespace(redis_url, name)


@pytest.fixture
async def repo(redis_url: str, namespace: str) -> AsyncIterator[RedisRepository]:
    async with redis_repository(redis_url=redis_url, redis_namespace=namespace) as repository:
        yield repository


# ---- configuration ----


async def test_missing_url_is_one_line_error() -> None:
    with pytest.raises(BackendConfigurationError, match=r"^redis: redis_url: is required"):
        async with redis_repository(redis_namespace="x"):
            pass


async def test_unreachable_server_is_one_line_error() -> None:
    with pytest.raises(BackendConfigurationError, match=r"^redis: redis_url: cannot connect") as info:
        async with redis_repository(redis_url="redis://127.0.0.1:1/0", redis_timeout=2):
            pass
    assert "\n" not in str(info.value)


async def test_wrong_password_is_one_line_error(redis_url: str) -> None:
    bad = redis_url.replace("redis://", "redis://nobody:wrong-password@")
    with pytest.raises(BackendConfigurationError, match=r"^redis: redis_url: authentication failed") as info:
        async with redis_repository(redis_url=bad):
            pass
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"redis_url": "http://127.0.0.1/"}, r"^redis: redis_url: .*redis://"),
        ({"redis_url": 5}, r"^redis: redis_url: expected a redis:// URL"),
        ({"redis_namespace": 3}, r"^redis: redis_namespace: expected str"),
        ({"redis_timeout": 0}, r"^redis: redis_timeout: must be positive"),
        ({"batch_size": 0}, r"^redis: batch_size: must be an integer >= 1"),
    ],
)
async def test_bad_settings_are_one_line_errors(redis_url: str, settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(BackendConfigurationError, match=expected):
        async with redis_repository(**{"redis_url": redis_url, **settings}):
            pass


# ---- isolation and layout ----


async def test_namespaces_do_not_see_each_other(redis_url: str, namespace: str) -> None:
    # "ns" + ":e:..." must not collide with the namespace "ns:e", hence both are used here.
    other = f"{namespace}:e"
    tpl = template()
    try:
        async with (
            redis_repository(redis_url=redis_url, redis_namespace=namespace) as first,
            redis_repository(redis_url=redis_url, redis_namespace=other) as second,
        ):
            await first.register_task(NOW, tpl.instantiate("only-in-first", execute_at=NOW))
            assert (await second.list_task_states(NOW, tpl)).tasks == []
            assert (await second.lease_due(NOW, [tpl], limit=10)).executions == []
            batch = await first.lease_due(NOW, [tpl], limit=10)
            assert [e.task.name for e in batch.executions] == ["only-in-first"]
    finally:
        await delete_namespace(redis_url, other)


async def test_partitioned_task_spreads_instances_over_partitions(repo: RedisRepository) -> None:
    parent = PartitionedTask(name="fleet", func=noop, partition_count=4)
    partitions = parent.get_partitions()
    instances = [parent.instantiate(f"job-{i}", execute_at=NOW) for i in range(40)]
    await repo.register_tasks(NOW, instances)

    seen: dict[int, set[str]] = {}
    for number, partition in enumerate(partitions):
        batch = await repo.lease_due(NOW, [partition], limit=100)
        seen[number] = {e.task.name for e in batch.executions}
        assert all(parent.partition_selector(4, name) == number for name in seen[number])
        listed = await repo.list_task_states(NOW, partition, limit=100)
        assert {s.task.name for s in listed.tasks} == seen[number]

    assert all(seen.values()), f"some partition got no instances: {seen}"
    assert set().union(*seen.values()) == {i.name for i in instances}
    # Each partition has its own index key, so workers polling different partitions never meet.
    keys = {key.decode() async for key in repo._client.scan_iter(match=f"{repo._prefix}i:*")}
    assert keys == {repo._index_key(p) for p in partitions}


async def test_scheduled_time_keeps_microseconds(repo: RedisRepository) -> None:
    tpl = template()
    at = NOW + datetime.timedelta(microseconds=123457)
    await repo.register_task(NOW, tpl.instantiate("precise", execute_at=at))
    batch = await repo.lease_due(at, [tpl], limit=10)
    assert [e.scheduled_at for e in batch.executions] == [at]


# ---- round trips ----


class EvalCounter:
    def __init__(self, repo: RedisRepository) -> None:
        self.calls = 0
        original = repo._client.evalsha

        async def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(*args, **kwargs)

        repo._client.evalsha = counting  # type: ignore[method-assign]


async def test_batches_cost_one_script_call(repo: RedisRepository) -> None:
    first, second = template("first"), template("second")
    await repo.register_tasks(
        NOW,
        [t.instantiate(f"i{i}", interval=datetime.timedelta(seconds=10)) for t in (first, second) for i in range(30)],
    )
    counter = EvalCounter(repo)
    due = NOW + datetime.timedelta(seconds=10)

    batch = await repo.lease_due(due, [first, second], limit=50)
    assert (len(batch.executions), batch.has_more, counter.calls) == (50, True, 1)

    await repo.extend_leases(due, batch.executions)
    await repo.commit_executions(due, batch.executions)
    assert counter.calls == 3

    rest = await repo.lease_due(due, [first, second], limit=50)
    assert (len(rest.executions), rest.has_more) == (10, False)
    assert rest.next_due_at == NOW + datetime.timedelta(seconds=20)


async def test_a_draining_app_commits_each_batch_with_its_next_lease(redis_url: str, namespace: str) -> None:
    # One round trip per batch, not two: the results of a batch travel with the lease after it.
    app = Pyncette(
        repository_factory=redis_repository,
        redis_url=redis_url,
        redis_namespace=namespace,
        batch_size=50,
        concurrency_limit=50,
    )
    ran: dict[str, int] = {}

    @app.dynamic_task()
    async def job(context: Context) -> None:
        ran[context.task.name] = ran.get(context.task.name, 0) + 1

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    async with app.create() as setup:
        for i in range(300):
            await setup.schedule_task(job, f"i{i}", execute_at=past)
    async with running(app) as ctx:
        counter = EvalCounter(ctx.repository)  # type: ignore[arg-type]
        await eventually(lambda: len(ran) == 300, within=60)
        await ctx.drain()
        assert (await ctx.list_tasks(job)).tasks == []  # every run committed
    assert set(ran.values()) == {1}
    # Six leases of 50 carrying the results before them, one that finds nothing and the last
    # batch's results (7 here); with commits sent on their own it took 10.
    assert counter.calls <= 8, counter.calls


async def test_at_most_once_batch_costs_two_script_calls(repo: RedisRepository) -> None:
    tpl = template(execution_mode=ExecutionMode.AT_MOST_ONCE)
    await repo.register_tasks(
        NOW, [tpl.instantiate(f"i{i}", interval=datetime.timedelta(seconds=5)) for i in range(20)]
    )
    counter = EvalCounter(repo)
    batch = await repo.lease_due(NOW + datetime.timedelta(seconds=5), [tpl], limit=100)
    assert len(batch.executions) == 20
    assert all(e.lease is None for e in batch.executions)
    assert counter.calls == 2
    # Already moved forward: nothing is due until the next interval.
    again = await repo.lease_due(NOW + datetime.timedelta(seconds=9), [tpl], limit=100)
    assert again.executions == []
    assert again.next_due_at == NOW + datetime.timedelta(seconds=10)


async def test_scripts_are_reloaded_after_script_flush(repo: RedisRepository) -> None:
    tpl = template()
    await repo.register_task(NOW, tpl.instantiate("x", execute_at=NOW))
    await repo._client.script_flush()
    batch = await repo.lease_due(NOW, [tpl], limit=10)
    assert [e.task.name for e in batch.executions] == ["x"]


async def test_static_entry_is_recreated_after_it_vanished(redis_url: str, namespace: str) -> None:
    static = Task(name="tick", func=noop, interval=datetime.timedelta(seconds=10))
    async with redis_repository(redis_url=redis_url, redis_namespace=namespace) as repo:
        await repo.lease_due(NOW, [static], limit=10)
        assert await repo.get_task_state(NOW, static) is not None
        await delete_namespace(redis_url, namespace)
        await repo.lease_due(NOW, [static], limit=10)  # notices the entry is gone
        await repo.lease_due(NOW, [static], limit=10)  # creates it again
        state = await repo.get_task_state(NOW, static)
        assert state is not None
        assert state.scheduled_at == NOW + datetime.timedelta(seconds=10)


async def test_app_runs_partitioned_instances_from_every_partition(redis_url: str, namespace: str) -> None:
    clock = FakeClock(NOW)
    app = Pyncette(clock=clock, repository_factory=redis_repository, redis_url=redis_url, redis_namespace=namespace)
    runs: dict[str, datetime.datetime] = {}

    @app.partitioned_task(partition_count=4)
    async def sharded(context: Context) -> None:
        runs[context.task.name] = context.scheduled_at

    names = {f"n{i}" for i in range(20)}
    async with running(app) as ctx:
        for name in sorted(names):
            await ctx.schedule_task(sharded, name, interval=datetime.timedelta(seconds=5))
        await clock.advance(seconds=5)
        await eventually(lambda: set(runs) == names)
        listed = await ctx.list_tasks(sharded, limit=100)
        assert {state.task.name for state in listed.tasks} == names

    assert set(runs.values()) == {NOW + datetime.timedelta(seconds=5)}
    async with redis_repository(redis_url=redis_url, redis_namespace=namespace) as repo:
        used = {
            number
            for number, partition in enumerate(sharded.get_partitions())
            if await repo._client.zcard(repo._index_key(partition))
        }
    assert len(used) > 1, "every instance landed in one partition"


async def test_a_leased_instance_blocks_the_whole_batch(repo: RedisRepository) -> None:
    tpl = template()
    await repo.register_task(NOW, tpl.instantiate("busy", execute_at=NOW))
    await repo.lease_due(NOW, [tpl], limit=10)
    with pytest.raises(TaskLockedException, match="busy"):
        await repo.register_tasks(
            NOW, [tpl.instantiate("fresh", execute_at=NOW), tpl.instantiate("busy", execute_at=NOW)]
        )
    assert await repo.get_task_state(NOW, tpl.instantiate("fresh", execute_at=NOW)) is None


async def test_many_partitions_are_drained_in_bounded_batches(repo: RedisRepository) -> None:
    parent = PartitionedTask(name="wide", func=noop, partition_count=8)
    expected = {f"job-{i}" for i in range(100)}
    await repo.register_tasks(NOW, [parent.instantiate(name, execute_at=NOW) for name in expected])
    leased: list[str] = []
    while True:
        batch = await repo.lease_due(NOW, parent.get_partitions(), limit=10)
        assert len(batch.executions) <= 10
        leased += [e.task.name for e in batch.executions]
        if not batch.has_more:
            break
    assert sorted(leased) == sorted(expected)


async def test_a_recurring_instance_is_leased_with_its_current_spec(repo: RedisRepository) -> None:
    tpl = template()
    every = datetime.timedelta(seconds=10)
    await repo.register_task(NOW, tpl.instantiate("job", interval=every, colour="red"))
    first = await repo.lease_due(NOW + every, [tpl], limit=10)
    await repo.commit_executions(NOW + every, first.executions)
    second = await repo.lease_due(NOW + 2 * every, [tpl], limit=10)
    assert second.executions[0].task is first.executions[0].task  # unchanged spec: built once
    await repo.commit_executions(NOW + 2 * every, second.executions)

    await repo.register_task(NOW + 2 * every, tpl.instantiate("job", interval=every, colour="blue"), force=True)
    third = await repo.lease_due(NOW + 4 * every, [tpl], limit=10)
    assert [e.task.extra_args for e in third.executions] == [{"colour": "blue"}]


async def test_specs_that_are_not_text_or_not_ascii_spoil_only_their_row(
    repo: RedisRepository, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Specs come back as stored, cut apart by byte length: multi-byte text stays intact around a
    spec that is not UTF-8 at all, which is quarantined alone."""
    tpl = template()
    names = ["ascii", "grüße", "bytes", "日本"]
    await repo.register_tasks(NOW, [tpl.instantiate(n, execute_at=NOW, note=f"{n} ✓") for n in names])
    await repo._client.hset(f"pyncette:{namespace}:e:tpl:bytes", "spec", b'{"name": "bytes", \xff\xfe}')

    batch = await repo.lease_due(NOW, [tpl], limit=10)

    assert sorted((e.task.name, e.task.extra_args["note"]) for e in batch.executions) == [
        ("ascii", "ascii ✓"),
        ("grüße", "grüße ✓"),
        ("日本", "日本 ✓"),
    ]
    assert "task 'tpl:bytes': its stored spec is not UTF-8 text" in caplog.text
    [state] = [s for s in (await repo.list_task_states(NOW, tpl)).tasks if s.task.name == "bytes"]
    assert state.problem is not None


async def test_a_name_or_time_that_is_not_utf8_spoils_only_its_row(
    repo: RedisRepository, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Written by another client, an index member or a stored time that is not UTF-8 text must not
    fail every lease of the template (an outage for all its instances): only its row is quarantined,
    parked as stored, and listing still works."""
    tpl = template()
    await repo.register_tasks(NOW, [tpl.instantiate(n, execute_at=NOW) for n in ("good", "bad-time")])
    prefix = f"pyncette:{namespace}:".encode()
    due = str(int(NOW.timestamp() * 1_000_000)).encode()
    bad_name = b"tpl:caf\xe9"  # Latin-1, as a non-Python client might write it
    await repo._client.hset(prefix + b"e:" + bad_name, mapping={b"ea": due, b"spec": b'{"name": "caf"}'})
    await repo._client.zadd(prefix + b"i:tpl", {bad_name: int(due)})
    await repo._client.zadd(prefix + b"n:tpl", {bad_name: 0})
    await repo._client.hset(prefix + b"e:tpl:bad-time", b"ea", b"\xff" + due)

    batch = await repo.lease_due(NOW, [tpl], limit=10)

    assert [e.task.name for e in batch.executions] == ["good"]
    assert caplog.text.count("its stored name or time is not UTF-8 text") == 2
    # Parked under their stored names: leased by nobody, so not read again by the next poll.
    assert await repo._client.hget(prefix + b"e:" + bad_name, b"lb") == PARKED.encode()
    assert await repo._client.hget(prefix + b"e:tpl:bad-time", b"lb") == PARKED.encode()
    await repo.commit_executions(NOW, batch.executions)
    assert (await repo.lease_due(NOW, [tpl], limit=10)).executions == []
    listed = {s.task.name: s for s in (await repo.list_task_states(NOW, tpl)).tasks}
    assert listed["caf\udce9"].problem is not None and listed["bad-time"].problem is not None
    # Removed by its listed name, like any other entry.
    bad = listed["caf\udce9"].task
    assert await repo.get_task_state(NOW, bad) is not None
    await repo.unregister_task(NOW, bad)
    assert await repo.get_task_state(NOW, bad) is None
    assert await repo._client.exists(prefix + b"e:" + bad_name) == 0
    assert await repo._client.zscore(prefix + b"i:tpl", bad_name) is None
    assert await repo._client.zscore(prefix + b"n:tpl", bad_name) is None
    assert "caf\udce9" not in {s.task.name for s in (await repo.list_task_states(NOW, tpl)).tasks}
