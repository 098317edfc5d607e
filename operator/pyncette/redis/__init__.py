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
A batch that met entries this worker cannot load (quarantine, see ``pyncette.repository.kit``)
takes one more EVALSHA (park.lua) handing them over to the PARKED marker.
``commit_executions``, ``unlock_executions``, ``extend_leases`` and ``register_tasks`` are one
EVALSHA per batch. Scripts are cached server-side (EVALSHA, reloaded on NOSCRIPT, e.g. after a
server restart). Connection errors are retried by redis-py and then surface to the app loop, which
retries the poll; the pool reconnects on its own.

Deadlines: ``redis_timeout`` (default: the app's ``backend_timeout``, 10 s) is redis-py's socket
timeout for connecting and for every reply. A reply that does not come in time, or a call the app
cancels at its own deadline, makes redis-py disconnect that connection (it never reuses one whose
reply is pending), so the next call reconnects.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import uuid
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

import redis.exceptions
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.backoff import NoBackoff

from pyncette.deadline import backend_timeout_seconds
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
from pyncette.repository.kit import UNKNOWN_TIME
from pyncette.repository.kit import BatchRepository
from pyncette.repository.kit import TokenLease
from pyncette.repository.kit import held
from pyncette.repository.kit import leased
from pyncette.repository.kit import next_time
from pyncette.repository.kit import one_line
from pyncette.repository.kit import positive_int
from pyncette.repository.kit import required
from pyncette.repository.kit import setting
from pyncette.repository.kit import stored_time
from pyncette.repository.kit import to_commit
from pyncette.repository.kit import token_of
from pyncette.repository.kit import unleased
from pyncette.task import Task
from pyncette.task import spec_text

logger = logging.getLogger(__name__)

BACKEND = "redis"
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)


def _to_us(when: datetime.datetime) -> int:
    return (when - _EPOCH) // _MICROSECOND


def _from_us(value: bytes | str | int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(0, 0, int(value))


def _report_lost(committed: Sequence[tuple[LeasedExecution, bool, datetime.datetime | None]]) -> None:
    """Logs the executions a commit did not move: their leases were no longer theirs."""
    for execution, done, _ in committed:
        if not done:
            logger.info("Not committing %s: the lease was lost", execution.task)


def _wire(text: str) -> str | bytes:
    """A key or member as stored: a name read back from bytes that are not UTF-8 (see ``_text``)
    goes back as those bytes, so such an entry can still be read and removed by its listed name."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return text


def _text(value: bytes | str) -> str:
    """A stored string as text; bytes that are not UTF-8 (written by something else than pyncette)
    are kept as lone surrogates, so one such value spoils its own row, not a whole reply."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _is_text(value: str) -> bool:
    """False for a string holding bytes that were not UTF-8 (see ``_text``)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _key_prefix(namespace: str) -> str:
    # Doubling colons keeps "a" + ":e:x" apart from the namespace "a:e" + ":x".
    return f"pyncette:{namespace.replace(':', '::')}:"


# The lease type of this backend is the kit's (its token is stored in ``lb``).
RedisLease = TokenLease


def commit_lease_source(source: Callable[[str], str]) -> str:
    """commit_lease.lua as it runs: commit.lua and lease.lua, each wrapped as a function of its own
    KEYS and ARGV, ahead of commit_lease.lua itself (``source(name)``: the text of ``name``.lua)."""
    return (
        f"local function commit(KEYS, ARGV)\n{source('commit')}\nend\n"
        f"local function lease(KEYS, ARGV)\n{source('lease')}\nend\n"
        f"{source('commit_lease')}"
    )


class _Scripts:
    """The Lua scripts, read from the package and bound to one client (EVALSHA, NOSCRIPT reload)."""

    def __init__(self, client: aioredis.Redis) -> None:
        def source(name: str) -> str:
            return files(__name__).joinpath(f"{name}.lua").read_text("utf-8")

        def load(name: str) -> Any:
            return client.register_script(source(name))

        self.lease = load("lease")
        self.commit = load("commit")
        self.commit_lease = client.register_script(commit_lease_source(source))
        self.unlock = load("unlock")
        self.extend = load("extend")
        self.register = load("register")
        self.poll = load("poll")
        self.list = load("list")
        self.park = load("park")

    async def preload(self, client: aioredis.Redis) -> None:
        """Loads every script once up front, so the first call of each is a plain EVALSHA."""
        scripts = (
            self.lease,
            self.commit,
            self.commit_lease,
            self.unlock,
            self.extend,
            self.register,
            self.poll,
            self.list,
            self.park,
        )
        for script in scripts:
            await client.script_load(script.script)


class RedisRepository(BatchRepository):
    """Task state of one app (one namespace) on a Redis server."""

    backend_name = BACKEND

    def __init__(self, client: aioredis.Redis, *, namespace: str = "", batch_size: int = 100) -> None:
        super().__init__(batch_size=batch_size)
        self._client = client
        self._prefix = _key_prefix(namespace)
        self._scripts = _Scripts(client)

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
        keys, args, fresh, token = self._lease_request(utc_now, tasks, limit)
        header, specs = await self._scripts.lease(keys=keys, args=args)
        return await self._leased(utc_now, tasks, fresh, token, header, specs)

    commits_with_lease = True

    async def commit_and_lease_due(
        self,
        utc_now: datetime.datetime,
        commits: Sequence[LeasedExecution],
        tasks: Sequence[Task],
        *,
        limit: int,
    ) -> LeaseBatch:
        """commit.lua and lease.lua in one script call: one round trip where the main loop made two."""
        request = self._commit_request(utc_now, to_commit(commits))
        if not tasks or limit < 1 or request is None:  # nothing to combine: the two calls in turn
            return await super().commit_and_lease_due(utc_now, commits, tasks, limit=limit)
        commit_keys, commit_args, movable, leases = request
        keys, args, fresh, token = self._lease_request(utc_now, tasks, limit)
        header, specs, flags = await self._scripts.commit_lease(
            keys=[*keys, *commit_keys], args=[len(keys), len(args), *args, *commit_args]
        )
        if len(movable) != len(leases) or "0" in _text(flags):  # else every one was committed
            _report_lost(self._committed(movable, leases, flags))
        return await self._leased(utc_now, tasks, fresh, token, header, specs)

    def _lease_request(
        self, utc_now: datetime.datetime, tasks: Sequence[Task], limit: int
    ) -> tuple[list[str], list[Any], list[tuple[Task, datetime.datetime]], str]:
        """lease.lua's keys and arguments, the static entries it creates, and the lease token."""
        now_us = _to_us(utc_now)
        token = uuid.uuid4().hex
        args: list[Any] = [self._prefix, now_us, limit, token]
        fresh = self.statics.due_for_creation(utc_now, tasks)
        firsts = {task.canonical_name: first for task, first in fresh}
        for task in tasks:
            static_name = "" if task.dynamic else task.canonical_name
            first = firsts.get(static_name)
            initial = str(_to_us(first)) if first is not None else ""
            args += [static_name, initial, task.lease_duration // _MICROSECOND]
        return [self._index_key(t) for t in tasks], args, fresh, token

    async def _leased(
        self,
        utc_now: datetime.datetime,
        tasks: Sequence[Task],
        fresh: list[tuple[Task, datetime.datetime]],
        token: str,
        header: bytes | str,
        specs: bytes | str,
    ) -> LeaseBatch:
        """The batch lease.lua answered (quarantined rows parked, AT_MOST_ONCE rows moved forward)."""
        self.statics.created(task for task, _ in fresh)
        try:
            has_more, next_due, missing, rows = json.loads(header)
            mangled = False
        except UnicodeDecodeError:  # a name or time that is not UTF-8 text: only its row is quarantined
            has_more, next_due, missing, rows = json.loads(_text(header))
            mangled = True
        specs = specs if isinstance(specs, bytes) else specs.encode()  # lengths are in bytes
        for index in missing:
            # The entry of a static task vanished (e.g. flushed): create it again on the next poll.
            self.statics.forget(tasks[int(index) - 1].canonical_name)

        batch = LeaseBatch(has_more=bool(int(has_more)), next_due_at=_from_us(next_due) if next_due else None)
        at_most_once: list[LeasedExecution] = []
        parked: list[str] = []
        offset = 0
        times: dict[str, tuple[datetime.datetime | None, str | None]] = {}  # rows due together share a time
        for index, name, execute_after, length in rows:
            owner = tasks[index - 1]
            spec: str | None = None
            if length >= 0:
                raw = specs[offset : offset + length]
                offset += length
                try:
                    spec = raw.decode()
                except UnicodeDecodeError:
                    self.entries.report(name, raw, "its stored spec is not UTF-8 text")
                    parked.append(name)  # quarantined: leased by the script, not run
                    continue
            if mangled and not (_is_text(name) and _is_text(execute_after)):
                self.entries.report(name, execute_after, "its stored name or time is not UTF-8 text")
                parked.append(name)
                continue
            parsed = times.get(execute_after)
            if parsed is None:
                parsed = times[execute_after] = stored_time(_from_us, execute_after)
            scheduled_at, why = parsed
            if scheduled_at is None:
                self.entries.report(name, execute_after, why or "")
                parked.append(name)  # quarantined likewise
                continue
            concrete = self.entries.load(owner, name, spec) if owner.dynamic else owner
            if concrete is None:
                parked.append(name)  # quarantined likewise
                continue
            execution = leased(concrete, scheduled_at, token)
            if concrete.execution_mode == ExecutionMode.AT_MOST_ONCE:
                at_most_once.append(execution)
            else:
                batch.executions.append(execution)

        if parked:  # one more call, only when a batch met a quarantined entry
            names = [name.encode("utf-8", "surrogateescape") for name in parked] if mangled else parked
            await self._scripts.park(args=[self._prefix, token, PARKED, *names])
        if at_most_once:
            committed = await self._commit(utc_now, held(at_most_once))
            for execution, done, next_at in committed:
                if done:
                    batch.executions.append(unleased(execution.task, execution.scheduled_at))
                    if next_at is not None and (batch.next_due_at is None or next_at < batch.next_due_at):
                        batch.next_due_at = next_at
        return batch

    async def _commit(
        self, utc_now: datetime.datetime, leases: Sequence[tuple[LeasedExecution, str]]
    ) -> list[tuple[LeasedExecution, bool, datetime.datetime | None]]:
        """Moves leased entries (with their lease tokens) to their next time in one call; reports
        which leases were still held.

        An entry whose next time cannot be computed is left leased (``kit.next_time``): not done."""
        request = self._commit_request(utc_now, leases)
        if request is None:
            return [(e, False, None) for e, _ in leases]
        keys, args, movable, _ = request
        flags = await self._scripts.commit(keys=keys, args=args)
        return self._committed(movable, leases, flags)

    def _commit_request(
        self, utc_now: datetime.datetime, leases: Sequence[tuple[LeasedExecution, str]]
    ) -> (
        tuple[
            list[str],
            list[Any],
            list[tuple[LeasedExecution, datetime.datetime | None]],
            Sequence[tuple[LeasedExecution, str]],
        ]
        | None
    ):
        """commit.lua's keys and arguments for ``leases``, and the entries it moves; None if none can move."""
        keys: dict[str, int] = {}
        key_of: dict[int, int] = {}  # id(owner) -> its key number, so each key is built once per call
        items: list[list[Any]] = []
        movable: list[tuple[LeasedExecution, datetime.datetime | None]] = []
        for execution, token in leases:
            ok, next_at = next_time(execution.task, utc_now, execution.scheduled_at)
            if not ok:
                continue
            movable.append((execution, next_at))
            owner = self._owner(execution.task)
            key = key_of.get(id(owner))
            if key is None:
                key = key_of[id(owner)] = keys.setdefault(self._index_key(owner), len(keys) + 1)
            next_text = str(_to_us(next_at)) if next_at is not None else ""
            items.append([key, execution.task.canonical_name, token, next_text])
        if not items:
            return None
        return list(keys), [self._prefix, json.dumps(items)], movable, leases

    @staticmethod
    def _committed(
        movable: list[tuple[LeasedExecution, datetime.datetime | None]],
        leases: Sequence[tuple[LeasedExecution, str]],
        flags: bytes | str,
    ) -> list[tuple[LeasedExecution, bool, datetime.datetime | None]]:
        """Each lease with whether commit.lua moved its entry (its flag) and the entry's next time."""
        done = {id(e): (f == "1", n) for (e, n), f in zip(movable, _text(flags), strict=True)}
        return [(e, *done.get(id(e), (False, None))) for e, _ in leases]

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        leases = to_commit(executions)
        if not leases:
            return
        _report_lost(await self._commit(utc_now, leases))

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        leases = held(executions)
        if not leases:
            return
        args: list[Any] = [self._prefix]
        for execution, token in leases:
            args += [execution.task.canonical_name, token]
        await self._scripts.unlock(keys=[self._index_key(self._owner(e.task)) for e, _ in leases], args=args)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        leases = [(i, e, token) for i, e in enumerate(executions) if (token := token_of(e.lease))]
        results: list[Lease | None] = [None] * len(executions)
        if not leases:
            return results
        args: list[Any] = [self._prefix]
        for _, execution, token in leases:
            args += [execution.task.canonical_name, token, _to_us(utc_now + execution.task.lease_duration)]
        keys = [self._index_key(self._owner(e.task)) for _, e, _ in leases]
        flags = await self._scripts.extend(keys=keys, args=args)
        for (i, execution, _), flag in zip(leases, flags, strict=True):
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
            spec = spec_text(task)
            args += [
                task.canonical_name,
                _to_us(first) if first is not None else "",
                spec,
                task.lease_duration // _MICROSECOND,
            ]
        locked = await self._scripts.register(keys=keys, args=[*args, PARKED])
        if locked:
            index, locked_until = locked
            raise TaskLockedException(pending[int(index) - 1], _from_us(locked_until))

    # ---- pyncette 1.x single-entry protocol ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        owner = self._owner(task)
        name = _wire(task.canonical_name)
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(_wire(self._entry_key(task)))
            pipe.zrem(self._index_key(owner), name)
            pipe.zrem(self._names_key(owner), name)
            await pipe.execute()

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        # The LOCKED/PENDING/READY decision of ``kit.plan_poll`` is made inside poll.lua, where reading
        # and leasing the entry are one atomic step; AT_MOST_ONCE is then moved forward by _commit.
        held_token = token_of(lease)
        initial = ""
        if task.parent_task is None:
            created = self.statics.due_for_creation(utc_now, [task])
            initial = str(_to_us(created[0][1])) if created else ""
        result, execute_after, token = await self._scripts.poll(
            keys=[self._index_key(self._owner(task))],
            args=[
                self._prefix,
                task.canonical_name,
                _to_us(utc_now),
                initial,
                held_token or "",
                uuid.uuid4().hex,
                task.lease_duration // _MICROSECOND,
            ],
        )
        outcome = ResultType[_text(result)]
        if outcome == ResultType.MISSING:
            raise self.instance_not_found(task)
        scheduled_at = _from_us(execute_after)
        if outcome != ResultType.READY:
            return PollResponse(outcome, scheduled_at, None)
        execution = LeasedExecution(task, scheduled_at, Lease(TokenLease(_text(token), scheduled_at)))
        if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            [(_, done, _)] = await self._commit(utc_now, [(execution, _text(token))])
            return PollResponse(ResultType.READY if done else ResultType.LOCKED, scheduled_at, None)
        return PollResponse(outcome, scheduled_at, execution.lease)

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        execute_after, locked_until, locked_by, spec = await self._client.hmget(
            _wire(self._entry_key(task)), ["ea", "lu", "lb", "spec"]
        )
        if execute_after is None:
            return None
        return self._state(task.parent_task, task.canonical_name, execute_after, locked_until, locked_by, spec, task)

    def _state(
        self,
        template: Task | None,
        name: str,
        execute_after: Any,
        locked_until: Any,
        locked_by: Any,
        spec: Any,
        known: Task | None,
    ) -> TaskState:
        """The state of a stored entry (an instance of ``template``, or the static task ``known``);
        a time or spec that cannot be read is listed with ``problem`` set."""
        scheduled_at, why = stored_time(_from_us, execute_after)
        until, until_why = stored_time(_from_us, locked_until) if locked_until else (None, None)
        why = why or until_why
        if template is not None:
            try:
                text = _text(spec) if spec else None
            except UnicodeDecodeError:
                text, why = None, why or "its stored spec is not UTF-8 text"
            return self.entries.state(
                template,
                name,
                text,
                scheduled_at=scheduled_at or UNKNOWN_TIME,
                locked_until=until,
                locked_by=_text(locked_by) if locked_by else None,
                known=known,
                problem=why,
            )
        assert known is not None
        return TaskState(
            task=known,
            scheduled_at=scheduled_at or UNKNOWN_TIME,
            locked_until=until,
            locked_by=_text(locked_by) if locked_by else None,
            problem=why,
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
            self._state(parent_task, _text(name), execute_after, locked_until, locked_by, spec, None)
            for name, execute_after, locked_until, locked_by, spec in rows
        ]
        token = ContinuationToken(_text(rows[-1][0])) if int(has_more) and rows else None
        return ListTasksResponse(tasks=states, continuation_token=token)


# ---- configuration ----


@contextlib.asynccontextmanager
async def redis_repository(**kwargs: Any) -> AsyncIterator[RedisRepository]:
    """Connects to Redis and yields a repository; the connection pool closes on exit.

    Keywords: ``redis_url`` (required, e.g. ``redis://localhost:6379/0``), ``redis_namespace``
    (default ``""``: isolates apps sharing one server), ``redis_timeout`` (seconds for connecting and
    for each command, default the app's ``backend_timeout``, 10 s), ``batch_size`` (default 100: page
    size of ``poll_dynamic_task`` and ``list_task_states``). Bad settings or an unreachable server raise
    ``BackendConfigurationError`` before anything is yielded.
    """
    url = required(BACKEND, kwargs, "redis_url", "redis://localhost:6379/0")
    if not isinstance(url, str):
        raise BackendConfigurationError(BACKEND, "redis_url", f"expected a redis:// URL, got {url!r}")
    namespace = setting(BACKEND, kwargs, "redis_namespace", str, "")
    timeout = setting(BACKEND, kwargs, "redis_timeout", (int, float), backend_timeout_seconds(kwargs))
    if timeout <= 0:
        raise BackendConfigurationError(BACKEND, "redis_timeout", f"must be positive, got {timeout!r}")
    batch_size = positive_int(BACKEND, kwargs, "batch_size", 100)

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
        raise BackendConfigurationError(BACKEND, "redis_url", one_line(e)) from None

    async with client:
        try:
            # A bad address or password fails here, at start-up, as one line rather than a driver traceback.
            await client.ping()
        except redis.exceptions.AuthenticationError as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"authentication failed ({one_line(e)})") from None
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"cannot connect ({one_line(e)})") from None
        except redis.exceptions.ResponseError as e:
            raise BackendConfigurationError(BACKEND, "redis_url", f"server refused ({one_line(e)})") from None
        except redis.exceptions.RedisError as e:
            raise BackendConfigurationError(
                BACKEND, "redis_url", f"not a Redis server or unexpected reply ({one_line(e)})"
            ) from None
        # From now on ride out short outages (a restart, a dropped connection) with quick retries;
        # longer ones surface as ConnectionError to the app loop, which logs them and keeps polling.
        client.set_retry(Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3))
        repository = RedisRepository(client, namespace=namespace, batch_size=batch_size)
        await repository._scripts.preload(client)
        yield repository
