"""Amazon DynamoDB backend (aioboto3): one item per entry, leased with concurrent conditional writes.

Layout (the seed's table schema, unchanged): ``partition_id`` (hash key) is
``<prefix>:<template>`` for the instances of a dynamic task (each partition of a partitioned task is
its own template, so partitions land on different DynamoDB partitions) and ``<prefix>:<task>`` for
a static task; ``task_id`` (range key) is the canonical name. The local secondary index ``ready_at``
sorts a partition by ``"<due time>_<task_id>"``, where the due time is the later of the schedule
and the lease end, as fixed-width UTC ISO-8601 text (so text order is time order). ``version``
counts writes for optimistic concurrency. ``dynamodb_partition_prefix`` lets independent apps share
one table.

The trade-off: DynamoDB cannot lease many items atomically in one request (``TransactWriteItems``
is all-or-nothing, so one contended item would fail the whole batch). A batch lease is therefore
two *rounds* of requests rather than one request: first one strongly consistent ``Query`` of the
index per polled template (earliest first, ``limit + 1`` items, which also yields ``has_more`` and
``next_due_at``) plus one ``BatchGetItem`` for all static tasks, issued concurrently; then one
conditional ``UpdateItem`` per chosen item (``version`` unchanged), also issued concurrently. A
batch costs about two round-trip latencies and ``templates + 1 + n`` requests (and write capacity
units), not ``n`` sequential round trips; an item another worker took first fails its condition
and is simply not returned. Commits, unlocks and lease extensions are one conditional write per
execution (condition: ``locked_by`` is still our lease), all issued at once.

The client retries throttling and connection errors (botocore's standard mode), and reconnects by
itself after the endpoint restarts. If the table disappears while running (e.g. an in-memory local
endpoint was restarted) and table creation is not skipped, it is created again and static tasks
are re-created; dynamic instances stored in the lost table are, of course, gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
import uuid
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Sequence
from typing import Any

import aioboto3
import botocore.exceptions
from botocore.config import Config

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
from pyncette.model import ResultType
from pyncette.model import TaskState
from pyncette.repository.kit import PARKED
from pyncette.repository.kit import UNKNOWN_TIME
from pyncette.repository.kit import BatchRepository
from pyncette.repository.kit import TokenLease
from pyncette.repository.kit import held
from pyncette.repository.kit import next_time
from pyncette.repository.kit import plan_poll
from pyncette.repository.kit import positive_int
from pyncette.repository.kit import required
from pyncette.repository.kit import stored_time
from pyncette.repository.kit import table_name as checked_table_name
from pyncette.repository.kit import to_commit
from pyncette.repository.kit import token_of
from pyncette.task import Task
from pyncette.task import spec_text

logger = logging.getLogger(__name__)

BACKEND = "dynamodb"
DEFAULT_BATCH_SIZE = 100
INDEX_NAME = "ready_at"
#: Optimistic-concurrency attempts for one item before giving up.
_ATTEMPTS = 5
#: Concurrent HTTP connections to DynamoDB (a batch issues one write per item at once).
_MAX_CONNECTIONS = 32
_BATCH_GET_LIMIT = 100
_SAFE_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_CONDITION_FAILED = "ConditionalCheckFailedException"
_TABLE_MISSING = "ResourceNotFoundException"


def _time(when: datetime.datetime) -> str:
    """Fixed-width UTC ISO-8601 with microseconds: text order is time order."""
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _parse(text: str | None) -> datetime.datetime | None:
    return datetime.datetime.fromisoformat(text) if text else None


def _parse_required(text: str | None) -> datetime.datetime:
    if not text:
        raise ValueError("no time stored")
    return datetime.datetime.fromisoformat(text)


def _quarantined(item: _Item | None) -> bool:
    """Parked by a worker that could not load it, or holding a time that cannot be read: nobody's
    lease, so registering it again replaces it as ``force`` would."""
    return item is not None and (item.locked_by == PARKED or item.problem is not None)


def _error_code(error: BaseException) -> str | None:
    if isinstance(error, botocore.exceptions.ClientError):
        code: str = error.response.get("Error", {}).get("Code", "")
        return code
    return None


class _Item:
    """A stored entry, decoded from DynamoDB's attribute-value format."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.partition_id: str = raw["partition_id"]["S"]
        self.task_id: str = raw["task_id"]["S"]
        # Times are text here, so a hand edit can spoil them: such an item is quarantined (``problem``).
        self.execute_after, problem = stored_time(_parse_required, raw.get("execute_after", {}).get("S"))
        self.locked_until, until_problem = stored_time(_parse, raw.get("locked_until", {}).get("S"))
        self.problem: str | None = problem or until_problem
        self.locked_by: str | None = raw.get("locked_by", {}).get("S")
        self.task_spec: str | None = raw.get("task_spec", {}).get("S")
        self.version = int(raw.get("version", {}).get("N", "0"))

    @property
    def due_at(self) -> datetime.datetime:
        assert self.execute_after is not None
        if self.locked_until is not None and self.locked_until > self.execute_after:
            return self.locked_until
        return self.execute_after


class DynamoDBRepository(BatchRepository):
    """Task state in one DynamoDB table, shared by every process of an app."""

    backend_name = BACKEND

    def __init__(
        self,
        client: Any,
        *,
        table_name: str,
        partition_prefix: str,
        batch_size: int,
        skip_table_create: bool,
    ) -> None:
        super().__init__(batch_size=batch_size)
        self._client = client
        self._table = table_name
        self._prefix = partition_prefix.replace(":", "::")
        self._skip_table_create = skip_table_create
        self._recreate_lock = asyncio.Lock()

    # ---- table ----

    async def initialize(self) -> None:
        """Checks that the table exists, creating it with the seed's schema unless told not to."""
        try:
            await self._client.describe_table(TableName=self._table)
            return
        except botocore.exceptions.ClientError as error:
            if _error_code(error) != _TABLE_MISSING:
                raise
        if self._skip_table_create:
            raise BackendConfigurationError(
                BACKEND,
                "dynamodb_table_name",
                f"table {self._table!r} does not exist (dynamodb_skip_table_create=True)",
            )
        await self._create_table()

    async def _create_table(self) -> None:
        logger.info("dynamodb: creating table %s", self._table)
        try:
            await self._client.create_table(
                TableName=self._table,
                AttributeDefinitions=[
                    {"AttributeName": "partition_id", "AttributeType": "S"},
                    {"AttributeName": "ready_at", "AttributeType": "S"},
                    {"AttributeName": "task_id", "AttributeType": "S"},
                ],
                KeySchema=[
                    {"AttributeName": "partition_id", "KeyType": "HASH"},
                    {"AttributeName": "task_id", "KeyType": "RANGE"},
                ],
                LocalSecondaryIndexes=[
                    {
                        "IndexName": INDEX_NAME,
                        "KeySchema": [
                            {"AttributeName": "partition_id", "KeyType": "HASH"},
                            {"AttributeName": "ready_at", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        except botocore.exceptions.ClientError as error:
            if _error_code(error) != "ResourceInUseException":  # created by another process meanwhile
                raise
        waiter = self._client.get_waiter("table_exists")
        await waiter.wait(TableName=self._table, WaiterConfig={"Delay": 1, "MaxAttempts": 120})

    async def _table_call(self, call: Awaitable[Any]) -> Any:
        """Awaits a request; when the table vanished, re-creates it (if allowed) before re-raising."""
        try:
            return await call
        except botocore.exceptions.ClientError as error:
            if _error_code(error) == _TABLE_MISSING and not self._skip_table_create:
                async with self._recreate_lock:
                    logger.warning("dynamodb: table %s is gone; creating it again", self._table)
                    self.statics.clear()
                    await self._create_table()
            raise

    async def check_health(self) -> None:
        await self._client.describe_table(TableName=self._table)

    # ---- keys and items ----

    def _partition(self, task: Task) -> str:
        group = task.parent_task if task.parent_task is not None else task
        return f"{self._prefix}:{group.canonical_name}"

    def _key(self, task: Task) -> dict[str, Any]:
        return {"partition_id": {"S": self._partition(task)}, "task_id": {"S": task.canonical_name}}

    @staticmethod
    def _ready_at(due: datetime.datetime, task_id: str) -> dict[str, str]:
        return {"S": f"{_time(due)}_{task_id}"}

    async def _update(self, **request: Any) -> bool:
        """A conditional write; False when its condition failed."""
        try:
            await self._table_call(self._client.update_item(TableName=self._table, **request))
        except botocore.exceptions.ClientError as error:
            if _error_code(error) == _CONDITION_FAILED:
                return False
            raise
        return True

    async def _delete(self, **request: Any) -> bool:
        try:
            await self._table_call(self._client.delete_item(TableName=self._table, **request))
        except botocore.exceptions.ClientError as error:
            if _error_code(error) == _CONDITION_FAILED:
                return False
            raise
        return True

    async def _get(self, task: Task) -> _Item | None:
        response = await self._table_call(
            self._client.get_item(TableName=self._table, Key=self._key(task), ConsistentRead=True)
        )
        return _Item(response["Item"]) if "Item" in response else None

    async def _batch_get(self, tasks: Sequence[Task]) -> dict[str, _Item]:
        """Items by task_id, strongly consistent, in as few BatchGetItem calls as allowed."""
        found: dict[str, _Item] = {}

        async def chunk(keys: list[dict[str, Any]]) -> None:
            pending: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while pending:
                response = await self._table_call(self._client.batch_get_item(RequestItems=pending))
                for raw in response.get("Responses", {}).get(self._table, []):
                    item = _Item(raw)
                    found[item.task_id] = item
                pending = response.get("UnprocessedKeys") or {}

        unique = {task.canonical_name: task for task in tasks}
        keys = [self._key(task) for task in unique.values()]
        await asyncio.gather(*(chunk(keys[i : i + _BATCH_GET_LIMIT]) for i in range(0, len(keys), _BATCH_GET_LIMIT)))
        return found

    def _state(self, task: Task, item: _Item, template: Task | None = None) -> TaskState:
        """The state of an item; with ``template``, of an instance rebuilt from its spec (quarantine aware)."""
        scheduled_at = item.execute_after or UNKNOWN_TIME
        if template is not None:
            return self.entries.state(
                template,
                item.task_id,
                item.task_spec,
                scheduled_at=scheduled_at,
                locked_until=item.locked_until,
                locked_by=item.locked_by,
                known=task if task is not template else None,
                problem=item.problem,
            )
        return TaskState(
            task=task,
            scheduled_at=scheduled_at,
            locked_until=item.locked_until,
            locked_by=item.locked_by,
            problem=item.problem,
        )

    # ---- leasing ----

    async def _create_static(self, utc_now: datetime.datetime, statics: Sequence[Task]) -> None:
        """Creates the entries of static tasks seen for the first time (kept if they exist)."""

        async def create(task: Task, first: datetime.datetime) -> None:
            try:
                await self._table_call(
                    self._client.put_item(
                        TableName=self._table,
                        Item={
                            **self._key(task),
                            "execute_after": {"S": _time(first)},
                            "ready_at": self._ready_at(first, task.canonical_name),
                            "version": {"N": "0"},
                        },
                        ConditionExpression="attribute_not_exists(partition_id)",
                    )
                )
            except botocore.exceptions.ClientError as error:
                if _error_code(error) != _CONDITION_FAILED:
                    raise

        fresh = self.statics.due_for_creation(utc_now, statics)
        await asyncio.gather(*(create(task, first) for task, first in fresh))
        self.statics.created(task for task, _ in fresh)

    async def _query_due(self, template: Task, limit: int) -> list[_Item]:
        """The first ``limit`` items of a template's partition in due order (due or not)."""
        response = await self._table_call(
            self._client.query(
                TableName=self._table,
                IndexName=INDEX_NAME,
                KeyConditionExpression="partition_id = :p",
                ExpressionAttributeValues={":p": {"S": f"{self._prefix}:{template.canonical_name}"}},
                ConsistentRead=True,
                Limit=limit,
            )
        )
        return [_Item(raw) for raw in response.get("Items", [])]

    async def _claim(self, utc_now: datetime.datetime, task: Task, item: _Item, token: str) -> LeasedExecution | None:
        """Leases (or, AT_MOST_ONCE, moves forward) one item read at ``item.version``."""
        scheduled_at = item.execute_after
        assert scheduled_at is not None
        condition = {
            "ConditionExpression": "version = :v",
            "Key": self._key(task),
        }
        values: dict[str, Any] = {":v": {"N": str(item.version)}, ":one": {"N": "1"}}
        if task.execution_mode == ExecutionMode.AT_MOST_ONCE:
            ok, following = next_time(task, utc_now, scheduled_at)
            if not ok:
                await self._park(utc_now, item, task.lease_duration, token)
                return None
            if following is None:
                done = await self._delete(ExpressionAttributeValues={":v": values[":v"]}, **condition)
            else:
                done = await self._update(
                    UpdateExpression="SET execute_after = :e, ready_at = :r, version = version + :one "
                    "REMOVE locked_by, locked_until",
                    ExpressionAttributeValues={
                        **values,
                        ":e": {"S": _time(following)},
                        ":r": self._ready_at(following, task.canonical_name),
                    },
                    **condition,
                )
            return LeasedExecution(task, scheduled_at, None) if done else None
        until = utc_now + task.lease_duration
        done = await self._update(
            UpdateExpression="SET locked_by = :l, locked_until = :u, ready_at = :r, version = version + :one",
            ExpressionAttributeValues={
                **values,
                ":l": {"S": token},
                ":u": {"S": _time(until)},
                ":r": self._ready_at(max(until, scheduled_at), task.canonical_name),
            },
            **condition,
        )
        return LeasedExecution(task, scheduled_at, Lease(TokenLease(token, scheduled_at))) if done else None

    async def _park(self, utc_now: datetime.datetime, item: _Item, duration: datetime.timedelta, token: str) -> None:
        """Leases an item that will not run (see ``kit.EntryLoader``); None for the batch."""
        until = utc_now + duration
        await self._update(
            Key={"partition_id": {"S": item.partition_id}, "task_id": {"S": item.task_id}},
            UpdateExpression="SET locked_by = :l, locked_until = :u, ready_at = :r, version = version + :one",
            ConditionExpression="version = :v",
            ExpressionAttributeValues={
                ":v": {"N": str(item.version)},
                ":one": {"N": "1"},
                ":l": {"S": token},
                ":u": {"S": _time(until)},
                ":r": self._ready_at(max(until, item.execute_after or until), item.task_id),
            },
        )
        return None

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        batch = LeaseBatch()
        statics = [task for task in tasks if not task.dynamic]
        templates = {task.canonical_name: task for task in tasks if task.dynamic}
        if limit < 1 or not (statics or templates):
            return batch
        await self._create_static(utc_now, statics)

        # Round 1: every read at once.
        queries = asyncio.gather(*(self._query_due(template, limit + 1) for template in templates.values()))
        static_items, template_items = await asyncio.gather(self._batch_get(statics), queries)
        candidates: list[tuple[datetime.datetime, Task | None, Task, _Item]] = []
        later: list[datetime.datetime] = []
        unreadable: list[tuple[Task, _Item]] = []
        for task in statics:
            item = static_items.get(task.canonical_name)
            if item is None:
                continue
            if item.problem is not None:
                unreadable.append((task, item))
                continue
            if item.due_at <= utc_now:
                candidates.append((item.due_at, None, task, item))
            else:
                later.append(item.due_at)
        for template, items in zip(templates.values(), template_items, strict=True):
            for item in items:
                if item.problem is not None:
                    unreadable.append((template, item))
                    continue
                if item.due_at <= utc_now:
                    candidates.append((item.due_at, template, template, item))
                else:
                    later.append(item.due_at)
                    break  # due order: nothing after this one is due
        candidates.sort(key=lambda candidate: candidate[0])
        batch.has_more = len(candidates) > limit

        # Round 2: every conditional write at once.
        token = uuid.uuid4().hex
        claims: list[Awaitable[LeasedExecution | None]] = []
        for owner_task, item in unreadable:
            # A time that cannot be read: reported once and parked like an unloadable spec.
            self.entries.report(item.task_id, item.problem, item.problem or "")
            claims.append(self._park(utc_now, item, owner_task.lease_duration, PARKED))
        for _, owner, static, item in candidates[:limit]:
            concrete = static if owner is None else self.entries.load(owner, item.task_id, item.task_spec)
            if concrete is None:
                # Quarantined: leased ("parked") so it is not read again before the lease ends.
                claims.append(self._park(utc_now, item, static.lease_duration, PARKED))
            else:
                claims.append(self._claim(utc_now, concrete, item, token))
        for result in await asyncio.gather(*claims):
            if result is not None:
                batch.executions.append(result)
        if not batch.has_more and later:
            batch.next_due_at = min(later)
        return batch

    # ---- finishing ----

    async def _commit_one(self, utc_now: datetime.datetime, execution: LeasedExecution) -> None:
        task, lease = execution.task, execution.lease
        ok, following = next_time(task, utc_now, execution.scheduled_at)
        if not ok:
            return
        values: dict[str, Any] = {":l": {"S": str(lease)}}
        if following is None:
            done = await self._delete(
                Key=self._key(task), ConditionExpression="locked_by = :l", ExpressionAttributeValues=values
            )
        else:
            done = await self._update(
                Key=self._key(task),
                UpdateExpression="SET execute_after = :e, ready_at = :r, version = version + :one "
                "REMOVE locked_by, locked_until",
                ConditionExpression="locked_by = :l",
                ExpressionAttributeValues={
                    **values,
                    ":one": {"N": "1"},
                    ":e": {"S": _time(following)},
                    ":r": self._ready_at(following, task.canonical_name),
                },
            )
        if not done:
            logger.warning("dynamodb: lease lost on %s; not committing", task.canonical_name)

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        await asyncio.gather(*(self._commit_one(utc_now, e) for e, _ in to_commit(executions)))

    async def _relock(self, execution: LeasedExecution, locked_until: datetime.datetime | None) -> bool:
        """Sets (or, with None, clears) the lease end of an entry we hold; False if the lease is lost.

        ``ready_at`` depends on the stored ``execute_after``; it is normally ``scheduled_at``, and if
        it was changed meanwhile (re-registered sooner) the item is read and written again.
        """
        task, lease = execution.task, str(execution.lease)
        execute_after = execution.scheduled_at
        for _ in range(_ATTEMPTS):
            due = execute_after if locked_until is None else max(execute_after, locked_until)
            values: dict[str, Any] = {
                ":l": {"S": lease},
                ":e": {"S": _time(execute_after)},
                ":r": self._ready_at(due, task.canonical_name),
                ":one": {"N": "1"},
            }
            if locked_until is None:
                expression = "SET ready_at = :r, version = version + :one REMOVE locked_by, locked_until"
            else:
                expression = "SET locked_until = :u, ready_at = :r, version = version + :one"
                values[":u"] = {"S": _time(locked_until)}
            if await self._update(
                Key=self._key(task),
                UpdateExpression=expression,
                ConditionExpression="locked_by = :l AND execute_after = :e",
                ExpressionAttributeValues=values,
            ):
                return True
            item = await self._get(task)
            if item is None or item.locked_by != lease or item.execute_after is None:
                return False
            execute_after = item.execute_after
        raise PyncetteException(f"Unable to update the lease on {task.canonical_name} due to contention")

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        await asyncio.gather(*(self._relock(e, None) for e, _ in held(executions)))

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        async def extend(execution: LeasedExecution) -> Lease | None:
            if token_of(execution.lease) is None:
                return None
            kept = await self._relock(execution, utc_now + execution.task.lease_duration)
            return execution.lease if kept else None

        return list(await asyncio.gather(*(extend(e) for e in executions)))

    # ---- registration ----

    async def _register_one(
        self, utc_now: datetime.datetime, task: Task, item: _Item | None, *, force: bool, read: bool
    ) -> None:
        first = task.get_next_execution(utc_now, None)
        if first is None:
            await self._table_call(self._client.delete_item(TableName=self._table, Key=self._key(task)))
            return
        spec = {"S": spec_text(task)}
        if force:
            await self._table_call(
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        **self._key(task),
                        "task_spec": spec,
                        "execute_after": {"S": _time(first)},
                        "ready_at": self._ready_at(first, task.canonical_name),
                        "version": {"N": str(item.version + 1 if item is not None else 0)},
                    },
                )
            )
            return
        for attempt in range(_ATTEMPTS):
            if read or attempt > 0:
                item = await self._get(task)
            if item is None:
                try:
                    await self._table_call(
                        self._client.put_item(
                            TableName=self._table,
                            Item={
                                **self._key(task),
                                "task_spec": spec,
                                "execute_after": {"S": _time(first)},
                                "ready_at": self._ready_at(first, task.canonical_name),
                                "version": {"N": "0"},
                            },
                            ConditionExpression="attribute_not_exists(partition_id)",
                        )
                    )
                    return
                except botocore.exceptions.ClientError as error:
                    if _error_code(error) != _CONDITION_FAILED:
                        raise
                    continue
            if _quarantined(item):
                await self._register_one(utc_now, task, item, force=True, read=False)
                return
            if item.locked_until is not None and item.locked_until > utc_now:
                raise TaskLockedException(task, item.locked_until)
            execute_after = min(first, item.execute_after) if item.execute_after is not None else first
            due = max(execute_after, item.locked_until) if item.locked_until is not None else execute_after
            if await self._update(
                Key=self._key(task),
                UpdateExpression="SET task_spec = :s, execute_after = :e, ready_at = :r, version = version + :one",
                ConditionExpression="version = :v",
                ExpressionAttributeValues={
                    ":s": spec,
                    ":e": {"S": _time(execute_after)},
                    ":r": self._ready_at(due, task.canonical_name),
                    ":v": {"N": str(item.version)},
                    ":one": {"N": "1"},
                },
            ):
                return
        raise PyncetteException(f"Unable to register task {task.canonical_name} due to contention")

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        unique: dict[str, Task] = {}
        for task in tasks:
            if task.parent_task is None:
                raise ValueError(f"task {task.canonical_name!r}: only dynamic task instances can be registered")
            unique[task.canonical_name] = task
        if not unique:
            return
        existing = await self._batch_get(list(unique.values()))
        if not force:
            for name, item in existing.items():
                if item.locked_until is not None and item.locked_until > utc_now and not _quarantined(item):
                    raise TaskLockedException(unique[name], item.locked_until)
        await asyncio.gather(
            *(
                self._register_one(
                    utc_now,
                    task,
                    existing.get(name),
                    force=force or _quarantined(existing.get(name)),
                    read=False,
                )
                for name, task in unique.items()
            )
        )

    # ---- pyncette 1.x single-entry protocol ----

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        await self._table_call(self._client.delete_item(TableName=self._table, Key=self._key(task)))

    async def _poll_entry(self, utc_now: datetime.datetime, task: Task, lease: Lease | None) -> PollResponse:
        for _ in range(_ATTEMPTS):
            item = await self._get(task)
            if item is None:
                if task.parent_task is not None:
                    raise self.instance_not_found(task)
                self.statics.forget(task.canonical_name)
                await self._create_static(utc_now, [task])
                continue
            if item.execute_after is None:
                raise PyncetteException(f"task {task.canonical_name!r}: {item.problem}")
            plan = plan_poll(
                utc_now,
                task,
                lease,
                execute_after=item.execute_after,
                locked_until=item.locked_until,
                locked_by=item.locked_by,
                new_token=uuid.uuid4().hex,
            )
            if plan.result != ResultType.READY:
                return plan.response
            # Written only if nobody wrote the item since it was read (its version); else read again.
            if await self._claim(utc_now, task, item, plan.token or uuid.uuid4().hex) is not None:
                return plan.response
        raise PyncetteException(f"Unable to poll task {task.canonical_name} due to contention")

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        item = await self._get(task)
        if item is None:
            return None
        return self._state(task, item, task.parent_task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "partition_id = :p",
            "ExpressionAttributeValues": {":p": {"S": f"{self._prefix}:{parent_task.canonical_name}"}},
            "ConsistentRead": True,
            "Limit": limit if limit is not None else self._batch_size,
        }
        if isinstance(continuation_token, dict):
            request["ExclusiveStartKey"] = continuation_token
        response = await self._table_call(self._client.query(**request))
        states = [self._state(parent_task, _Item(raw), parent_task) for raw in response.get("Items", [])]
        last = response.get("LastEvaluatedKey")
        return ListTasksResponse(tasks=states, continuation_token=ContinuationToken(last) if last else None)


def _client_error(error: BaseException, endpoint: str | None, region: str | None) -> BackendConfigurationError:
    where = endpoint or f"DynamoDB in {region or 'the default region'}"
    if isinstance(error, botocore.exceptions.NoRegionError):
        return BackendConfigurationError(BACKEND, "dynamodb_region_name", "no region given and none configured")
    if isinstance(error, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return BackendConfigurationError(
            BACKEND, "credentials", "no AWS credentials found (environment, ~/.aws or instance metadata)"
        )
    if isinstance(error, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return BackendConfigurationError(BACKEND, "dynamodb_endpoint", f"cannot connect to {where}")
    code = _error_code(error)
    if code in ("UnrecognizedClientException", "InvalidSignatureException", "AccessDeniedException"):
        return BackendConfigurationError(BACKEND, "credentials", f"{where} refused the AWS credentials ({code})")
    first_line = (str(error).splitlines() or [type(error).__name__])[0]
    return BackendConfigurationError(BACKEND, "dynamodb_endpoint", f"{where}: {first_line}")


@contextlib.asynccontextmanager
async def dynamodb_repository(**kwargs: Any) -> AsyncIterator[DynamoDBRepository]:
    """Opens a DynamoDB client with ambient AWS credentials and, unless skipped, creates the table.

    Keywords: ``dynamodb_table_name`` (required), ``dynamodb_region_name`` (default: the
    environment's), ``dynamodb_endpoint`` (a local endpoint URL), ``dynamodb_skip_table_create``
    (False), ``dynamodb_partition_prefix`` ("", apps sharing a table use different prefixes),
    ``batch_size`` (100). Other keywords are ignored (they belong to the app).
    """
    table_name = checked_table_name(
        BACKEND,
        "dynamodb_table_name",
        required(BACKEND, kwargs, "dynamodb_table_name"),
        _SAFE_TABLE_NAME,
        "letters, digits, '_', '.' or '-', 3 to 255",
    )
    region = kwargs.get("dynamodb_region_name")
    endpoint = kwargs.get("dynamodb_endpoint")
    if endpoint is not None and (not isinstance(endpoint, str) or not re.match(r"https?://", endpoint)):
        raise BackendConfigurationError(BACKEND, "dynamodb_endpoint", f"expected an http(s):// URL, got {endpoint!r}")
    prefix = kwargs.get("dynamodb_partition_prefix") or ""
    if not isinstance(prefix, str):
        raise BackendConfigurationError(BACKEND, "dynamodb_partition_prefix", f"expected a string, got {prefix!r}")
    batch_size = positive_int(BACKEND, kwargs, "batch_size", DEFAULT_BATCH_SIZE)

    config = Config(
        max_pool_connections=_MAX_CONNECTIONS,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=10,
        read_timeout=30,
    )
    session = aioboto3.Session()
    try:
        client_context = session.client("dynamodb", region_name=region, endpoint_url=endpoint, config=config)
        client = await client_context.__aenter__()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        raise _client_error(error, endpoint, region) from None
    try:
        repository = DynamoDBRepository(
            client,
            table_name=table_name,
            partition_prefix=prefix,
            batch_size=batch_size,
            skip_table_create=bool(kwargs.get("dynamodb_skip_table_create", False)),
        )
        try:
            await repository.initialize()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise _client_error(error, endpoint, region) from None
        yield repository
    finally:
        await client_context.__aexit__(None, None, None)
