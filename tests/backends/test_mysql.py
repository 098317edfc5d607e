"""MySQL/MariaDB-specific behaviour: configuration errors, layout, round trips, concurrent leasing.

Semantics shared by every backend live in tests/conformance; this file covers what only MySQL has.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest

from conformance_backends.mysql import drop_table
from conformance_backends.mysql import mysql_kwargs
from pyncette.errors import BackendConfigurationError
from pyncette.model import Context
from pyncette.mysql import MySQLRepository
from pyncette.mysql import mysql_repository
from pyncette.task import Task

pytestmark = [pytest.mark.services]

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def noop(context: Context) -> None:
    pass


def template(name: str = "tpl", **kwargs: Any) -> Task:
    return Task(name=name, func=noop, dynamic=True, **kwargs)


def settings(params: dict[str, Any], table_name: str) -> dict[str, Any]:
    kwargs = mysql_kwargs(params, table_name)
    del kwargs["repository_factory"]
    return kwargs


@pytest.fixture
async def table_name(mysql_params: dict[str, Any]) -> AsyncIterator[str]:
    name = f"test_{uuid.uuid4().hex}"
    yield name
    await drop_table(mysql_params, name)


@pytest.fixture
async def repo(mysql_params: dict[str, Any], table_name: str) -> AsyncIterator[MySQLRepository]:
    async with mysql_repository(**settings(mysql_params, table_name)) as repository:
        yield repository


# ---- configuration ----


@pytest.mark.parametrize("missing", ["mysql_host", "mysql_database", "mysql_user"])
async def test_missing_required_keyword(mysql_params: dict[str, Any], missing: str) -> None:
    kwargs = settings(mysql_params, "unused")
    del kwargs[missing]
    with pytest.raises(BackendConfigurationError, match=rf"^mysql: {missing}: is required$"):
        async with mysql_repository(**kwargs):
            pass


@pytest.mark.parametrize("name", ["tasks; DROP TABLE users", "tasks`x", "1tasks", "", "a" * 65, "täsks"])
async def test_unsafe_table_name_is_refused_before_connecting(name: str) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_table_name: .* not a safe table name"):
        # No server answers on port 1: the name is checked first.
        async with mysql_repository(
            mysql_host="127.0.0.1", mysql_port=1, mysql_user="u", mysql_database="d", mysql_table_name=name or 5
        ):
            pass


async def test_unreachable_host_is_one_line_error() -> None:
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_host: cannot connect to 127.0.0.1:1 ") as info:
        async with mysql_repository(mysql_host="127.0.0.1", mysql_port=1, mysql_user="u", mysql_database="d"):
            pass
    assert "\n" not in str(info.value)


async def test_wrong_password_is_one_line_error(mysql_params: dict[str, Any]) -> None:
    kwargs = {**settings(mysql_params, "unused"), "mysql_password": "wrong-password"}
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_password: access denied for user") as info:
        async with mysql_repository(**kwargs):
            pass
    assert "\n" not in str(info.value)
    assert "wrong-password" not in str(info.value)


async def test_unknown_database_is_one_line_error(mysql_params: dict[str, Any]) -> None:
    kwargs = {**settings(mysql_params, "unused"), "mysql_database": "no_such_database_here"}
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_database: cannot use database"):
        async with mysql_repository(**kwargs):
            pass


async def test_skip_table_create_with_a_missing_table_says_so(mysql_params: dict[str, Any], table_name: str) -> None:
    kwargs = {**settings(mysql_params, table_name), "mysql_skip_table_create": True}
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_table_name: table .* does not exist"):
        async with mysql_repository(**kwargs):
            pass


async def test_a_pyncette_1_table_is_refused_and_left_intact(mysql_params: dict[str, Any], table_name: str) -> None:
    async with await connect(mysql_params) as connection, connection.cursor() as cursor:
        await cursor.execute(f"CREATE TABLE `{table_name}` (name VARCHAR(256) PRIMARY KEY, execute_after DOUBLE)")
        await cursor.execute(f"INSERT INTO `{table_name}` VALUES ('old', 1.0)")
    with pytest.raises(BackendConfigurationError, match=r"^mysql: mysql_table_name: .* another schema"):
        async with mysql_repository(**settings(mysql_params, table_name)):
            pass
    async with await connect(mysql_params) as connection, connection.cursor() as cursor:
        await cursor.execute(f"SELECT name FROM `{table_name}`")
        assert await cursor.fetchall() == (("old",),)


async def test_existing_table_is_reused(mysql_params: dict[str, Any], table_name: str) -> None:
    tpl = template()
    async with mysql_repository(**settings(mysql_params, table_name)) as first:
        await first.register_task(NOW, tpl.instantiate("kept", execute_at=NOW))
    async with mysql_repository(**settings(mysql_params, table_name), mysql_skip_table_create=True) as second:
        assert [s.task.name for s in (await second.list_task_states(NOW, tpl)).tasks] == ["kept"]


async def connect(params: dict[str, Any]) -> Any:
    return await aiomysql.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        db=params["database"],
        autocommit=True,
    )


# ---- layout and round trips ----


async def test_names_differing_only_in_case_are_different_tasks(repo: MySQLRepository) -> None:
    tpl = template()
    await repo.register_tasks(NOW, [tpl.instantiate("Job", execute_at=NOW), tpl.instantiate("job", execute_at=NOW)])
    batch = await repo.lease_due(NOW, [tpl], limit=10)
    assert sorted(e.task.name for e in batch.executions) == ["Job", "job"]


async def test_scheduled_time_keeps_microseconds(repo: MySQLRepository) -> None:
    tpl = template()
    at = NOW + datetime.timedelta(microseconds=123457)
    await repo.register_task(NOW, tpl.instantiate("precise", execute_at=at))
    batch = await repo.lease_due(at, [tpl], limit=10)
    assert [e.scheduled_at for e in batch.executions] == [at]


class StatementCounter:
    """Counts statements sent through the repository's pool (each one is a round trip)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.statements = 0
        original = aiomysql.Cursor.execute

        async def counting(cursor: Any, query: str, args: Any = None) -> Any:
            self.statements += 1
            return await original(cursor, query, args)

        monkeypatch.setattr(aiomysql.Cursor, "execute", counting)


async def test_round_trips_do_not_grow_with_the_batch(repo: MySQLRepository, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = template("first"), template("second")
    interval = datetime.timedelta(seconds=10)
    await repo.register_tasks(
        NOW, [t.instantiate(f"i{i}", interval=interval) for t in (first, second) for i in range(150)]
    )
    counter = StatementCounter(monkeypatch)
    due = NOW + interval

    batch = await repo.lease_due(due, [first, second], limit=200)
    assert (len(batch.executions), batch.has_more) == (200, True)
    # select + update (next_due_at is not needed when more are due)
    assert counter.statements == 2

    counter.statements = 0
    await repo.extend_leases(due, batch.executions)
    await repo.commit_executions(due, batch.executions)
    assert counter.statements == 3  # extend: select + update; commit: update

    counter.statements = 0
    rest = await repo.lease_due(due, [first, second], limit=200)
    assert (len(rest.executions), rest.has_more) == (100, False)
    assert rest.next_due_at == NOW + 2 * interval
    assert counter.statements == 3  # select + update + next due


async def test_concurrent_leases_are_disjoint(mysql_params: dict[str, Any], table_name: str) -> None:
    tpl = template()
    async with (
        mysql_repository(**settings(mysql_params, table_name)) as first,
        mysql_repository(**settings(mysql_params, table_name)) as second,
    ):
        await first.register_tasks(NOW, [tpl.instantiate(f"i{i}", execute_at=NOW) for i in range(300)])
        names: list[str] = []
        while True:
            batches = await asyncio.gather(*(r.lease_due(NOW, [tpl], limit=25) for r in (first, second) * 2))
            leased = [e.task.name for b in batches for e in b.executions]
            if not leased:
                break
            names += leased
        assert sorted(names) == sorted(f"i{i}" for i in range(300))
