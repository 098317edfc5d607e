"""PostgreSQL-specific behaviour: configuration errors, the table, concurrent leasing, round trips.

Semantics shared by every backend live in tests/conformance; this file covers what only PostgreSQL has.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from conformance_backends.postgres import drop_table
from pyncette.errors import BackendConfigurationError
from pyncette.errors import TaskLockedException
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.postgres import PostgresRepository
from pyncette.postgres import postgres_repository
from pyncette.task import PartitionedTask
from pyncette.task import Task

pytestmark = [pytest.mark.services]

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def noop(context: Context) -> None:
    pass


def template(name: str = "tpl", **kwargs: Any) -> Task:
    return Task(name=name, func=noop, dynamic=True, **kwargs)


@pytest.fixture
async def table_name(postgres_url: str) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex[:16]}"
    yield name
    await drop_table(postgres_url, name)


@pytest.fixture
async def repo(postgres_url: str, table_name: str) -> AsyncIterator[PostgresRepository]:
    async with postgres_repository(postgres_url=postgres_url, postgres_table_name=table_name) as repository:
        yield repository


# ---- configuration ----


async def test_missing_url_is_one_line_error() -> None:
    with pytest.raises(BackendConfigurationError, match=r"^postgres: postgres_url: is required"):
        async with postgres_repository(postgres_table_name="x"):
            pass


async def test_unreachable_server_is_one_line_error() -> None:
    with pytest.raises(
        BackendConfigurationError, match=r"^postgres: postgres_url: cannot connect to 127.0.0.1:1 "
    ) as info:
        async with postgres_repository(postgres_url="postgresql://postgres:secret@127.0.0.1:1/pyncette"):
            pass
    assert "\n" not in str(info.value)
    assert "secret" not in str(info.value)


async def test_wrong_password_is_one_line_error(postgres_url: str) -> None:
    parts = postgres_url.split("@", 1)
    bad = "postgresql://postgres:wrong-password@" + parts[1]
    with pytest.raises(BackendConfigurationError, match=r"^postgres: postgres_url: authentication failed") as info:
        async with postgres_repository(postgres_url=bad):
            pass
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "name",
    ["tasks; DROP TABLE users", 'x"y', "Tasks", "1tasks", "", "a" * 51, "public.tasks"],
)
async def test_unsafe_table_name_is_refused_before_connecting(name: str) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^postgres: postgres_table_name: .* is not a safe table name"):
        # Port 1: the check must happen before any connection attempt.
        async with postgres_repository(postgres_url="postgresql://u@127.0.0.1:1/db", postgres_table_name=name):
            pass


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"postgres_url": "mysql://127.0.0.1/"}, r"^postgres: postgres_url: expected a postgresql:// URL"),
        ({"batch_size": 0}, r"^postgres: batch_size: must be an integer >= 1"),
    ],
)
async def test_bad_settings_are_one_line_errors(postgres_url: str, settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(BackendConfigurationError, match=expected):
        async with postgres_repository(**{"postgres_url": postgres_url, **settings}):
            pass


# ---- the table ----


async def test_table_is_created_unless_skipped(postgres_url: str, table_name: str) -> None:
    async with postgres_repository(
        postgres_url=postgres_url, postgres_table_name=table_name, postgres_skip_table_create=True
    ) as repo:
        exists = await repo._pool.fetchval("SELECT to_regclass($1)", table_name)
        assert exists is None
    async with postgres_repository(postgres_url=postgres_url, postgres_table_name=table_name) as repo:
        exists = await repo._pool.fetchval("SELECT to_regclass($1)", table_name)
        assert exists == table_name


async def test_concurrent_start_ups_create_the_table_once(postgres_url: str, table_name: str) -> None:
    async def start() -> None:
        async with postgres_repository(postgres_url=postgres_url, postgres_table_name=table_name):
            pass

    await asyncio.gather(*(start() for _ in range(4)))


async def test_table_of_pyncette_1x_is_used_as_is(postgres_url: str, table_name: str) -> None:
    # A row written by 1.x: a spec without lease_duration, a static task with parent_name NULL.
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(
            f"""CREATE TABLE {table_name} (name text PRIMARY KEY, parent_name text, locked_until timestamptz,
                locked_by uuid, execute_after timestamptz, task_spec json)"""
        )
        await connection.execute(
            f"INSERT INTO {table_name} (name, parent_name, execute_after, task_spec) VALUES ($1, $2, $3, $4)",
            "tpl:old",
            "tpl",
            NOW,
            '{"name": "old", "schedule": null, "interval": 60, "execute_at": null, "timezone": null, "extra_args": {}}',
        )
    finally:
        await connection.close()
    tpl = template(lease_duration=datetime.timedelta(seconds=30))
    async with postgres_repository(
        postgres_url=postgres_url, postgres_table_name=table_name, postgres_skip_table_create=True
    ) as repo:
        batch = await repo.lease_due(NOW, [tpl], limit=10)
        assert [e.task.name for e in batch.executions] == ["old"]
        state = await repo.get_task_state(NOW, tpl.instantiate("old", interval=datetime.timedelta(seconds=60)))
        assert state is not None
        assert state.locked_until == NOW + datetime.timedelta(seconds=30)


# ---- leasing ----


async def test_concurrent_leases_are_disjoint(postgres_url: str, table_name: str) -> None:
    tpl = template()
    async with (
        postgres_repository(postgres_url=postgres_url, postgres_table_name=table_name) as first,
        postgres_repository(postgres_url=postgres_url, postgres_table_name=table_name) as second,
    ):
        await first.register_tasks(NOW, [tpl.instantiate(f"i{i}", execute_at=NOW) for i in range(200)])
        leased: list[str] = []
        for _ in range(10):
            batches = await asyncio.gather(
                first.lease_due(NOW, [tpl], limit=15), second.lease_due(NOW, [tpl], limit=15)
            )
            leased += [e.task.name for b in batches for e in b.executions]
        assert len(leased) == len(set(leased)) == 200


class QueryCounter:
    """Stands in for the repository's pool and counts the statements sent through it."""

    def __init__(self, repo: PostgresRepository) -> None:
        self.calls = 0
        self._pool = repo._pool
        repo._pool = self  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._pool, name)
        if name not in ("fetch", "execute", "fetchrow", "fetchval"):
            return attribute

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attribute(*args, **kwargs)

        return counting


async def test_batches_cost_one_statement(repo: PostgresRepository) -> None:
    first, second = template("first"), template("second")
    static = Task(name="tick", func=noop, interval=datetime.timedelta(seconds=10))
    await repo.lease_due(NOW, [static], limit=1)  # creates the static row (once per repository)
    await repo.register_tasks(
        NOW,
        [t.instantiate(f"i{i}", interval=datetime.timedelta(seconds=10)) for t in (first, second) for i in range(30)],
    )
    counter = QueryCounter(repo)
    due = NOW + datetime.timedelta(seconds=10)

    batch = await repo.lease_due(due, [first, second, static], limit=50)
    assert (len(batch.executions), batch.has_more, counter.calls) == (50, True, 1)
    await repo.extend_leases(due, batch.executions)
    await repo.commit_executions(due, batch.executions)
    assert counter.calls == 3

    rest = await repo.lease_due(due, [first, second, static], limit=50)
    assert (len(rest.executions), rest.has_more) == (11, False)
    await repo.commit_executions(due, rest.executions)
    after = await repo.lease_due(due, [first, second, static], limit=50)
    assert after.executions == []
    assert after.next_due_at == NOW + datetime.timedelta(seconds=20)


async def test_at_most_once_batch_costs_two_statements(repo: PostgresRepository) -> None:
    tpl = template(execution_mode=ExecutionMode.AT_MOST_ONCE)
    await repo.register_tasks(
        NOW, [tpl.instantiate(f"i{i}", interval=datetime.timedelta(seconds=5)) for i in range(20)]
    )
    counter = QueryCounter(repo)
    batch = await repo.lease_due(NOW + datetime.timedelta(seconds=5), [tpl], limit=100)
    assert len(batch.executions) == 20
    assert all(e.lease is None for e in batch.executions)
    assert counter.calls == 2
    again = await repo.lease_due(NOW + datetime.timedelta(seconds=9), [tpl], limit=100)
    assert again.executions == []
    assert again.next_due_at == NOW + datetime.timedelta(seconds=10)


async def test_scheduled_time_keeps_microseconds(repo: PostgresRepository) -> None:
    tpl = template()
    at = NOW + datetime.timedelta(microseconds=123457)
    await repo.register_task(NOW, tpl.instantiate("precise", execute_at=at))
    batch = await repo.lease_due(at, [tpl], limit=10)
    assert [e.scheduled_at for e in batch.executions] == [at]


async def test_a_leased_instance_blocks_the_whole_batch(repo: PostgresRepository) -> None:
    tpl = template()
    await repo.register_task(NOW, tpl.instantiate("busy", execute_at=NOW))
    await repo.lease_due(NOW, [tpl], limit=10)
    with pytest.raises(TaskLockedException, match="busy"):
        await repo.register_tasks(
            NOW, [tpl.instantiate("fresh", execute_at=NOW), tpl.instantiate("busy", execute_at=NOW)]
        )
    assert await repo.get_task_state(NOW, tpl.instantiate("fresh", execute_at=NOW)) is None


async def test_many_partitions_are_drained_in_bounded_batches(repo: PostgresRepository) -> None:
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


async def test_a_recurring_instance_is_leased_with_its_current_spec(repo: PostgresRepository) -> None:
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
