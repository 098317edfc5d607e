"""Round trips against the real servers of hack/services (see tests/plugins/services.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

pytestmark = pytest.mark.services


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


async def test_redis_round_trip(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    key = _unique("pyncette-test")
    try:
        await client.set(key, "value", ex=60)
        assert await client.get(key) == b"value"
    finally:
        await client.delete(key)
        await client.aclose()


async def test_postgres_round_trip(postgres_url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == "pyncette"
        await conn.execute("CREATE TEMPORARY TABLE roundtrip (id int PRIMARY KEY, payload text)")
        await conn.execute("INSERT INTO roundtrip VALUES ($1, $2)", 1, "hello")
        assert await conn.fetchval("SELECT payload FROM roundtrip WHERE id = $1", 1) == "hello"
    finally:
        await conn.close()


async def test_mysql_round_trip(mysql_params: dict[str, Any]) -> None:
    import aiomysql

    params = dict(mysql_params)
    params["db"] = params.pop("database")  # aiomysql spells it `db`
    conn = await aiomysql.connect(**params, autocommit=True)
    extra_db = _unique("pyncette_extra")
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT DATABASE()")
            assert await cur.fetchone() == (mysql_params["database"],)
            await cur.execute("CREATE TEMPORARY TABLE roundtrip (id INT PRIMARY KEY, payload TEXT)")
            await cur.execute("INSERT INTO roundtrip VALUES (%s, %s)", (1, "hello"))
            await cur.execute("SELECT payload FROM roundtrip WHERE id = %s", (1,))
            assert await cur.fetchone() == ("hello",)
            # Tests may create databases of their own.
            await cur.execute(f"CREATE DATABASE `{extra_db}`")
            await cur.execute(f"CREATE TABLE `{extra_db}`.t (id INT PRIMARY KEY)")
            await cur.execute(f"DROP DATABASE `{extra_db}`")
    finally:
        conn.close()


async def test_dynamodb_round_trip(dynamodb_endpoint: str) -> None:
    import aioboto3

    table = _unique("pyncette-test")
    session = aioboto3.Session()
    async with session.client("dynamodb", endpoint_url=dynamodb_endpoint, region_name="us-east-1") as client:
        await client.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        try:
            assert table in (await client.list_tables())["TableNames"]
            await client.put_item(TableName=table, Item={"pk": {"S": "k"}, "v": {"S": "hello"}})
            item = (await client.get_item(TableName=table, Key={"pk": {"S": "k"}}))["Item"]
            assert item["v"] == {"S": "hello"}
        finally:
            await client.delete_table(TableName=table)


async def test_redis_restart_keeps_data(redis_url: str, restart_service: Callable[[str], None]) -> None:
    import redis.asyncio as aioredis

    key = _unique("pyncette-restart")
    before = aioredis.from_url(redis_url)
    try:
        await before.set(key, "survives")
    finally:
        await before.aclose()

    # restart.sh blocks until the server answers again; keep the event loop free meanwhile.
    await asyncio.to_thread(restart_service, "redis")

    after = aioredis.from_url(redis_url)
    try:
        assert await after.ping()
        assert await after.get(key) == b"survives"
    finally:
        await after.delete(key)
        await after.aclose()
