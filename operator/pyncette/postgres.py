"""The PostgreSQL backend: one table, one row per entry, batches as single set-based statements.

The table keeps pyncette 1.x's columns (``name``, ``parent_name``, ``locked_until``, ``locked_by``,
``execute_after``, ``task_spec``) and index, so a table created by 1.x (or by hand for
``postgres_skip_table_create``) keeps working. Static tasks have ``parent_name`` NULL; dynamic
instances carry their template's (or partition's) canonical name.

Round trips: ``lease_due`` is one statement: per polled task a LATERAL index scan picks the
earliest due rows with ``FOR UPDATE SKIP LOCKED`` (so concurrent workers get disjoint rows), the
earliest ``limit`` of them are leased by an UPDATE, and the same statement reports whether more were
due and when the next row falls due. AT_MOST_ONCE rows then take one more statement for the whole
batch, moving them to their next time (computed in Python) before they run; rows this worker cannot
load (quarantine, see ``pyncette.repository.kit``) take one more, marking them PARKED. Commits, unlocks and
lease extensions are one ``UPDATE ... FROM unnest(...)`` per batch; registering instances is one
``INSERT ... ON CONFLICT``. After a server restart the pool's dead connections are replaced on the
next acquire; the failing call raises and the app loop retries it.

Deadlines: the app cancels a call that overruns ``backend_timeout``. asyncpg then sends the server a
CancelRequest and waits for the old connection to acknowledge it; the pool's ``command_timeout``
(also ``backend_timeout``) bounds that wait, after which asyncpg terminates the connection instead
of returning it to the pool. So a half-open connection is dropped, not reused, and the pool's slot is
free for a fresh one once the server answers again. The same value bounds connecting.
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
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]

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
from pyncette.repository.kit import TokenLease
from pyncette.repository.kit import held
from pyncette.repository.kit import leased
from pyncette.repository.kit import next_time
from pyncette.repository.kit import one_line
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

BACKEND = "postgres"
# Unquoted-identifier rules, lower case only (as 1.x), short enough for the derived index name.
_SAFE_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,49}")


# The lease type of this backend is the kit's (``locked_by`` is a UUID, its token the UUID's text).
PostgresLease = TokenLease


def _seconds(delta: datetime.timedelta) -> float:
    return delta.total_seconds()


def _share(limit: int, templates: int) -> int:
    """How many due rows each polled template may contribute to one lease.

    With one or two templates, ``limit`` (exact earliest-first order). With many (partitions), a
    fair share of twice ``limit / templates``, at least 8: ordering across templates becomes
    approximate, but a poll locks O(limit) rows instead of O(limit * templates).
    """
    if templates <= 2:
        return limit
    return min(limit, max(-(-2 * limit // templates), 8))


class _Statements:
    """The SQL of one table (the name is validated before it gets here)."""

    def __init__(self, table: str) -> None:
        t = f'"{table}"'
        due = "GREATEST(t.locked_until, t.execute_after)"
        self.create = f"""
            CREATE TABLE IF NOT EXISTS {t} (
                name text PRIMARY KEY,
                parent_name text,
                locked_until timestamptz,
                locked_by uuid,
                execute_after timestamptz,
                task_spec json
            );
            CREATE INDEX IF NOT EXISTS "due_tasks_{table}" ON {t} (parent_name, GREATEST(locked_until, execute_after));
        """
        self.create_lock = f"SELECT pg_advisory_xact_lock(hashtext('pyncette table {table}'))"
        # $1 templates, $2 their lease seconds, $3 now, $4 candidates per template (see _share), $5
        # static task names, $6 their lease seconds, $7 limit, $8 lease token.
        self.lease = f"""
            WITH candidates AS (
                SELECT c.name, c.due, p.lease_s, p.parent
                FROM unnest($1::text[], $2::float8[]) AS p(parent, lease_s)
                CROSS JOIN LATERAL (
                    SELECT t.name, {due} AS due FROM {t} t
                    WHERE t.parent_name = p.parent AND {due} <= $3
                    ORDER BY {due}
                    LIMIT $4
                    FOR UPDATE SKIP LOCKED
                ) c
                UNION ALL
                SELECT s.name, s.due, s.lease_s, NULL FROM (
                    SELECT t.name, {due} AS due, st.lease_s
                    FROM unnest($5::text[], $6::float8[]) AS st(name, lease_s)
                    JOIN {t} t ON t.name = st.name
                    WHERE t.parent_name IS NULL AND {due} <= $3
                    FOR UPDATE OF t SKIP LOCKED
                ) s
            ),
            picked AS (
                SELECT name, lease_s FROM candidates ORDER BY due LIMIT $7
            ),
            leased AS (
                UPDATE {t} t
                SET locked_by = $8,
                    locked_until = $3 + make_interval(secs => CASE
                        WHEN json_typeof(t.task_spec -> 'lease_duration') = 'number'
                             AND (t.task_spec ->> 'lease_duration')::float8 > 0
                        THEN (t.task_spec ->> 'lease_duration')::float8
                        ELSE picked.lease_s END)
                FROM picked
                WHERE t.name = picked.name
                RETURNING t.name, t.parent_name, t.execute_after, t.task_spec::text AS task_spec
            ),
            upcoming AS (
                SELECT n.due FROM unnest($1::text[]) AS p(parent)
                CROSS JOIN LATERAL (
                    SELECT {due} AS due FROM {t} t
                    WHERE t.parent_name = p.parent AND {due} > $3
                    ORDER BY {due} LIMIT 1
                ) n
                UNION ALL
                SELECT {due} FROM {t} t WHERE t.name = ANY($5::text[]) AND t.parent_name IS NULL AND {due} > $3
            )
            SELECT name, parent_name, execute_after, task_spec, NULL::bigint AS candidates FROM leased
            UNION ALL
            SELECT NULL, NULL, (SELECT min(due) FROM upcoming), NULL,
                   (SELECT count(*) FROM candidates)
                   + CASE WHEN EXISTS (SELECT 1 FROM candidates WHERE parent IS NOT NULL
                                       GROUP BY parent HAVING count(*) >= $4)
                          THEN $7 + 1 ELSE 0 END
        """
        self.ensure_static = f"""
            INSERT INTO {t} (name, parent_name, execute_after)
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[])
            ON CONFLICT (name) DO NOTHING
        """
        self.commit = f"""
            WITH d AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS d(name, token, next_at)),
            moved AS (
                UPDATE {t} t SET execute_after = d.next_at, locked_until = NULL, locked_by = NULL
                FROM d WHERE t.name = d.name AND t.locked_by = d.token AND d.next_at IS NOT NULL
                RETURNING t.name
            ),
            gone AS (
                DELETE FROM {t} t USING d
                WHERE t.name = d.name AND t.locked_by = d.token AND d.next_at IS NULL
                RETURNING t.name
            )
            SELECT name FROM moved UNION ALL SELECT name FROM gone
        """
        self.unlock = f"""
            UPDATE {t} t SET locked_until = NULL, locked_by = NULL
            FROM unnest($1::text[], $2::uuid[]) AS d(name, token)
            WHERE t.name = d.name AND t.locked_by = d.token
        """
        self.extend = f"""
            UPDATE {t} t SET locked_until = d.locked_until
            FROM unnest($1::text[], $2::uuid[], $3::timestamptz[]) AS d(name, token, locked_until)
            WHERE t.name = d.name AND t.locked_by = d.token
            RETURNING t.name
        """
        # $1 names, $2 parents, $3 specs, $4 execute_after (NULL: no future run, delete), $5 force,
        # $6 now. All or nothing: without force, any leased instance blocks the whole batch and is
        # returned; otherwise the result is empty. Existing rows are locked first, so a worker
        # cannot lease one of them between the check and the write.
        self.register = f"""
            WITH d AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
                AS d(name, parent, spec, execute_after)
            ),
            existing AS (
                SELECT t.name, t.locked_until, t.locked_by FROM {t} t WHERE t.name = ANY($1::text[]) FOR UPDATE
            ),
            blocked AS (
                SELECT name, locked_until FROM existing
                WHERE NOT $5 AND locked_until > $6 AND locked_by IS DISTINCT FROM '{PARKED}'::uuid
            ),
            removed AS (
                DELETE FROM {t} t USING d
                WHERE t.name = d.name AND d.execute_after IS NULL AND NOT EXISTS (SELECT 1 FROM blocked)
            ),
            written AS (
                INSERT INTO {t} AS t (name, parent_name, task_spec, execute_after)
                SELECT name, parent, spec::json, execute_after FROM d
                WHERE d.execute_after IS NOT NULL AND NOT EXISTS (SELECT 1 FROM blocked)
                ON CONFLICT (name) DO UPDATE SET
                    parent_name = EXCLUDED.parent_name,
                    task_spec = EXCLUDED.task_spec,
                    execute_after = CASE WHEN $5 OR t.execute_after IS NULL OR t.locked_by = '{PARKED}'::uuid
                                         THEN EXCLUDED.execute_after
                                         ELSE LEAST(t.execute_after, EXCLUDED.execute_after) END,
                    locked_until = CASE WHEN $5 OR t.locked_by = '{PARKED}'::uuid THEN NULL ELSE t.locked_until END,
                    locked_by = CASE WHEN $5 OR t.locked_by = '{PARKED}'::uuid THEN NULL ELSE t.locked_by END
            )
            SELECT name, locked_until FROM blocked
        """
        # Quarantined rows leased by ``lease`` are handed over to the PARKED marker (nobody's lease).
        self.park = f"UPDATE {t} SET locked_by = '{PARKED}'::uuid WHERE name = ANY($1::text[]) AND locked_by = $2"
        self.select_for_update = f"SELECT * FROM {t} WHERE name = $1 FOR UPDATE"
        self.upsert = f"""
            INSERT INTO {t} (name, parent_name, execute_after, locked_until, locked_by) VALUES ($1, NULL, $2, $3, $4)
            ON CONFLICT (name) DO UPDATE SET execute_after = $2, locked_until = $3, locked_by = $4
        """
        self.delete = f"DELETE FROM {t} WHERE name = $1"
        self.select = f"SELECT * FROM {t} WHERE name = $1"
        self.list = f"""
            SELECT * FROM {t} WHERE parent_name = $1 AND name > $2 ORDER BY name LIMIT $3
        """


class PostgresRepository(BatchRepository):
    """Task state of one app in one PostgreSQL table."""

    backend_name = BACKEND

    def __init__(self, pool: asyncpg.Pool, *, table_name: str = "pyncette_tasks", batch_size: int = 100) -> None:
        super().__init__(batch_size=batch_size)
        self._pool = pool
        self._table_name = table_name
        self._sql = _Statements(table_name)

    async def initialize(self) -> None:
        """Creates the table and its index if missing (serialized, so concurrent start-ups don't clash)."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(self._sql.create_lock)
            await connection.execute(self._sql.create)

    async def check_health(self) -> None:
        async with self._pool.acquire() as connection:
            await connection.fetchval("SELECT 1")

    # ---- batch protocol ----

    async def _ensure_static(self, utc_now: datetime.datetime, tasks: Sequence[Task]) -> None:
        fresh = self.statics.due_for_creation(utc_now, tasks)
        if fresh:
            names = [task.canonical_name for task, _ in fresh]
            firsts = [first for _, first in fresh]
            await self._pool.execute(self._sql.ensure_static, names, [None] * len(names), firsts)
        self.statics.created(task for task, _ in fresh)

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        if not tasks or limit < 1:
            return LeaseBatch(has_more=bool(tasks) and limit < 1)
        await self._ensure_static(utc_now, tasks)
        templates = [t for t in tasks if t.dynamic]
        statics = [t for t in tasks if not t.dynamic]
        by_name = {t.canonical_name: t for t in tasks}
        token = str(uuid.uuid4())
        rows = await self._pool.fetch(
            self._sql.lease,
            [t.canonical_name for t in templates],
            [_seconds(t.lease_duration) for t in templates],
            utc_now,
            _share(limit, len(templates)) + 1,
            [t.canonical_name for t in statics],
            [_seconds(t.lease_duration) for t in statics],
            limit,
            token,
        )
        meta = rows[-1]
        batch = LeaseBatch(has_more=meta["candidates"] > limit, next_due_at=meta["execute_after"])
        at_most_once: list[LeasedExecution] = []
        parked: list[str] = []
        for row in rows[:-1]:
            owner = by_name[row["parent_name"] if row["parent_name"] is not None else row["name"]]
            task = self.entries.load(owner, row["name"], row["task_spec"]) if owner.dynamic else owner
            if task is None:
                parked.append(row["name"])  # quarantined: leased by the statement above, not run
                continue
            scheduled_at = row["execute_after"]
            execution = leased(task, scheduled_at, token)
            if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
                at_most_once.append(execution)
            else:
                batch.executions.append(execution)
        batch.executions.sort(key=lambda e: e.scheduled_at)
        if parked:  # one more statement, only when a batch met a quarantined row
            await self._pool.execute(self._sql.park, parked, token)

        if at_most_once:
            for execution, done, next_at in await self._commit(utc_now, held(at_most_once)):
                if done:
                    batch.executions.append(unleased(execution.task, execution.scheduled_at))
                    if next_at is not None and (batch.next_due_at is None or next_at < batch.next_due_at):
                        batch.next_due_at = next_at
        return batch

    async def _commit(
        self, utc_now: datetime.datetime, leases: Sequence[tuple[LeasedExecution, str]]
    ) -> list[tuple[LeasedExecution, bool, datetime.datetime | None]]:
        """Moves leased rows (with their lease tokens) to their next time in one statement; reports
        which leases were held.

        A row whose next time cannot be computed is left leased (``kit.next_time``): not done."""
        names: list[str] = []
        tokens: list[str] = []
        next_times: list[datetime.datetime | None] = []
        movable: list[LeasedExecution] = []
        for execution, token in leases:
            ok, following = next_time(execution.task, utc_now, execution.scheduled_at)
            if not ok:
                continue
            movable.append(execution)
            names.append(execution.task.canonical_name)
            tokens.append(token)
            next_times.append(following)
        if not names:
            return [(e, False, None) for e, _ in leases]
        done = {row["name"] for row in await self._pool.fetch(self._sql.commit, names, tokens, next_times)}
        moved = {id(e): (name in done, n) for e, name, n in zip(movable, names, next_times, strict=True)}
        return [(e, *moved.get(id(e), (False, None))) for e, _ in leases]

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        leases = to_commit(executions)
        if not leases:
            return
        for execution, done, _ in await self._commit(utc_now, leases):
            if not done:
                logger.info("Not committing %s: the lease was lost", execution.task)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        leases = held(executions)
        if leases:
            names = [e.task.canonical_name for e, _ in leases]
            await self._pool.execute(self._sql.unlock, names, [token for _, token in leases])

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        leases = held(executions)
        if not leases:
            return [None] * len(executions)
        rows = await self._pool.fetch(
            self._sql.extend,
            [e.task.canonical_name for e, _ in leases],
            [token for _, token in leases],
            [utc_now + e.task.lease_duration for e, _ in leases],
        )
        extended = {row["name"] for row in rows}
        return [e.lease if token_of(e.lease) and e.task.canonical_name in extended else None for e in executions]

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        """Registers instances in one statement, all or nothing: without ``force`` a leased instance
        raises ``TaskLockedException`` and none of the batch is written. An instance whose schedule
        has no future run is deleted."""
        unique: dict[str, Task] = {}
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            unique[task.canonical_name] = task
        if not unique:
            return
        pending = list(unique.values())
        locked = await self._pool.fetch(
            self._sql.register,
            [t.canonical_name for t in pending],
            [t.parent_task.canonical_name for t in pending if t.parent_task is not None],
            [spec_text(t) for t in pending],
            [t.get_next_execution(utc_now, None) for t in pending],
            force,
            utc_now,
        )
        if locked:
            names = {row["name"]: row["locked_until"] for row in locked}
            task = next(t for t in pending if t.canonical_name in names)
            raise TaskLockedException(task, names[task.canonical_name])

    # ---- pyncette 1.x single-entry protocol ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        await self._pool.execute(self._sql.delete, task.canonical_name)

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(self._sql.select_for_update, task.canonical_name)
            if row is None:
                if task.parent_task is not None:
                    raise self.instance_not_found(task)
                created = self.statics.due_for_creation(utc_now, [task])
                if not created:
                    raise PyncetteException(f"Task {task.canonical_name} has no future execution")
                execute_after, locked_until, locked_by = created[0][1], None, None
                await connection.execute(self._sql.upsert, task.canonical_name, execute_after, None, None)
            else:
                execute_after, locked_until, locked_by = row["execute_after"], row["locked_until"], row["locked_by"]
            plan = plan_poll(
                utc_now,
                task,
                lease,
                execute_after=execute_after,
                locked_until=locked_until,
                locked_by=str(locked_by) if locked_by is not None else None,
                new_token=str(uuid.uuid4()),
            )
            if plan.advance:
                if plan.next_at is None:
                    await connection.execute(self._sql.delete, task.canonical_name)
                else:
                    await self._update(connection, task, plan.next_at, None, None)
            elif plan.lease_until is not None:
                await self._update(connection, task, execute_after, plan.lease_until, plan.token)
            return plan.response

    async def _update(
        self,
        connection: asyncpg.Connection,
        task: Task,
        execute_after: datetime.datetime,
        locked_until: datetime.datetime | None,
        locked_by: str | None,
    ) -> None:
        await connection.execute(
            f'UPDATE "{self._table_name}" SET execute_after = $2, locked_until = $3, locked_by = $4 WHERE name = $1',
            task.canonical_name,
            execute_after,
            locked_until,
            locked_by,
        )

    def _state(self, row: asyncpg.Record, task: Task) -> TaskState:
        return TaskState(
            task=task,
            scheduled_at=row["execute_after"],
            locked_until=row["locked_until"],
            locked_by=str(row["locked_by"]) if row["locked_by"] is not None else None,
        )

    def _instance_state(self, row: asyncpg.Record, template: Task, known: Task | None) -> TaskState:
        return self.entries.state(
            template,
            row["name"],
            row["task_spec"],
            scheduled_at=row["execute_after"],
            locked_until=row["locked_until"],
            locked_by=str(row["locked_by"]) if row["locked_by"] is not None else None,
            known=known,
        )

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        row = await self._pool.fetchrow(self._sql.select, task.canonical_name)
        if row is None:
            return None
        if task.parent_task is not None:
            return self._instance_state(row, task.parent_task, task)
        return self._state(row, task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        page_size = limit if limit is not None else self._batch_size
        after = continuation_token if isinstance(continuation_token, str) else ""
        rows = await self._pool.fetch(self._sql.list, parent_task.canonical_name, after, page_size + 1)
        page = rows[:page_size]
        states = [self._instance_state(row, parent_task, None) for row in page]
        token = ContinuationToken(page[-1]["name"]) if len(rows) > page_size and page else None
        return ListTasksResponse(tasks=states, continuation_token=token)


# ---- configuration ----


def _where(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    except ValueError:
        return "the server"


@contextlib.asynccontextmanager
async def postgres_repository(**kwargs: Any) -> AsyncIterator[PostgresRepository]:
    """Connects to PostgreSQL and yields a repository; the connection pool closes on exit.

    Keywords: ``postgres_url`` (required, e.g. ``postgresql://user:password@host/database``),
    ``postgres_table_name`` (default ``pyncette_tasks``; lower-case letters, digits and underscores),
    ``postgres_skip_table_create`` (default False: the table and its index are created if missing),
    ``batch_size`` (default 100: page size of ``poll_dynamic_task`` and ``list_task_states``),
    ``postgres_pool_size`` (default 10 connections at most), ``backend_timeout`` (the app's deadline
    per call, also asyncpg's connect and command timeout; default 10 s). Bad settings or an unreachable server
    raise ``BackendConfigurationError`` before anything is yielded.
    """
    url = required(BACKEND, kwargs, "postgres_url", "postgresql://user@host/db")
    if not isinstance(url, str) or not url.startswith(("postgres://", "postgresql://")):
        raise BackendConfigurationError(BACKEND, "postgres_url", f"expected a postgresql:// URL, got {url!r}")
    table_name = checked_table_name(
        BACKEND,
        "postgres_table_name",
        "pyncette_tasks" if kwargs.get("postgres_table_name") is None else kwargs["postgres_table_name"],
        _SAFE_TABLE_NAME,
        "lower-case letters, digits and underscores, not starting with a digit, at most 50 characters",
    )
    batch_size = positive_int(BACKEND, kwargs, "batch_size", 100)
    pool_size = positive_int(BACKEND, kwargs, "postgres_pool_size", 10)

    try:
        # min_size=0: no background "restore the floor" reconnect loop (which logs a traceback per
        # attempt while the server is down); a connection is opened on demand, checked right here.
        deadline = backend_timeout_seconds(kwargs)
        pool = await asyncpg.create_pool(
            url, min_size=0, max_size=pool_size, timeout=deadline, command_timeout=deadline
        )
        try:
            await pool.fetchval("SELECT 1")
        except BaseException:
            await pool.close()
            raise
    except asyncpg.InvalidPasswordError as e:
        raise BackendConfigurationError(BACKEND, "postgres_url", f"authentication failed ({one_line(e)})") from None
    except (OSError, TimeoutError) as e:
        raise BackendConfigurationError(
            BACKEND, "postgres_url", f"cannot connect to {_where(url)} ({one_line(e)})"
        ) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as e:
        raise BackendConfigurationError(BACKEND, "postgres_url", f"connection refused ({one_line(e)})") from None
    assert pool is not None
    try:
        repository = PostgresRepository(pool, table_name=table_name, batch_size=batch_size)
        if not kwargs.get("postgres_skip_table_create", False):
            await repository.initialize()
        yield repository
    finally:
        await pool.close()
