"""The Redis backend: task state in hashes, due times in sorted sets, every change an atomic Lua script.

Layout (``P`` is ``pyncette:<namespace>:`` with colons in the namespace doubled, so two apps with
different ``redis_namespace`` values never share a key):

* ``P e:<entry>``   a hash per entry (a static task or a dynamic instance, by canonical name):
  ``ea`` execute_after, ``lu`` locked_until, ``lb`` locked_by (a lease token), ``ld`` the lease
  duration and ``spec`` (JSON) of a dynamic instance. Times are integer microseconds since the epoch.
* ``P i:<task>``    a sorted set per static task, dynamic template or partition: entry names scored
  by when they are next due (execute_after, or the end of the lease when that is later). A partitioned
  task has one per partition, so its instances are spread over independent keys.
* ``P n:<template>`` the instance names of a template (score 0), for stable name-ordered paging.

Round trips: ``lease_due`` is one EVALSHA over the index keys of all the given tasks; it leases
every returned entry. AT_MOST_ONCE entries then take a second EVALSHA for the whole batch, moving
them to their next time (computed here in Python, which owns the schedule logic) before they run.
``commit_executions``, ``unlock_executions``, ``extend_leases`` and ``register_tasks`` are one
EVALSHA per batch. Scripts are cached server-side (EVALSHA, reloaded on NOSCRIPT, e.g. after a
server restart). Connection errors are retried by redis-py and then surface to the app loop, which
retries the poll; the pool reconnects on its own.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import uuid
from collections.abc import AsyncIterator
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.backoff import NoBackoff

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
from pyncette.model import QueryResponse
from pyncette.model import ResultType
from pyncette.model import TaskState
from pyncette.repository import Repository
from pyncette.task import Task

logger = logging.getLogger(__name__)

BACKEND = "redis"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def _to_us(when: datetime.datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def _from_us(value: bytes | str | int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=int(value))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _key_prefix(namespace: str) -> str:
    # Doubling colons keeps "a" + ":e:x" apart from the namespace "a:e" + ":x".
    return f"pyncette:{namespace.replace(':', '::')}:"


@dataclass(frozen=True)
class RedisLease:
    """Proof of ownership of a leased entry: the token stored in ``lb`` and the time it was due."""

    token: str
    scheduled_at: datetime.datetime


def _lease_of(lease: Lease | None) -> RedisLease | None:
    return lease if isinstance(lease, RedisLease) else None


class _Scripts:
    """The Lua scripts, read from the package and bound to one client (EVALSHA, NOSCRIPT reload)."""

    def __init__(self, client: aioredis.Redis) -> None:
        def load(name: str) -> Any:
            return client.register_script(files(__name__).joinpath(f"{name}.lua").read_text("utf-8"))

        self.lease = load("lease")
        self.commit = load("commit")
        self.unlock = load("unlock")
        self.extend = load("extend")
        self.register = load("register")
        self.poll = load("poll")
        self.list = load("list")

    async def preload(self, client: aioredis.Redis) -> None:
        """Loads every script once up front, so the first call of each is a plain EVALSHA."""
        for script in (self.lease, self.commit, self.unlock, self.extend, self.register, self.poll, self.list):
            await client.script_load(script.script)


class RedisRepository(Repository):
    """Task state of one app (one namespace) on a Redis server."""

    def __init__(self, client: aioredis.Redis, *, namespace: str = "", batch_size: int = 100) -> None:
        self._client = client
        self._prefix = _key_prefix(namespace)
        self._batch_size = batch_size
        self._scripts = _Scripts(client)
        # Static tasks whose entry this repository has made sure exists (once per lifetime).
        self._ensured: set[str] = set()

    # ---- keys ----

    def _index_key(self, task: Task) -> str:
        return f"{self._prefix}i:{task.canonical_name}"

    def _names_key(self, template: Task) -> str:
        return f"{self._prefix}n:{template.canonical_name}"

    def _entry_key(self, task: Task) -> str:
        return f"{self._prefix}e:{task.canonical_name}"

    def _owner(self, task: Task) -> Task:
        """The task whose index holds ``task``'s entry: its template/partition, or itself if static."""
        return task.parent_task if task.parent_task is not None else task

    async def check_health(self) -> None:
        await self._client.ping()

    # ---- batch protocol ----

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        if not tasks or limit < 1:
            return LeaseBatch(has_more=bool(tasks) and limit < 1)
        now_us = _to_us(utc_now)
        token = uuid.uuid4().hex
        args: list[Any] = [self._prefix, now_us, limit, token]
        for task in tasks:
            initial = ""
            static_name = ""
            if not task.dynamic:
                static_name = task.canonical_name
                if static_name not in self._ensured:
                    first = task.get_next_execution(utc_now, None)
                    initial = str(_to_us(first)) if first is not None else ""
                    self._ensured.add(static_name)
            args += [static_name, initial, task.lease_duration // _MICROSECOND]

        response = await self._scripts.lease(keys=[self._index_key(t) for t in tasks], args=args)
        has_more, next_due, missing, rows = json.loads(response)
        for index in missing:
            # The entry of a static task vanished (e.g. flushed): create it again on the next poll.
            self._ensured.discard(tasks[int(index) - 1].canonical_name)

        batch = LeaseBatch(has_more=bool(int(has_more)), next_due_at=_from_us(next_due) if next_due else None)
        at_most_once: list[LeasedExecution] = []
        for index, _name, execute_after, spec in rows:
            owner = tasks[int(index) - 1]
            task = owner.instantiate_from_spec(spec) if owner.dynamic else owner
            scheduled_at = _from_us(execute_after)
            execution = LeasedExecution(task, scheduled_at, Lease(RedisLease(token, scheduled_at)))
            if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
                at_most_once.append(execution)
            else:
                batch.executions.append(execution)

        if at_most_once:
            committed = await self._commit(utc_now, at_most_once)
            for execution, done, next_at in committed:
                if done:
                    batch.executions.append(LeasedExecution(execution.task, execution.scheduled_at, None))
                    if next_at is not None and (batch.next_due_at is None or next_at < batch.next_due_at):
                        batch.next_due_at = next_at
        return batch

    async def _commit(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[tuple[LeasedExecution, bool, datetime.datetime | None]]:
        """Moves leased entries to their next time in one call; reports which leases were still held."""
        keys: dict[str, int] = {}
        items: list[list[Any]] = []
        next_times: list[datetime.datetime | None] = []
        for execution in executions:
            lease = _lease_of(execution.lease)
            assert lease is not None
            next_at = execution.task.get_next_execution(utc_now, execution.scheduled_at)
            next_times.append(next_at)
            key = keys.setdefault(self._index_key(self._owner(execution.task)), len(keys) + 1)
            next_text = str(_to_us(next_at)) if next_at is not None else ""
            items.append([key, execution.task.canonical_name, lease.token, next_text])
        flags = await self._scripts.commit(keys=list(keys), args=[self._prefix, json.dumps(items)])
        return [(e, f == "1", n) for e, f, n in zip(executions, _text(flags), next_times, strict=True)]

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        held = [
            e
            for e in executions
            if _lease_of(e.lease) is not None and e.task.execution_mode == ExecutionMode.AT_LEAST_ONCE
        ]
        if not held:
            return
        for execution, done, _ in await self._commit(utc_now, held):
            if not done:
                logger.info("Not committing %s: the lease was lost", execution.task)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        held = [(e, lease) for e in executions if (lease := _lease_of(e.lease)) is not None]
        if not held:
            return
        args: list[Any] = [self._prefix]
        for execution, lease in held:
            args += [execution.task.canonical_name, lease.token]
        await self._scripts.unlock(keys=[self._index_key(self._owner(e.task)) for e, _ in held], args=args)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        held = [(i, e, lease) for i, e in enumerate(executions) if (lease := _lease_of(e.lease)) is not None]
        results: list[Lease | None] = [None] * len(executions)
        if not held:
            return results
        args: list[Any] = [self._prefix]
        for _, execution, lease in held:
            args += [execution.task.canonical_name, lease.token, _to_us(utc_now + execution.task.lease_duration)]
        keys = [self._index_key(self._owner(e.task)) for _, e, _ in held]
        flags = await self._scripts.extend(keys=keys, args=args)
        for (i, execution, _), flag in zip(held, flags, strict=True):
            if int(flag):
                results[i] = execution.lease
        return results

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        """Registers instances in one call, all or nothing: without ``force`` a leased instance raises
        ``TaskLockedException`` and none of the batch is written. An instance whose schedule has no
        future run is deleted."""
        unique: dict[str, Task] = {}
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            unique[task.canonical_name] = task
        if not unique:
            return
        pending = list(unique.values())
        keys: list[str] = []
        args: list[Any] = [self._prefix, _to_us(utc_now), "1" if force else "0"]
        for task in pending:
            first = task.get_next_execution(utc_now, None)
            keys.append(self._index_key(self._owner(task)))
            spec = json.dumps(task.as_spec(), separators=(",", ":"))
            args += [
                task.canonical_name,
                _to_us(first) if first is not None else "",
                spec,
                task.lease_duration // _MICROSECOND,
            ]
        locked = await self._scripts.register(keys=keys, args=args)
        if locked:
            index, locked_until = locked
            raise TaskLockedException(pending[int(index) - 1], _from_us(locked_until))

    # ---- pyncette 1.x single-entry protocol ----

    async def poll_dynamic_task(
        self, utc_now: datetime.datetime, task: Task, continuation_token: ContinuationToken | None = None
    ) -> QueryResponse:
        batch = await self.lease_due(utc_now, [task], limit=self._batch_size)
        leased: list[tuple[Task, Lease]] = []
        for execution in batch.executions:
            if execution.lease is not None:
                leased.append((execution.task, execution.lease))
            else:
                # Already moved forward (AT_MOST_ONCE): hand it over with a lease poll_task accepts.
                leased.append((execution.task, Lease(RedisLease("", execution.scheduled_at))))
        return QueryResponse(tasks=leased, continuation_token=ContinuationToken(True) if batch.has_more else None)

    async def register_task(self, utc_now: datetime.datetime, task: Task, force: bool = False) -> None:
        await self.register_tasks(utc_now, [task], force=force)

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        owner = self._owner(task)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(self._entry_key(task))
            pipe.zrem(self._index_key(owner), task.canonical_name)
            pipe.zrem(self._names_key(owner), task.canonical_name)
            await pipe.execute()

    async def poll_task(self, utc_now: datetime.datetime, task: Task, lease: Lease | None = None) -> PollResponse:
        held = _lease_of(lease)
        if held is not None and held.token == "":
            # Handed over by poll_dynamic_task after the AT_MOST_ONCE entry was already moved forward.
            return PollResponse(ResultType.READY, held.scheduled_at, None)
        initial = ""
        if task.parent_task is None:
            first = task.get_next_execution(utc_now, None)
            initial = str(_to_us(first)) if first is not None else ""
        result, execute_after, token = await self._scripts.poll(
            keys=[self._index_key(self._owner(task))],
            args=[
                self._prefix,
                task.canonical_name,
                _to_us(utc_now),
                initial,
                held.token if held is not None else "",
                uuid.uuid4().hex,
                task.lease_duration // _MICROSECOND,
            ],
        )
        outcome = ResultType[_text(result)]
        if outcome == ResultType.MISSING:
            raise PyncetteException(f"Task {task.canonical_name} not found")
        scheduled_at = _from_us(execute_after)
        if outcome != ResultType.READY:
            return PollResponse(outcome, scheduled_at, None)
        execution = LeasedExecution(task, scheduled_at, Lease(RedisLease(_text(token), scheduled_at)))
        if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            [(_, done, _)] = await self._commit(utc_now, [execution])
            return PollResponse(ResultType.READY if done else ResultType.LOCKED, scheduled_at, None)
        return PollResponse(outcome, scheduled_at, execution.lease)

    async def commit_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        held = _lease_of(lease)
        if held is not None and held.token:
            await self.commit_executions(utc_now, [LeasedExecution(task, held.scheduled_at, lease)])

    async def extend_lease(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> Lease | None:
        held = _lease_of(lease)
        if held is None or not held.token:
            return None
        [result] = await self.extend_leases(utc_now, [LeasedExecution(task, held.scheduled_at, lease)])
        return result

    async def unlock_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        held = _lease_of(lease)
        if held is not None and held.token:
            await self.unlock_executions(utc_now, [LeasedExecution(task, held.scheduled_at, lease)])

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        execute_after, locked_until, locked_by, spec = await self._client.hmget(
            self._entry_key(task), ["ea", "lu", "lb", "spec"]
        )
        if execute_after is None:
            return None
        if task.parent_task is not None and spec:
            task = task.parent_task.instantiate_from_spec(json.loads(spec))
        return TaskState(
            task=task,
            scheduled_at=_from_us(execute_after),
            locked_until=_from_us(locked_until) if locked_until else None,
            locked_by=_text(locked_by) if locked_by else None,
        )

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        page_size = limit if limit is not None else self._batch_size
        after = continuation_token if isinstance(continuation_token, str) else ""
        has_more, *rows = await self._scripts.list(
            keys=[self._names_key(parent_task)], args=[self._prefix, page_size, after]
        )
        states = [
            TaskState(
                task=parent_task.instantiate_from_spec(json.loads(spec)),
                scheduled_at=_from_us(execute_after),
                locked_until=_from_us(locked_until) if locked_until else None,
                locked_by=_text(locked_by) if locked_by else None,
            )
            for _, execute_after, locked_until, locked_by, spec in rows
            if spec
        ]
        token = ContinuationToken(_text(rows[-1][0])) if int(has_more) and rows else None
        return ListTasksResponse(tasks=states, continuation_token=token)


# ---- configuration ----


def _setting(kwargs: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = kwargs.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BackendConfigurationError(BACKEND, name, f"expected {_kind_name(kind)}, got {value!r}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


@contextlib.asynccontextmanager
async def redis_repository(**kwargs: Any) -> AsyncIterator[RedisRepository]:
    """Connects to Redis and yields a repository; the connection pool closes on exit.

    Keywords: ``redis_url`` (required, e.g. ``redis://localhost:6379/0``), ``redis_namespace``
    (default ``""``: isolates apps sharing one server), ``redis_timeout`` (seconds for connecting and
    for each command, default 10), ``batch_size`` (default 100: page size of ``poll_dynamic_task``
    and ``list_task_states``). Bad settings or an unreachable server raise
    ``BackendConfigurationError`` before anything is yielded.
    """
    url = kwargs.get("redis_url")
    if url is None:
        raise BackendConfigurationError(BACKEND, "redis_url", "is required (e.g. redis://localhost:6379/0)")
    if not isinstance(url, str) or not url:
        raise BackendConfigurationError(BACKEND, "redis_url", f"expected a redis:// URL, got {url!r}")
    namespace = _setting(kwargs, "redis_namespace", str, "")
    timeout = _setting(kwargs, "redis_timeout", (int, float), 10.0)
    if timeout <= 0:
        raise BackendConfigurationError(BACKEND, "redis_timeout", f"must be positive, got {timeout!r}")
    batch_size = _setting(kwargs, "batch_size", int, 100)
    if batch_size < 1:
        raise BackendConfigurationError(BACKEND, "batch_size", f"must be at least 1, got {batch_size!r}")

    try:
        # No retries for the start-up check: a wrong address fails once, after redis_timeout at most.
        client = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), retries=0),
            health_check_interval=30,
        )
    except ValueError as e:
        raise BackendConfigurationError(BACKEND, "redis_url", _describe(e)) from None

    async with client:
        try:
            # A bad address or password fails here, at start-up, as one line rather than a driver traceback.
            await client.ping()
        except redis.exceptions.AuthenticationError as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"authentication failed ({_describe(e)})") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"cannot connect ({_describe(e)})") from None
        except redis.exceptions.ResponseError as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"server refused ({_describe(e)})") from None
        except redis.exceptions.RedisError as e:
            raise BackendConfigurationError(
                BACKEND, "redis_url", f"not a Redis server or unexpected reply ({_describe(e)})"
            ) from None
        # From now on ride out short outages (a restart, a dropped connection) with quick retries;
        # longer ones surface as ConnectionError to the app loop, which logs them and keeps polling.
        client.set_retry(Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3))
        repository = RedisRepository(client, namespace=namespace, batch_size=batch_size)
        await repository._scripts.preload(client)
        yield repository
