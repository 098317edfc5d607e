"""The SQLite repository: persistence in one file, shareable by several processes on one machine.

Why it is built this way:

* **One table, one row per entry.** Static tasks and dynamic instances live side by side;
  ``parent_name`` is the template's canonical name for instances and the marker ``''`` for static
  tasks, so a single query can lease due entries of every polled task. ``ready_at`` caches
  ``max(execute_after, locked_until)`` (when the entry can next be leased) and the index
  ``(parent_name, ready_at)`` makes "the earliest due entries of this task" an index range scan.
* **One transaction per batch.** ``lease_due`` selects, leases and reports the next due time in
  one ``BEGIN IMMEDIATE`` transaction with a constant number of statements (row writes go through
  ``executemany``), whatever the batch size; commits, unlocks, lease extensions and bulk
  registration likewise.
* **Several processes.** The database runs in WAL mode (readers never block the writer), every
  writing transaction starts with ``BEGIN IMMEDIATE`` (it takes the write lock before reading, so
  two processes can never lease the same row), SQLite's busy timeout waits for the lock, and a
  transaction that still finds the database locked is retried with back-off. ``synchronous=NORMAL``
  keeps the file consistent; a power loss may forget the last few commits (an execution then runs
  again, which at-least-once allows).
* **One connection per repository**, used by one coroutine at a time (an ``asyncio.Lock``), since
  a SQLite connection has one transaction at a time.

Timestamps are stored as float seconds since the UNIX epoch (UTC). A table created by pyncette 1.x
is upgraded in place on start-up (a ``ready_at`` column is added and filled; no data is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TypeVar

import aiosqlite

from pyncette.errors import BackendConfigurationError
from pyncette.errors import TaskLockedException
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import Lease
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import PollResponse
from pyncette.model import ResultType
from pyncette.model import TaskState
from pyncette.repository.kit import PARKED
from pyncette.repository.kit import BatchRepository
from pyncette.repository.kit import held
from pyncette.repository.kit import leased
from pyncette.repository.kit import next_time
from pyncette.repository.kit import plan_poll
from pyncette.repository.kit import positive_int
from pyncette.repository.kit import table_name as checked_table_name
from pyncette.repository.kit import to_commit
from pyncette.repository.kit import token_of
from pyncette.repository.kit import unleased
from pyncette.task import Task
from pyncette.task import spec_text

logger = logging.getLogger(__name__)

T = TypeVar("T")
UTC = datetime.UTC
BACKEND = "sqlite"

_STATIC = ""  # parent_name of static tasks; canonical names are never empty
# An identifier SQLite will not mistake for one of its own tables (sqlite_*, any case).
_IDENTIFIER = re.compile(r"(?!(?i:sqlite_))[A-Za-z_][A-Za-z0-9_]{0,62}")
_BUSY_TIMEOUT_SECONDS = 5.0
_MAX_ATTEMPTS = 20
_MAX_GROUPS_PER_QUERY = 200  # SQLite allows at most 500 terms in one compound SELECT
_COLUMNS = "name, parent_name, execute_after, locked_until, locked_by, task_spec"

Row = tuple[Any, ...]


def _ts(value: datetime.datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.fromtimestamp(value, UTC)


def _ready_at(execute_after: float, locked_until: float | None) -> float:
    return execute_after if locked_until is None else max(execute_after, locked_until)


def _is_busy(error: BaseException) -> bool:
    """Whether running the transaction again may succeed: another process held a lock, or a
    cancelled call left a transaction open (rolled back before the retry)."""
    message = str(error).lower()
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in message or "busy" in message or "within a transaction" in message
    )


def validate_table_name(name: Any) -> str:
    """Returns ``name`` if it is safe to splice into SQL, else raises a one-line configuration error."""
    rule = "1-63 letters, digits or underscores, not starting with a digit or 'sqlite_'"
    return checked_table_name(BACKEND, "sqlite_table_name", name, _IDENTIFIER, rule)


class SqliteRepository(BatchRepository):
    """Task state in a SQLite database (see the module docstring for the design)."""

    backend_name = BACKEND

    def __init__(self, connection: aiosqlite.Connection, *, table_name: str, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self._connection = connection
        self._table = validate_table_name(table_name)
        self._lock = asyncio.Lock()

    # ---- plumbing ----

    async def initialize(self) -> None:
        """Creates (or upgrades from pyncette 1.x) the table and its indexes."""
        t = self._table

        async def create() -> None:
            await self._connection.execute(
                f"""CREATE TABLE IF NOT EXISTS {t} (
                    name TEXT PRIMARY KEY,
                    parent_name TEXT NOT NULL,
                    execute_after REAL NOT NULL,
                    locked_until REAL,
                    locked_by TEXT,
                    ready_at REAL NOT NULL,
                    task_spec TEXT
                )"""
            )
            columns = {row[1] for row in await self._connection.execute_fetchall(f"PRAGMA table_info({t})")}
            if "ready_at" not in columns:
                logger.info("Upgrading the pyncette 1.x table %s (adding ready_at).", t)
                await self._connection.execute(f"ALTER TABLE {t} ADD COLUMN ready_at REAL")
                await self._connection.execute(f"DELETE FROM {t} WHERE execute_after IS NULL")
                await self._connection.execute(
                    f"""UPDATE {t} SET
                        parent_name = COALESCE(parent_name, '{_STATIC}'),
                        locked_by = CASE WHEN locked_until IS NULL THEN NULL ELSE locked_by END,
                        ready_at = MAX(execute_after, COALESCE(locked_until, execute_after))"""
                )
            await self._connection.execute(f"CREATE INDEX IF NOT EXISTS {t}_due ON {t} (parent_name, ready_at)")

        await self._write(create)

    async def _write(self, body: Callable[[], Awaitable[T]]) -> T:
        """Runs ``body`` in a ``BEGIN IMMEDIATE`` transaction, retrying while the database is locked."""
        async with self._lock:
            delay = 0.005
            for attempt in range(1, _MAX_ATTEMPTS + 1):
                if self._connection.in_transaction:  # left open by a cancelled call
                    await self._connection.rollback()
                try:
                    await self._connection.execute("BEGIN IMMEDIATE")
                    result = await body()
                    await self._connection.execute("COMMIT")
                    return result
                except BaseException as e:
                    if self._connection.in_transaction:
                        await asyncio.shield(self._connection.rollback())
                    if not _is_busy(e) or attempt == _MAX_ATTEMPTS:
                        raise
                    logger.debug("SQLite database is locked (attempt %d), retrying.", attempt)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
            raise AssertionError("unreachable")

    async def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        """A single SELECT outside an explicit transaction (WAL readers see a consistent snapshot)."""
        async with self._lock:
            return [tuple(row) for row in await self._connection.execute_fetchall(sql, params)]

    async def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Row]:
        return [tuple(row) for row in await self._connection.execute_fetchall(sql, params)]

    async def _many(self, sql: str, rows: Iterable[Sequence[Any] | dict[str, Any]]) -> None:
        batch = list(rows)
        if batch:
            await self._connection.executemany(sql, batch)

    async def _rows_by_name(self, names: Iterable[str]) -> dict[str, Row]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM {self._table} WHERE name IN (SELECT value FROM json_each(?))",
            (json.dumps(list(names)),),
        )
        return {row[0]: row for row in rows}

    # ---- pyncette 1.x protocol (the rest comes from the kit's BatchRepository) ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        async def body() -> None:
            await self._connection.execute(f"DELETE FROM {self._table} WHERE name = ?", (task.canonical_name,))

        await self._write(body)

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        async def body() -> PollResponse:
            rows = await self._rows_by_name([task.canonical_name])
            row = rows.get(task.canonical_name)
            if row is None:
                if task.parent_task is not None:
                    # Instances exist only once registered: a poll must not resurrect a deleted one.
                    raise self.instance_not_found(task)
                created = self.statics.due_for_creation(utc_now, [task])
                if not created:
                    return PollResponse(result=ResultType.MISSING, scheduled_at=utc_now, lease=None)
                first = created[0][1]
                await self._insert_static([(task.canonical_name, _ts(first))])
                row = (task.canonical_name, _STATIC, _ts(first), None, None, None)
            _, _, execute_after, locked_until, locked_by, _ = row
            scheduled_at = _dt(execute_after)
            assert scheduled_at is not None
            plan = plan_poll(
                utc_now,
                task,
                lease,
                execute_after=scheduled_at,
                locked_until=_dt(locked_until),
                locked_by=locked_by,
                new_token=uuid.uuid4().hex,
            )
            if plan.advance:
                await self._advance(utc_now, [(task, execute_after, None)])
            elif plan.lease_until is not None:
                until = _ts(plan.lease_until)
                await self._connection.execute(
                    f"UPDATE {self._table} SET locked_by = ?, locked_until = ?, ready_at = ? WHERE name = ?",
                    (plan.token, until, _ready_at(execute_after, until), task.canonical_name),
                )
            return plan.response

        return await self._write(body)

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM {self._table} WHERE name = ?", (task.canonical_name,))
        if not rows:
            return None
        return self._state(rows[0], task.parent_task, task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        limit = self._batch_size if limit is None else limit
        parent = parent_task.canonical_name
        # Instance names start with "<parent>:", so the primary key bounds the scan (';' follows ':');
        # the unary + keeps SQLite from preferring the due index, which would sort the whole template.
        after = parent + ":" if continuation_token is None else str(continuation_token)
        rows = await self._read(
            f"""SELECT {_COLUMNS} FROM {self._table}
            WHERE name > ? AND name < ? AND +parent_name = ? ORDER BY name LIMIT ?""",
            (after, parent + ";", parent, limit + 1),
        )
        page = rows[:limit]
        token = ContinuationToken(page[-1][0]) if len(rows) > limit and page else None
        return ListTasksResponse(tasks=[self._state(row, parent_task, None) for row in page], continuation_token=token)

    def _state(self, row: Row, template: Task | None, static: Task | None) -> TaskState:
        name, _, execute_after, locked_until, locked_by, spec = row
        scheduled_at = _dt(execute_after)
        assert scheduled_at is not None
        if template is None:
            assert static is not None, f"entry {name} has no task spec"
            return TaskState(
                task=static, scheduled_at=scheduled_at, locked_until=_dt(locked_until), locked_by=locked_by
            )
        return self.entries.state(
            template,
            name,
            spec,
            scheduled_at=scheduled_at,
            locked_until=_dt(locked_until),
            locked_by=locked_by,
            known=static,
        )

    # ---- batch protocol ----

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        now = _ts(utc_now)
        lease = uuid.uuid4().hex
        statics = {task.canonical_name: task for task in tasks if not task.dynamic}
        templates = {task.canonical_name: task for task in tasks if task.dynamic}
        fresh = self.statics.due_for_creation(utc_now, statics.values())
        new_statics = [(task.canonical_name, _ts(first)) for task, first in fresh]

        async def body() -> LeaseBatch:
            await self._insert_static(new_statics)
            rows = await self._select_due(list(statics), list(templates), limit + 1)
            due = [row for row in rows if row[2] <= now and (row[3] is None or row[3] <= now)]
            taken = due[:limit]
            rest = rows[len(taken) :]
            batch = LeaseBatch(
                has_more=len(due) > limit,
                next_due_at=_dt(_ready_at(rest[0][2], rest[0][3])) if rest else None,
            )
            leases = []
            advances: list[tuple[Task, float, None]] = []
            for row in taken:
                name, parent, execute_after, _, _, spec = row
                owner = statics[name] if parent == _STATIC else templates[parent]
                task = owner if parent == _STATIC else self.entries.load(owner, name, spec)
                scheduled_at = _dt(execute_after)
                assert scheduled_at is not None
                if task is not None and task.execution_mode == ExecutionMode.AT_MOST_ONCE:
                    advances.append((task, execute_after, None))
                    batch.executions.append(unleased(task, scheduled_at))
                else:
                    # A quarantined row (task None) is leased too ("parked"), so it is not read again
                    # before its lease ends; it is not returned.
                    until = now + (task or owner).lease_duration.total_seconds()
                    leases.append((lease if task is not None else PARKED, until, _ready_at(execute_after, until), name))
                    if task is not None:
                        batch.executions.append(leased(task, scheduled_at, lease))
            moved = await self._advance(utc_now, advances)
            kept = {task.canonical_name for task, _, _ in moved}
            for task, execute_after, _ in advances:
                if task.canonical_name not in kept:  # its next time cannot be computed: parked, not run
                    until = now + task.lease_duration.total_seconds()
                    leases.append((lease, until, _ready_at(execute_after, until), task.canonical_name))
            await self._many(
                f"UPDATE {self._table} SET locked_by = ?, locked_until = ?, ready_at = ? WHERE name = ?", leases
            )
            batch.executions = [e for e in batch.executions if e.lease is not None or e.task.canonical_name in kept]
            for _, _, nxt in moved:
                if nxt is not None and (batch.next_due_at is None or nxt < batch.next_due_at):
                    batch.next_due_at = nxt
            return batch

        batch = await self._write(body)
        self.statics.created(task for task, _ in fresh)
        return batch

    async def _select_due(self, statics: list[str], templates: list[str], limit: int) -> list[Row]:
        """The ``limit`` entries of the given tasks that become leasable first, due or not."""
        parts: list[tuple[str, list[Any]]] = []
        if statics:
            parts.append(
                (
                    f"""SELECT * FROM (SELECT {_COLUMNS}, ready_at FROM {self._table}
                    WHERE parent_name = ? AND name IN (SELECT value FROM json_each(?))
                    ORDER BY ready_at LIMIT ?)""",
                    [_STATIC, json.dumps(statics), limit],
                )
            )
        for name in templates:
            parts.append(
                (
                    f"""SELECT * FROM (SELECT {_COLUMNS}, ready_at FROM {self._table}
                    WHERE parent_name = ? ORDER BY ready_at LIMIT ?)""",
                    [name, limit],
                )
            )
        rows: list[Row] = []
        for start in range(0, len(parts), _MAX_GROUPS_PER_QUERY):
            chunk = parts[start : start + _MAX_GROUPS_PER_QUERY]
            sql = " UNION ALL ".join(part for part, _ in chunk) + " ORDER BY ready_at LIMIT ?"
            params = [p for _, ps in chunk for p in ps] + [limit]
            rows.extend(await self._fetch(sql, params))
        rows.sort(key=lambda row: row[6])
        return [row[:6] for row in rows[:limit]]

    async def _insert_static(self, entries: Sequence[tuple[str, float]]) -> None:
        await self._many(
            f"""INSERT INTO {self._table} (name, parent_name, execute_after, ready_at) VALUES (?, '{_STATIC}', ?, ?)
            ON CONFLICT(name) DO NOTHING""",
            [(name, first, first) for name, first in entries],
        )

    async def _advance(
        self, utc_now: datetime.datetime, entries: Sequence[tuple[Task, float, str | None]]
    ) -> list[tuple[Task, float, datetime.datetime | None]]:
        """Moves entries (task, execute_after, lease guard) to their next time, clearing the lease.

        Returns the entries moved, with their next time; one whose next time cannot be computed
        is left as it is (see ``kit.next_time``)."""
        # Named parameters with dicts: numbered ones (?1) with tuples are deprecated since Python 3.12
        # and refused from 3.14.
        updates: list[dict[str, Any]] = []
        deletes: list[dict[str, Any]] = []
        results: list[tuple[Task, float, datetime.datetime | None]] = []
        for task, execute_after, guard in entries:
            scheduled_at = _dt(execute_after)
            assert scheduled_at is not None
            ok, nxt = next_time(task, utc_now, scheduled_at)
            if not ok:
                continue
            results.append((task, execute_after, nxt))
            if nxt is None:
                deletes.append({"name": task.canonical_name, "guard": guard})
            else:
                updates.append({"at": _ts(nxt), "name": task.canonical_name, "guard": guard})
        await self._many(
            f"""UPDATE {self._table} SET execute_after = :at, ready_at = :at, locked_by = NULL, locked_until = NULL
            WHERE name = :name AND (:guard IS NULL OR locked_by = :guard)""",
            updates,
        )
        await self._many(
            f"DELETE FROM {self._table} WHERE name = :name AND (:guard IS NULL OR locked_by = :guard)", deletes
        )
        return results

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        await self._commit(utc_now, [(e.task, Lease(token)) for e, token in to_commit(executions)])

    async def _commit(self, utc_now: datetime.datetime, held: Sequence[tuple[Task, Lease]]) -> None:
        if not held:
            return

        async def body() -> None:
            rows = await self._rows_by_name(task.canonical_name for task, _ in held)
            advances: list[tuple[Task, float, str | None]] = []
            for task, lease in held:
                row = rows.get(task.canonical_name)
                if row is None:
                    logger.warning("Task %s not found, skipping commit.", task)
                elif row[4] != token_of(lease):
                    logger.warning("Lease lost on task %s, skipping commit.", task)
                else:
                    advances.append((task, row[2], str(lease)))
            await self._advance(utc_now, advances)

        await self._write(body)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        await self._unlock([(e.task, Lease(token)) for e, token in held(executions)])

    async def _unlock(self, held: Sequence[tuple[Task, Lease]]) -> None:
        if not held:
            return

        async def body() -> None:
            await self._many(
                f"""UPDATE {self._table} SET locked_by = NULL, locked_until = NULL, ready_at = execute_after
                WHERE name = ? AND locked_by = ?""",
                [(task.canonical_name, str(lease)) for task, lease in held],
            )

        await self._write(body)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        leases = held(executions)
        extended = dict(
            zip(
                (id(e) for e, _ in leases),
                await self._extend(utc_now, [(e.task, Lease(t)) for e, t in leases]),
                strict=True,
            )
        )
        return [e.lease if extended.get(id(e)) is not None else None for e in executions]

    async def _extend(self, utc_now: datetime.datetime, held: Sequence[tuple[Task, Lease]]) -> list[Lease | None]:
        if not held:
            return []
        now = _ts(utc_now)

        async def body() -> list[Lease | None]:
            await self._many(
                f"""UPDATE {self._table} SET locked_until = :until, ready_at = MAX(execute_after, :until)
                WHERE name = :name AND locked_by = :lease""",
                [
                    {
                        "until": now + task.lease_duration.total_seconds(),
                        "name": task.canonical_name,
                        "lease": str(lease),
                    }
                    for task, lease in held
                ],
            )
            rows = await self._rows_by_name(task.canonical_name for task, _ in held)
            results: list[Lease | None] = []
            for task, lease in held:
                row = rows.get(task.canonical_name)
                results.append(lease if row is not None and row[4] == str(lease) else None)
            return results

        return await self._write(body)

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        if not tasks:
            return
        latest: dict[str, Task] = {}
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            latest[task.canonical_name] = task
        now = _ts(utc_now)
        prepared = [(task, task.get_next_execution(utc_now, None), spec_text(task)) for task in latest.values()]

        async def body() -> None:
            rows = await self._rows_by_name(latest)
            upserts, deletes = [], []
            for task, first, spec in prepared:
                assert task.parent_task is not None
                row = rows.get(task.canonical_name)
                replace = force or (row is not None and row[4] == PARKED)  # a parked row is nobody's lease
                if not replace and row is not None and row[3] is not None and row[3] > now:
                    # All-or-nothing: the transaction is rolled back, nothing of the batch is written.
                    raise TaskLockedException(task, _dt(row[3]))
                if first is None:
                    deletes.append((task.canonical_name,))
                    continue
                execute_after, locked_until, locked_by = _ts(first), None, None
                if row is not None and not replace:
                    # Keep the sooner time so that rescheduling never starves an instance.
                    execute_after = min(execute_after, row[2])
                    locked_until, locked_by = row[3], row[4]
                upserts.append(
                    (
                        task.canonical_name,
                        task.parent_task.canonical_name,
                        execute_after,
                        locked_until,
                        locked_by,
                        _ready_at(execute_after, locked_until),
                        spec,
                    )
                )
            await self._many(f"DELETE FROM {self._table} WHERE name = ?", deletes)
            await self._many(
                f"""INSERT INTO {self._table}
                (name, parent_name, execute_after, locked_until, locked_by, ready_at, task_spec)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET
                    parent_name = excluded.parent_name, execute_after = excluded.execute_after,
                    locked_until = excluded.locked_until, locked_by = excluded.locked_by,
                    ready_at = excluded.ready_at, task_spec = excluded.task_spec""",
                upserts,
            )

        await self._write(body)

    async def check_health(self) -> None:
        await self._read("SELECT 1")


@contextlib.asynccontextmanager
async def sqlite_repository(**kwargs: Any) -> AsyncIterator[SqliteRepository]:
    """Factory for ``Pyncette(sqlite_database=..., sqlite_table_name=..., batch_size=...)``.

    ``sqlite_database`` defaults to ``":memory:"`` (private to this process); give a file path to
    persist state and to share it between processes.
    """
    database = kwargs.get("sqlite_database", ":memory:")
    table_name = validate_table_name(kwargs.get("sqlite_table_name", "pyncette_tasks"))
    batch_size = positive_int(BACKEND, kwargs, "batch_size", 100)
    if not isinstance(database, str | Path):
        raise BackendConfigurationError("sqlite", "sqlite_database", f"expected a file path, got {database!r}")
    directory = Path(database).parent
    if str(database) != ":memory:" and not str(database).startswith("file:") and not directory.is_dir():
        raise BackendConfigurationError("sqlite", "sqlite_database", f"directory {str(directory)!r} does not exist")
    try:
        connection = await aiosqlite.connect(database, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None)
    except sqlite3.Error as e:
        raise BackendConfigurationError("sqlite", "sqlite_database", f"cannot open {database!r} ({e})") from None
    try:
        await _retry_busy(connection, "PRAGMA journal_mode = WAL")
        await _retry_busy(connection, "PRAGMA synchronous = NORMAL")
        repository = SqliteRepository(connection, table_name=table_name, batch_size=batch_size)
        await repository.initialize()
        yield repository
    finally:
        await connection.close()


async def _retry_busy(connection: aiosqlite.Connection, sql: str) -> None:
    """Runs one statement outside a transaction, retrying while another process holds a lock."""
    delay = 0.005
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            await connection.execute(sql)
            return
        except sqlite3.OperationalError as e:
            if not _is_busy(e) or attempt == _MAX_ATTEMPTS:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
