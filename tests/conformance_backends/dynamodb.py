"""The DynamoDB backend under the conformance suite: a fresh table per test, deleted after.

The local endpoint is moto's server (``dynamodb_endpoint`` fixture of plugins.services).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aioboto3
import pytest

from pyncette.dynamodb import dynamodb_repository

MARKS: list[pytest.MarkDecorator] = [pytest.mark.services]
REGION = "us-east-1"


def dynamodb_kwargs(endpoint: str, table_name: str, **extra: Any) -> dict[str, Any]:
    """``Pyncette`` keywords for the local endpoint and the given table."""
    return {
        "repository_factory": dynamodb_repository,
        "dynamodb_endpoint": endpoint,
        "dynamodb_region_name": REGION,
        "dynamodb_table_name": table_name,
        **extra,
    }


async def delete_table(endpoint: str, table_name: str) -> None:
    async with aioboto3.Session().client("dynamodb", region_name=REGION, endpoint_url=endpoint) as client:
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            await client.delete_table(TableName=table_name)


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    endpoint: str = request.getfixturevalue("dynamodb_endpoint")
    table_name = f"conformance-{uuid.uuid4().hex}"
    try:
        yield dynamodb_kwargs(endpoint, table_name)
    finally:
        await delete_table(endpoint, table_name)


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    template = name.rsplit(":", 1)[0]
    async with aioboto3.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=kwargs["dynamodb_endpoint"]
    ) as client:
        await client.update_item(
            TableName=kwargs["dynamodb_table_name"],
            Key={"partition_id": {"S": f":{template}"}, "task_id": {"S": name}},
            UpdateExpression="SET task_spec = :s",
            ExpressionAttributeValues={":s": {"S": spec}},
        )


async def store_raw_time(kwargs: dict[str, Any], repository: Any, name: str, text: str) -> None:
    """Overwrites the stored next time of entry ``name`` with any text (DynamoDB stores times as text)."""
    template = name.rsplit(":", 1)[0]
    async with aioboto3.Session().client(
        "dynamodb", region_name=REGION, endpoint_url=kwargs["dynamodb_endpoint"]
    ) as client:
        await client.update_item(
            TableName=kwargs["dynamodb_table_name"],
            Key={"partition_id": {"S": f":{template}"}, "task_id": {"S": name}},
            UpdateExpression="SET execute_after = :t",
            ExpressionAttributeValues={":t": {"S": text}},
        )
