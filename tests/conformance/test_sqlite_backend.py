"""SQLite-only behaviour: configuration errors, round trips per batch, sharing a file, 1.x tables."""

from __future__ import annotations

import asyncio
import datetime
import json
import sqlite3
from collections.abc import Awaitable
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyncette.errors import BackendConfigurationError
from pyncette.model import Context
from pyncette.sqlite import SqliteRepository
from pyncette.sqlite import sqlite_repository
from pyncette.task import Task

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


async def _noop(context: Context) -> None:
    pass


@pytest.mark.parametrize("bad", ["tasks; DROP TABLE x", "1tasks", "", "sqlite_master", "a-b", "x" * 64, 7])
async def test_unsafe_table_names_are_refused_in_one_line(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(BackendConfigurationError) as error:
        async with sqlite_repository(sqlite_database=str(tmp_path / "db"), sqlite_table_name=bad):
            pass
    message = str(error.value)
    assert message.startswith("sqlite: sqlite_table_name: ")
    assert "\n" not in message
    assert not (tmp_path / "db").exists(), "nothing is created for a bad configuration"


async def test_bad_batch_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigurationError, match="sqlite: batch_size: "):
        async with sqlite_repository(sqlite_database=str(tmp_path / "db"), batch_size=0):
            pass


async def test_unopenable_database_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(BackendConfigurationError, match="sqlite: sqlite_database: "):
        async with sqlite_repository(sqlite_database=str(tmp_path / "missing-dir" / "db")):
            pass


async def test_file_database_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    database = str(tmp_path / "db")
    tmpl = Task(name="dyn", func=_noop, dynamic=True)
    async with sqlite_repository(sqlite_database=database) as repo:
        await repo.register_task(T0, tmpl.instantiate("a", execute_at=at(5), n=1))
    with sqlite3.connect(database) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with sqlite_repository(sqlite_database=database) as repo:
        batch = await repo.lease_due(at(5), [tmpl], limit=10)
        assert [(e.task.name, e.task.extra_args) for e in batch.executions] == [("a", {"n": 1})]


class _StatementCounter:
    """Counts statements sent over the repository's connection (each is one round trip to SQLite)."""

    def __init__(self, repo: SqliteRepository) -> None:
        self.count = 0
        connection: Any = repo._connection
        for method in ("execute", "executemany", "execute_fetchall", "executescript"):
            setattr(connection, method, self._wrap(getattr(connection, method)))

    def _wrap(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return await call(*args, **kwargs)

        return counted

    async def measure(self, call: Awaitable[Any]) -> int:
        before = self.count
        await call
        return self.count - before


async def _statements_per_batch(tmp_path: Path, size: int) -> dict[str, int]:
    tmpl = Task(name=f"dyn{size}", func=_noop, dynamic=True)
    every = Task(name=f"static{size}", func=_noop, interval=datetime.timedelta(seconds=1))
    async with sqlite_repository(sqlite_database=str(tmp_path / f"db{size}")) as repo:
        counter = _StatementCounter(repo)
        await repo.lease_due(T0, [every, tmpl], limit=1)  # first sight of the static task
        counts = {
            "register_tasks": await counter.measure(
                repo.register_tasks(
                    T0, [tmpl.instantiate(f"i{i}", interval=datetime.timedelta(seconds=1)) for i in range(size)]
                )
            )
        }
        before = counter.count
        batch = await repo.lease_due(at(1), [every, tmpl], limit=size + 1)
        counts["lease_due"] = counter.count - before
        assert len(batch.executions) == size + 1
        counts["extend_leases"] = await counter.measure(repo.extend_leases(at(2), batch.executions))
        half = len(batch.executions) // 2
        counts["unlock_executions"] = await counter.measure(repo.unlock_executions(at(2), batch.executions[:half]))
        counts["commit_executions"] = await counter.measure(repo.commit_executions(at(2), batch.executions[half:]))
    return counts


async def test_round_trips_per_batch_do_not_grow_with_batch_size(tmp_path: Path) -> None:
    small = await _statements_per_batch(tmp_path, 4)
    large = await _statements_per_batch(tmp_path, 200)
    assert small == large
    assert all(count <= 6 for count in large.values()), large


async def test_two_repositories_on_one_file_never_lease_the_same_instance(tmp_path: Path) -> None:
    database = str(tmp_path / "shared")
    tmpl = Task(name="dyn", func=_noop, dynamic=True)
    async with sqlite_repository(sqlite_database=database) as one, sqlite_repository(sqlite_database=database) as two:
        await one.register_tasks(T0, [tmpl.instantiate(f"i{i}", execute_at=at(-1)) for i in range(200)])
        leased: list[str] = []
        while True:
            batches = await asyncio.gather(*(repo.lease_due(T0, [tmpl], limit=7) for repo in (one, two, one, two)))
            got = [e.task.canonical_name for batch in batches for e in batch.executions]
            if not got:
                break
            leased.extend(got)
        assert len(leased) == 200
        assert len(set(leased)) == 200


async def test_a_pyncette_1_table_is_upgraded_in_place(tmp_path: Path) -> None:
    database = str(tmp_path / "legacy")
    with sqlite3.connect(database) as raw:
        raw.executescript(
            """CREATE TABLE pyncette_tasks (
                name PRIMARY KEY, parent_name, locked_until timestamp, locked_by, execute_after timestamp, task_spec
            );"""
        )
        spec = {
            "name": "a",
            "schedule": None,
            "interval": 10.0,
            "execute_at": None,
            "timezone": None,
            "extra_args": {"k": 1},
        }
        raw.execute(
            "INSERT INTO pyncette_tasks VALUES (?, ?, ?, ?, ?, ?)",
            ("dyn:a", "dyn", None, "None", at(10).timestamp(), json.dumps(spec)),
        )
        raw.execute("INSERT INTO pyncette_tasks (name, execute_after) VALUES (?, ?)", ("every", at(20).timestamp()))
    tmpl = Task(name="dyn", func=_noop, dynamic=True)
    every = Task(name="every", func=_noop, interval=datetime.timedelta(seconds=30))
    async with sqlite_repository(sqlite_database=database) as repo:
        first = await repo.lease_due(at(10), [every, tmpl], limit=10)
        assert [(e.task.canonical_name, e.task.extra_args) for e in first.executions] == [("dyn:a", {"k": 1})]
        assert first.next_due_at == at(20), "the static task keeps its stored time"
        second = await repo.lease_due(at(20), [every, tmpl], limit=10)
        assert [e.task for e in second.executions] == [every]
