"""MySQL 8.0+ / MariaDB 10.6+ backend (aiomysql): one row per entry, leased in batches.

Why it looks the way it does:

* **Layout.** One table (``mysql_table_name``, default ``pyncette_tasks``) holds static tasks
  (``parent_name = ''``) and dynamic instances (``parent_name`` = the template's canonical name).
  Names are ``VARBINARY`` so that ``Foo`` and ``foo`` are different tasks whatever the server's
  collation, and times are ``BIGINT`` microseconds since the Unix epoch, UTC, so no session time
  zone or ``DATETIME`` rounding can shift a schedule. ``ready_at`` is a stored generated column,
  ``GREATEST(execute_after, locked_until)``: the time an entry becomes due, indexed together with
  ``parent_name`` so a batch lease is an index range scan in due order (MariaDB has no functional
  indexes, hence a generated column rather than pyncette 1.x's expression index).
* **Leasing a batch** is one transaction: a ``UNION ALL`` of one ``SELECT ... ORDER BY ready_at
  LIMIT n FOR UPDATE SKIP LOCKED`` per polled template (and one for the static tasks), so each
  branch reads at most ``n`` index entries and concurrent workers skip each other's rows instead of
  waiting; then one multi-row ``UPDATE`` joined to a derived table of per-row values (each
  instance may have its own lease duration or execution mode), an optional ``DELETE`` for finished
  AT_MOST_ONCE one-offs, and, when the batch was not full, one ``MIN(ready_at)`` lookup for
  ``next_due_at``. Commits, unlocks and lease extensions are one statement each, conditioned on
  ``locked_by`` so a lost lease changes nothing. Next times are computed in Python from the
  execution's ``scheduled_at``.
* **Connections** come from an aiomysql pool at ``READ COMMITTED`` (no gap locks). A connection
  that failed or was interrupted mid-transaction is closed rather than returned, and the pool drops
  connections the server closed, so the repository recovers by itself after a server restart: the
  calls made while the server is down raise, the next ones succeed. That includes a call the app
  cancels at its ``backend_timeout`` (a half-open connection that never answers): the cancellation
  reaches ``_transaction`` as ``CancelledError``, and the connection is closed, not returned.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import re
import uuid
from collections.abc import AsyncIterator
from collections.abc import Sequence
from typing import Any

import aiomysql

from pyncette.deadline import backend_timeout_seconds
from pyncette.errors import BackendConfigurationError
from pyncette.errors import PyncetteException
from pyncette.errors import TaskLockedException
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import Lease
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import PollResponse
from pyncette.model import TaskState
from pyncette.repository.kit import PARKED
from pyncette.repository.kit import BatchRepository
from pyncette.repository.kit import held
from pyncette.repository.kit import leased
from pyncette.repository.kit import next_time
from pyncette.repository.kit import plan_poll
from pyncette.repository.kit import positive_int
from pyncette.repository.kit import required
from pyncette.repository.kit import table_name as checked_table_name
from pyncette.repository.kit import to_commit
from pyncette.repository.kit import token_of
from pyncette.repository.kit import unleased
from pyncette.task import Task
from pyncette.task import spec_text

logger = logging.getLogger(__name__)

BACKEND = "mysql"
DEFAULT_TABLE_NAME = "pyncette_tasks"
DEFAULT_BATCH_SIZE = 100
#: Longest canonical name the table accepts (str of UTF-8; the primary key limit allows ~3 KB).
MAX_NAME_BYTES = 1024
#: Rows per multi-row statement; bigger inputs are split (keeps packets and parse time small).
_CHUNK = 500
#: Seconds to wait for the TCP connection and handshake at start-up and on reconnect.
_CONNECT_TIMEOUT = 10
#: Deadlock / lock wait timeout: the statement is retried this many times before giving up.
_RETRIES = 3
_RETRYABLE = {1213, 1205}
_SAFE_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_STATIC = ""
_COLUMNS = "name, parent_name, execute_after, locked_until, locked_by, ready_at, task_spec"


def _to_micros(when: datetime.datetime) -> int:
    return (when.astimezone(datetime.UTC) - _EPOCH) // _MICROSECOND


def _from_micros(value: int | None) -> datetime.datetime | None:
    return None if value is None else _EPOCH + value * _MICROSECOND


def _name(task: Task) -> str:
    name = task.canonical_name
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError(f"task {name[:64]!r}...: name: longer than {MAX_NAME_BYTES} str")
    return name


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes | bytearray) else value


async def _fetchall(cursor: aiomysql.DictCursor) -> list[dict[str, Any]]:
    """Rows with ``VARBINARY`` values decoded (names are UTF-8 text stored as bytes)."""
    return [{key: _text(value) for key, value in row.items()} for row in await cursor.fetchall()]


async def _fetchone(cursor: aiomysql.DictCursor) -> dict[str, Any] | None:
    row = await cursor.fetchone()
    return None if row is None else {key: _text(value) for key, value in row.items()}


def _broken(error: BaseException) -> bool:
    """Whether a connection that raised ``error`` can no longer be trusted (client-side 2xxx codes)."""
    if isinstance(error, aiomysql.InterfaceError | OSError | TimeoutError):
        return True
    code = error.args[0] if isinstance(error, aiomysql.OperationalError) and error.args else None
    return isinstance(code, int) and code >= 2000


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _values_table(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> tuple[str, list[Any]]:
    """A derived table of literal rows (``SELECT .. UNION ALL SELECT ..``), portable to both servers."""
    first = ", ".join(f"%s AS {column}" for column in columns)
    rest = ", ".join(["%s"] * len(columns))
    sql = " UNION ALL ".join([f"SELECT {first}"] + [f"SELECT {rest}"] * (len(rows) - 1))
    return sql, [value for row in rows for value in row]


class MySQLRepository(BatchRepository):
    """Task state in one MySQL/MariaDB table, shared by every process of an app."""

    backend_name = BACKEND
    _pool: aiomysql.Pool
    _table: str

    def __init__(self, pool: aiomysql.Pool, *, table_name: str, batch_size: int) -> None:
        super().__init__(batch_size=batch_size)
        self._pool = pool
        self._table = f"`{table_name}`"
        self._table_name = table_name

    # ---- connection handling ----

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiomysql.DictCursor]:
        """One transaction on a pooled connection; a broken or interrupted one is discarded."""
        async with self._pool.acquire() as connection:
            try:
                async with connection.cursor(aiomysql.DictCursor) as cursor:
                    yield cursor
                await connection.commit()
            except BaseException as error:
                if isinstance(error, Exception) and not _broken(error):
                    try:
                        await connection.rollback()
                    except Exception:
                        connection.close()
                else:
                    # Lost or interrupted mid-statement: the protocol state is unknown, never reuse it.
                    connection.close()
                raise

    async def _retrying(self, operation: Any) -> Any:
        """Runs ``operation(cursor)`` in a transaction, retrying on deadlocks and lock timeouts."""
        for attempt in range(_RETRIES):
            try:
                async with self._transaction() as cursor:
                    return await operation(cursor)
            except aiomysql.OperationalError as error:
                if error.args and error.args[0] in _RETRYABLE and attempt + 1 < _RETRIES:
                    logger.debug("mysql: retrying after %s", error)
                    continue
                raise
        raise AssertionError("unreachable")

    async def initialize(self, *, create: bool) -> None:
        """Creates the table unless it exists (or ``create`` is False); refuses a table that is not ours."""
        async with self._transaction() as cursor:
            await cursor.execute(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (self._table_name,),
            )
            columns = {row["COLUMN_NAME"] for row in await _fetchall(cursor)}
            if not columns and create:
                await cursor.execute(
                    f"""
                    CREATE TABLE IF NOT EXISTS {self._table} (
                        name VARBINARY({MAX_NAME_BYTES}) NOT NULL,
                        parent_name VARBINARY({MAX_NAME_BYTES}) NOT NULL,
                        execute_after BIGINT NOT NULL,
                        locked_until BIGINT NULL,
                        locked_by VARBINARY(64) NULL,
                        ready_at BIGINT GENERATED ALWAYS AS
                            (GREATEST(execute_after, COALESCE(locked_until, 0))) STORED,
                        task_spec LONGTEXT NULL,
                        PRIMARY KEY (name),
                        KEY due_entries (parent_name, ready_at)
                    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
                    """
                )
                return
        if not columns:
            raise BackendConfigurationError(
                BACKEND, "mysql_table_name", f"table {self._table_name!r} does not exist (mysql_skip_table_create=True)"
            )
        if "ready_at" not in columns:
            raise BackendConfigurationError(
                BACKEND,
                "mysql_table_name",
                f"table {self._table_name!r} has another schema (pyncette 1.x?); use a new table name",
            )

    async def check_health(self) -> None:
        async with self._transaction() as cursor:
            await cursor.execute("SELECT 1")

    # ---- row helpers ----

    def _state(self, task: Task, row: dict[str, Any], template: Task | None = None) -> TaskState:
        """The state of a row; with ``template``, of an instance rebuilt from its spec (quarantine aware)."""
        scheduled_at = _from_micros(row["execute_after"])
        assert scheduled_at is not None
        if template is not None:
            return self.entries.state(
                template,
                row["name"],
                _text(row["task_spec"]),
                scheduled_at=scheduled_at,
                locked_until=_from_micros(row["locked_until"]),
                locked_by=_text(row["locked_by"]),
                known=task if task is not template else None,
            )
        return TaskState(
            task=task,
            scheduled_at=scheduled_at,
            locked_until=_from_micros(row["locked_until"]),
            locked_by=_text(row["locked_by"]),
        )

    async def _write_rows(self, cursor: aiomysql.DictCursor, rows: Sequence[tuple[str, int, int | None, Any]]) -> None:
        """Sets (execute_after, locked_until, locked_by) of existing rows, one statement per chunk."""
        for chunk in _chunks(rows):
            values, params = _values_table(chunk, ("n", "ea", "lu", "lb"))
            await cursor.execute(
                f"""
                UPDATE {self._table} AS t JOIN ({values}) AS v ON t.name = v.n
                SET t.execute_after = v.ea, t.locked_until = v.lu, t.locked_by = v.lb
                """,
                params,
            )

    async def _delete_rows(self, cursor: aiomysql.DictCursor, names: Sequence[str]) -> None:
        for chunk in _chunks(names):
            await cursor.execute(f"DELETE FROM {self._table} WHERE name IN ({_placeholders(len(chunk))})", list(chunk))

    # ---- batch protocol ----

    async def _create_static(self, utc_now: datetime.datetime, statics: dict[str, Task]) -> None:
        """Inserts the entries of static tasks seen for the first time (kept if they exist)."""
        created = self.statics.due_for_creation(utc_now, statics.values())
        fresh = [(_name(task), _STATIC, _to_micros(first)) for task, first in created]
        if fresh:
            async with self._transaction() as cursor:
                for chunk in _chunks(fresh):
                    await cursor.execute(
                        f"INSERT INTO {self._table} (name, parent_name, execute_after) "
                        f"VALUES {', '.join(['(%s, %s, %s)'] * len(chunk))} "
                        "ON DUPLICATE KEY UPDATE name = name",
                        [value for row in chunk for value in row],
                    )
        self.statics.created(task for task, _ in created)

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        statics = {_name(task): task for task in tasks if not task.dynamic}
        templates = {_name(task): task for task in tasks if task.dynamic}
        batch = LeaseBatch()
        if limit < 1 or not (statics or templates):
            return batch
        await self._create_static(utc_now, statics)
        now = _to_micros(utc_now)
        token = uuid.uuid4().hex

        async def lease(cursor: aiomysql.DictCursor) -> LeaseBatch:
            batch = LeaseBatch()
            branches: list[str] = []
            params: list[Any] = []
            # One branch per group keeps each branch an ordered index range scan of at most `limit + 1` rows.
            if statics:
                branches.append(
                    f"(SELECT {_COLUMNS} FROM {self._table} WHERE parent_name = %s "
                    f"AND name IN ({_placeholders(len(statics))}) AND ready_at <= %s "
                    "ORDER BY ready_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                )
                params += [_STATIC, *statics, now, limit + 1]
            for group in templates:
                branches.append(
                    f"(SELECT {_COLUMNS} FROM {self._table} WHERE parent_name = %s AND ready_at <= %s "
                    "ORDER BY ready_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                )
                params += [group, now, limit + 1]
            await cursor.execute(" UNION ALL ".join(branches), params)
            rows = await _fetchall(cursor)

            # Each branch asks for one row more than needed: that row only tells whether more are due.
            rows.sort(key=lambda row: row["ready_at"])
            batch.has_more = len(rows) > limit

            writes: list[tuple[str, int, int | None, Any]] = []
            deletes: list[str] = []
            for row in rows[:limit]:
                template = templates.get(row["parent_name"])
                if template is None:
                    task: Task | None = statics[row["name"]]
                else:
                    task = self.entries.load(template, row["name"], _text(row["task_spec"]))
                scheduled_at = _from_micros(row["execute_after"])
                assert scheduled_at is not None
                moved, following = (
                    next_time(task, utc_now, scheduled_at)
                    if task is not None and task.execution_mode == ExecutionMode.AT_MOST_ONCE
                    else (False, None)
                )
                if task is None or (task.execution_mode == ExecutionMode.AT_MOST_ONCE and not moved):
                    # Quarantined (or its next time cannot be computed): leased ("parked") so it is not
                    # read again before the lease ends, and not returned.
                    until = _to_micros(utc_now + (task or template or statics[row["name"]]).lease_duration)
                    writes.append((row["name"], row["execute_after"], until, token if task is not None else PARKED))
                    continue
                if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
                    if following is None:
                        deletes.append(row["name"])
                    else:
                        writes.append((row["name"], _to_micros(following), None, None))
                    batch.executions.append(unleased(task, scheduled_at))
                else:
                    until = _to_micros(utc_now + task.lease_duration)
                    writes.append((row["name"], row["execute_after"], until, token))
                    batch.executions.append(leased(task, scheduled_at, token))
            await self._write_rows(cursor, writes)
            await self._delete_rows(cursor, deletes)
            if not batch.has_more:
                batch.next_due_at = await self._next_due(cursor, now, token, statics, templates)
            return batch

        result: LeaseBatch = await self._retrying(lease)
        return result

    async def _next_due(
        self,
        cursor: aiomysql.DictCursor,
        now: int,
        token: str,
        statics: dict[str, Task],
        templates: dict[str, Task],
    ) -> datetime.datetime | None:
        """The earliest ``ready_at`` in the future among entries this batch did not lease."""
        branches: list[str] = []
        params: list[Any] = []
        not_ours = "NOT (locked_by <=> %s)"
        if statics:
            branches.append(
                f"(SELECT MIN(ready_at) AS m FROM {self._table} WHERE parent_name = %s "
                f"AND name IN ({_placeholders(len(statics))}) AND ready_at > %s AND {not_ours})"
            )
            params += [_STATIC, *statics, now, token]
        for template in templates:
            branches.append(
                f"(SELECT MIN(ready_at) AS m FROM {self._table} "
                f"WHERE parent_name = %s AND ready_at > %s AND {not_ours})"
            )
            params += [template, now, token]
        await cursor.execute(f"SELECT MIN(m) AS m FROM ({' UNION ALL '.join(branches)}) AS due", params)
        row = await _fetchone(cursor)
        return _from_micros(row["m"]) if row is not None and row["m"] is not None else None

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        moves: list[tuple[str, Any, int]] = []
        finished: list[tuple[str, Any]] = []
        for execution, lease in to_commit(executions):
            ok, following = next_time(execution.task, utc_now, execution.scheduled_at)
            if not ok:
                continue
            if following is None:
                finished.append((_name(execution.task), lease))
            else:
                moves.append((_name(execution.task), lease, _to_micros(following)))
        if not moves and not finished:
            return

        async def commit(cursor: aiomysql.DictCursor) -> None:
            for chunk in _chunks(moves):
                values, params = _values_table(chunk, ("n", "l", "ea"))
                await cursor.execute(
                    f"""
                    UPDATE {self._table} AS t JOIN ({values}) AS v ON t.name = v.n AND t.locked_by = v.l
                    SET t.execute_after = v.ea, t.locked_until = NULL, t.locked_by = NULL
                    """,
                    params,
                )
            for chunk in _chunks(finished):
                values, params = _values_table(chunk, ("n", "l"))
                await cursor.execute(
                    f"DELETE t FROM {self._table} AS t JOIN ({values}) AS v ON t.name = v.n AND t.locked_by = v.l",
                    params,
                )

        await self._retrying(commit)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        leases = [(_name(e.task), token) for e, token in held(executions)]
        if not leases:
            return

        async def unlock(cursor: aiomysql.DictCursor) -> None:
            for chunk in _chunks(leases):
                values, params = _values_table(chunk, ("n", "l"))
                await cursor.execute(
                    f"""
                    UPDATE {self._table} AS t JOIN ({values}) AS v ON t.name = v.n AND t.locked_by = v.l
                    SET t.locked_until = NULL, t.locked_by = NULL
                    """,
                    params,
                )

        await self._retrying(unlock)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        leases = [(_name(e.task), token, _to_micros(utc_now + e.task.lease_duration)) for e, token in held(executions)]
        if not leases:
            return [None] * len(executions)

        async def extend(cursor: aiomysql.DictCursor) -> set[tuple[str, str]]:
            kept: set[tuple[str, str]] = set()
            for chunk in _chunks(leases):
                values, params = _values_table(chunk, ("n", "l", "lu"))
                await cursor.execute(
                    f"SELECT t.name, t.locked_by FROM {self._table} AS t JOIN ({values}) AS v "
                    "ON t.name = v.n AND t.locked_by = v.l FOR UPDATE",
                    params,
                )
                kept.update((row["name"], row["locked_by"]) for row in await _fetchall(cursor))
                await cursor.execute(
                    f"UPDATE {self._table} AS t JOIN ({values}) AS v ON t.name = v.n AND t.locked_by = v.l "
                    "SET t.locked_until = v.lu",
                    params,
                )
            return kept

        kept: set[tuple[str, str]] = await self._retrying(extend)
        return [e.lease if (_name(e.task), token_of(e.lease)) in kept else None for e in executions]

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        entries: dict[str, tuple[Task, int | None]] = {}
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            first = task.get_next_execution(utc_now, None)
            entries[_name(task)] = (task, None if first is None else _to_micros(first))
        if not entries:
            return
        now = _to_micros(utc_now)

        async def register(cursor: aiomysql.DictCursor) -> None:
            names = list(entries)
            existing: dict[str, dict[str, Any]] = {}
            for chunk in _chunks(names):
                await cursor.execute(
                    f"SELECT name, execute_after, locked_until, locked_by FROM {self._table} "
                    f"WHERE name IN ({_placeholders(len(chunk))}) FOR UPDATE",
                    list(chunk),
                )
                existing.update((row["name"], row) for row in await _fetchall(cursor))
            if not force:
                for name, row in existing.items():
                    leased = row["locked_until"] is not None and row["locked_until"] > now
                    if leased and row["locked_by"] != PARKED:  # a parked row is nobody's lease
                        raise TaskLockedException(entries[name][0], _from_micros(row["locked_until"]))
            upserts: list[tuple[Any, ...]] = []
            gone: list[str] = []
            for name, (task, first) in entries.items():
                if first is None:
                    gone.append(name)
                    continue
                assert task.parent_task is not None
                upserts.append((name, _name(task.parent_task), first, spec_text(task)))
            # Without force the sooner time and the lease are kept, unless the row was parked
            # (quarantined): that one is replaced. Assignments run left to right, so locked_by last.
            keep = (
                "execute_after = VALUES(execute_after), locked_until = NULL, locked_by = NULL"
                if force
                else "execute_after = IF(locked_by <=> %s, VALUES(execute_after), "
                "LEAST(execute_after, VALUES(execute_after))), "
                "locked_until = IF(locked_by <=> %s, NULL, locked_until), "
                "locked_by = IF(locked_by <=> %s, NULL, locked_by)"
            )
            keep_params = [] if force else [PARKED, PARKED, PARKED]
            for chunk in _chunks(upserts):
                await cursor.execute(
                    f"INSERT INTO {self._table} (name, parent_name, execute_after, task_spec) "
                    f"VALUES {', '.join(['(%s, %s, %s, %s)'] * len(chunk))} "
                    f"ON DUPLICATE KEY UPDATE parent_name = VALUES(parent_name), task_spec = VALUES(task_spec), {keep}",
                    [value for row in chunk for value in row] + keep_params,
                )
            await self._delete_rows(cursor, gone)

        await self._retrying(register)

    # ---- pyncette 1.x single-entry protocol ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        async with self._transaction() as cursor:
            await cursor.execute(f"DELETE FROM {self._table} WHERE name = %s", (_name(task),))

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        name = _name(task)

        async def poll(cursor: aiomysql.DictCursor) -> PollResponse:
            await cursor.execute(f"SELECT {_COLUMNS} FROM {self._table} WHERE name = %s FOR UPDATE", (name,))
            row = await _fetchone(cursor)
            if row is None:
                if task.parent_task is not None:
                    raise self.instance_not_found(task)
                created = self.statics.due_for_creation(utc_now, [task])
                if not created:
                    raise PyncetteException(f"Task {task.canonical_name} has no next execution")
                first = _to_micros(created[0][1])
                await cursor.execute(
                    f"INSERT INTO {self._table} (name, parent_name, execute_after) VALUES (%s, %s, %s)",
                    (name, _STATIC, first),
                )
                execute_after, locked_until, locked_by = first, None, None
            else:
                execute_after, locked_until, locked_by = row["execute_after"], row["locked_until"], row["locked_by"]
            scheduled_at = _from_micros(execute_after)
            assert scheduled_at is not None
            plan = plan_poll(
                utc_now,
                task,
                lease,
                execute_after=scheduled_at,
                locked_until=_from_micros(locked_until),
                locked_by=_text(locked_by),
                new_token=uuid.uuid4().hex,
            )
            if plan.advance:
                if plan.next_at is None:
                    await self._delete_rows(cursor, [name])
                else:
                    await self._write_rows(cursor, [(name, _to_micros(plan.next_at), None, None)])
            elif plan.lease_until is not None:
                await self._write_rows(cursor, [(name, execute_after, _to_micros(plan.lease_until), plan.token)])
            return plan.response

        result: PollResponse = await self._retrying(poll)
        return result

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        async with self._transaction() as cursor:
            await cursor.execute(f"SELECT {_COLUMNS} FROM {self._table} WHERE name = %s", (_name(task),))
            row = await _fetchone(cursor)
        if row is None:
            return None
        return self._state(task, row, task.parent_task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        page = limit if limit is not None else self._batch_size
        after = continuation_token if isinstance(continuation_token, str) else ""
        async with self._transaction() as cursor:
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM {self._table} WHERE parent_name = %s AND name > %s ORDER BY name LIMIT %s",
                (_name(parent_task), after, page + 1),
            )
            rows = list(await _fetchall(cursor))
        more = len(rows) > page
        rows = rows[:page]
        states = [self._state(parent_task, row, parent_task) for row in rows]
        token = ContinuationToken(rows[-1]["name"]) if more and rows else None
        return ListTasksResponse(tasks=states, continuation_token=token)


def _connect_error(error: BaseException, host: str, port: int, user: str, database: str) -> BackendConfigurationError:
    code = error.args[0] if isinstance(error, aiomysql.Error) and error.args else None
    if code in (1045, 1698):
        return BackendConfigurationError(BACKEND, "mysql_password", f"access denied for user {user!r} on {host}:{port}")
    if code in (1049, 1044):
        return BackendConfigurationError(
            BACKEND, "mysql_database", f"cannot use database {database!r} on {host}:{port}"
        )
    reason = str(error.args[1] if isinstance(error, aiomysql.Error) and len(error.args) > 1 else error)
    reason = reason.splitlines()[0] if reason else type(error).__name__
    return BackendConfigurationError(BACKEND, "mysql_host", f"cannot connect to {host}:{port} ({reason})")


@contextlib.asynccontextmanager
async def mysql_repository(**kwargs: Any) -> AsyncIterator[MySQLRepository]:
    """Opens a connection pool to MySQL/MariaDB and, unless ``mysql_skip_table_create``, the table.

    Keywords: ``mysql_host``, ``mysql_database``, ``mysql_user`` (required), ``mysql_password``,
    ``mysql_port`` (3306), ``mysql_table_name`` (``pyncette_tasks``; letters, digits and
    underscores), ``mysql_skip_table_create`` (False), ``batch_size`` (100). The pool holds up to
    10 connections. Other keywords are ignored (they belong to the app).
    """
    host = str(required(BACKEND, kwargs, "mysql_host"))
    database = str(required(BACKEND, kwargs, "mysql_database"))
    user = str(required(BACKEND, kwargs, "mysql_user"))
    password = kwargs.get("mysql_password") or ""
    port = kwargs.get("mysql_port") or 3306
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise BackendConfigurationError(BACKEND, "mysql_port", f"expected a TCP port number, got {port!r}")
    table_name = checked_table_name(
        BACKEND,
        "mysql_table_name",
        kwargs.get("mysql_table_name") or DEFAULT_TABLE_NAME,
        _SAFE_IDENTIFIER,
        "letters, digits and underscores, at most 64, not starting with a digit",
    )
    batch_size = positive_int(BACKEND, kwargs, "batch_size", DEFAULT_BATCH_SIZE)

    try:
        pool = await aiomysql.create_pool(
            host=host,
            port=port,
            user=user,
            password=password,
            db=database,
            minsize=1,
            maxsize=10,
            connect_timeout=min(_CONNECT_TIMEOUT, backend_timeout_seconds(kwargs)),
            autocommit=False,
            charset="utf8mb4",
            init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        )
    except (TimeoutError, aiomysql.Error, OSError) as error:
        raise _connect_error(error, host, port, user, database) from None
    try:
        repository = MySQLRepository(pool, table_name=table_name, batch_size=batch_size)
        await repository.initialize(create=not kwargs.get("mysql_skip_table_create", False))
        yield repository
    finally:
        pool.close()
        await pool.wait_closed()
