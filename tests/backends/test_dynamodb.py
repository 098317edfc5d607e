"""DynamoDB-specific behaviour: configuration errors, the seed's table schema, partition prefixes,
partitioned tasks, and how many request rounds a batch costs.

Runs against moto's server (``dynamodb_endpoint``). Semantics shared by every backend live in
tests/conformance; this file covers what only DynamoDB has.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import botocore.exceptions
import pytest

from conformance_backends.dynamodb import REGION
from conformance_backends.dynamodb import delete_table
from pyncette.dynamodb import DynamoDBRepository
from pyncette.dynamodb import dynamodb_repository
from pyncette.errors import BackendConfigurationError
from pyncette.model import Context
from pyncette.task import PartitionedTask
from pyncette.task import Task

pytestmark = [pytest.mark.services]

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def noop(context: Context) -> None:
    pass


def template(name: str = "tpl", **kwargs: Any) -> Task:
    return Task(name=name, func=noop, dynamic=True, **kwargs)


@pytest.fixture
async def table_name(dynamodb_endpoint: str) -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex}"
    yield name
    await delete_table(dynamodb_endpoint, name)


def settings(endpoint: str, table_name: str, **extra: Any) -> dict[str, Any]:
    return {
        "dynamodb_endpoint": endpoint,
        "dynamodb_region_name": REGION,
        "dynamodb_table_name": table_name,
        **extra,
    }


@pytest.fixture
async def repo(dynamodb_endpoint: str, table_name: str) -> AsyncIterator[DynamoDBRepository]:
    async with dynamodb_repository(**settings(dynamodb_endpoint, table_name)) as repository:
        yield repository


# ---- configuration ----


async def test_missing_table_name_is_one_line_error(dynamodb_endpoint: str) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: dynamodb_table_name: is required$"):
        async with dynamodb_repository(dynamodb_endpoint=dynamodb_endpoint, dynamodb_region_name=REGION):
            pass


@pytest.mark.parametrize("name", ["ab", "has space", "semi;colon", "a" * 256, 7])
async def test_invalid_table_name_is_refused(dynamodb_endpoint: str, name: Any) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: dynamodb_table_name: .* not a safe table name"):
        async with dynamodb_repository(**settings(dynamodb_endpoint, name)):
            pass


async def test_unreachable_endpoint_is_one_line_error() -> None:
    with pytest.raises(
        BackendConfigurationError, match=r"^dynamodb: dynamodb_endpoint: cannot connect to http://127.0.0.1:1"
    ) as info:
        async with dynamodb_repository(**settings("http://127.0.0.1:1", "pyncette")):
            pass
    assert "\n" not in str(info.value)


async def test_bad_endpoint_url_is_refused() -> None:
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: dynamodb_endpoint: expected an http\(s\):// URL"):
        async with dynamodb_repository(**settings("127.0.0.1:18000", "pyncette")):
            pass


async def test_missing_credentials_are_one_line_error(
    dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: credentials: no AWS credentials found"):
        async with dynamodb_repository(**settings(dynamodb_endpoint, "pyncette")):
            pass


async def test_missing_region_is_one_line_error(
    dynamodb_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: dynamodb_region_name: no region"):
        async with dynamodb_repository(dynamodb_table_name="pyncette"):
            pass


async def test_skip_table_create_with_a_missing_table_says_so(dynamodb_endpoint: str, table_name: str) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^dynamodb: dynamodb_table_name: table .* does not exist"):
        async with dynamodb_repository(**settings(dynamodb_endpoint, table_name, dynamodb_skip_table_create=True)):
            pass


# ---- schema and layout ----


async def test_created_table_has_exactly_the_seed_schema(repo: DynamoDBRepository, table_name: str) -> None:
    table = (await repo._client.describe_table(TableName=table_name))["Table"]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "partition_id", "AttributeType": "S"},
        {"AttributeName": "ready_at", "AttributeType": "S"},
        {"AttributeName": "task_id", "AttributeType": "S"},
    ]
    assert table["KeySchema"] == [
        {"AttributeName": "partition_id", "KeyType": "HASH"},
        {"AttributeName": "task_id", "KeyType": "RANGE"},
    ]
    (index,) = table["LocalSecondaryIndexes"]
    assert index["IndexName"] == "ready_at"
    assert index["KeySchema"] == [
        {"AttributeName": "partition_id", "KeyType": "HASH"},
        {"AttributeName": "ready_at", "KeyType": "RANGE"},
    ]
    assert index["Projection"] == {"ProjectionType": "ALL"}
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


async def test_partition_prefixes_isolate_apps_sharing_a_table(dynamodb_endpoint: str, table_name: str) -> None:
    tpl = template()
    static = Task(name="tick", func=noop, interval=datetime.timedelta(seconds=10))
    async with (
        dynamodb_repository(**settings(dynamodb_endpoint, table_name, dynamodb_partition_prefix="app")) as first,
        dynamodb_repository(**settings(dynamodb_endpoint, table_name, dynamodb_partition_prefix="app:x")) as second,
    ):
        await first.register_task(NOW, tpl.instantiate("only-in-first", execute_at=NOW))
        assert (await second.list_task_states(NOW, tpl)).tasks == []
        assert (await second.lease_due(NOW, [tpl], limit=10)).executions == []
        assert [e.task.name for e in (await first.lease_due(NOW, [tpl], limit=10)).executions] == ["only-in-first"]

        due = NOW + datetime.timedelta(seconds=10)
        await first.lease_due(NOW, [static], limit=10)
        await second.lease_due(NOW, [static], limit=10)
        # Each app has its own entry for the same static task, and leasing one leaves the other.
        assert len((await first.lease_due(due, [static], limit=10)).executions) == 1
        assert len((await second.lease_due(due, [static], limit=10)).executions) == 1


async def test_partitioned_task_spreads_instances_over_partitions(repo: DynamoDBRepository, table_name: str) -> None:
    parent = PartitionedTask(name="fleet", func=noop, partition_count=4)
    partitions = parent.get_partitions()
    instances = [parent.instantiate(f"job-{i}", execute_at=NOW) for i in range(40)]
    await repo.register_tasks(NOW, instances)

    seen: dict[int, set[str]] = {}
    for number, partition in enumerate(partitions):
        batch = await repo.lease_due(NOW, [partition], limit=100)
        seen[number] = {e.task.name for e in batch.executions}
        assert all(parent.partition_selector(4, name) == number for name in seen[number])
    assert all(seen.values()), f"some partition got no instances: {seen}"
    assert set().union(*seen.values()) == {i.name for i in instances}

    # Each partition of the task is its own DynamoDB partition key.
    scan = await repo._client.scan(TableName=table_name)
    keys = {item["partition_id"]["S"] for item in scan["Items"]}
    assert keys == {f":{partition.canonical_name}" for partition in partitions}


async def test_scheduled_time_keeps_microseconds(repo: DynamoDBRepository) -> None:
    tpl = template()
    at = NOW + datetime.timedelta(microseconds=123457)
    await repo.register_task(NOW, tpl.instantiate("precise", execute_at=at))
    batch = await repo.lease_due(at, [tpl], limit=10)
    assert [e.scheduled_at for e in batch.executions] == [at]


# ---- requests per batch ----


class RequestCounter:
    """Counts requests by operation, and how many were in flight at once (rounds, not round trips)."""

    def __init__(self, repo: DynamoDBRepository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        self.in_flight = 0
        self.most_in_flight = 0
        client = repo._client
        for operation in ("query", "batch_get_item", "update_item", "delete_item", "put_item", "get_item"):
            monkeypatch.setattr(client, operation, self._wrap(operation, getattr(client, operation)))

    def _wrap(self, operation: str, original: Any) -> Any:
        async def counting(**kwargs: Any) -> Any:
            self.calls[operation] = self.calls.get(operation, 0) + 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return await original(**kwargs)
            finally:
                self.in_flight -= 1

        return counting


async def test_a_batch_issues_its_writes_concurrently(
    repo: DynamoDBRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = template("first"), template("second")
    interval = datetime.timedelta(seconds=10)
    await repo.register_tasks(
        NOW, [t.instantiate(f"i{i}", interval=interval) for t in (first, second) for i in range(30)]
    )
    counter = RequestCounter(repo, monkeypatch)
    due = NOW + interval

    batch = await repo.lease_due(due, [first, second], limit=50)
    assert (len(batch.executions), batch.has_more) == (50, True)
    # One query per template, then one conditional write per leased item, the writes side by side.
    assert counter.calls == {"query": 2, "update_item": 50}
    assert counter.most_in_flight > 2

    counter.calls.clear()
    await repo.commit_executions(due, batch.executions)
    assert counter.calls == {"update_item": 50}

    rest = await repo.lease_due(due, [first, second], limit=50)
    assert (len(rest.executions), rest.has_more) == (10, False)
    assert rest.next_due_at == NOW + 2 * interval


async def test_concurrent_leases_are_disjoint(dynamodb_endpoint: str, table_name: str) -> None:
    tpl = template()
    async with (
        dynamodb_repository(**settings(dynamodb_endpoint, table_name)) as first,
        dynamodb_repository(**settings(dynamodb_endpoint, table_name)) as second,
    ):
        await first.register_tasks(NOW, [tpl.instantiate(f"i{i}", execute_at=NOW) for i in range(120)])
        names: list[str] = []
        while True:
            batches = await asyncio.gather(*(r.lease_due(NOW, [tpl], limit=20) for r in (first, second) * 2))
            leased = [e.task.name for b in batches for e in b.executions]
            if not leased and not any(b.has_more for b in batches):
                break
            names += leased
        assert sorted(names) == sorted(f"i{i}" for i in range(120))


async def test_table_is_created_again_if_it_vanished(repo: DynamoDBRepository, table_name: str) -> None:
    static = Task(name="tick", func=noop, interval=datetime.timedelta(seconds=10))
    await repo.lease_due(NOW, [static], limit=10)
    async with aioboto3.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=repo._client.meta.endpoint_url
    ) as c:
        await c.delete_table(TableName=table_name)
    with pytest.raises(botocore.exceptions.ClientError, match=r"ResourceNotFound"):
        await repo.lease_due(NOW, [static], limit=10)
    # The next call finds the table again and the static task's entry re-created.
    await repo.lease_due(NOW, [static], limit=10)
    batch = await repo.lease_due(NOW + datetime.timedelta(seconds=10), [static], limit=10)
    assert [e.task.name for e in batch.executions] == ["tick"]
