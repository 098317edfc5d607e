"""The Redis backend under the conformance suite: a fresh ``redis_namespace`` per test, deleted after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import asyncio as aioredis

from pyncette.redis import redis_repository

MARKS: list[pytest.MarkDecorator] = [pytest.mark.services]


async def delete_namespace(redis_url: str, namespace: str) -> None:
    """Deletes every key of one namespace (its prefix doubles colons, see pyncette.redis)."""
    pattern = f"pyncette:{namespace.replace(':', '::')}:*"
    async with aioredis.from_url(redis_url) as client:
        batch: list[Any] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    redis_url: str = request.getfixturevalue("redis_url")
    namespace = f"conformance-{uuid.uuid4().hex}"
    try:
        yield {"repository_factory": redis_repository, "redis_url": redis_url, "redis_namespace": namespace}
    finally:
        await delete_namespace(redis_url, namespace)


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    prefix = f"pyncette:{kwargs['redis_namespace'].replace(':', '::')}:"
    async with aioredis.from_url(kwargs["redis_url"]) as client:
        await client.hset(f"{prefix}e:{name}", "spec", spec)


async def store_raw_time(kwargs: dict[str, Any], repository: Any, name: str, text: str) -> None:
    """Overwrites the stored next time of entry ``name`` with any text (Redis stores times as text)."""
    prefix = f"pyncette:{kwargs['redis_namespace'].replace(':', '::')}:"
    async with aioredis.from_url(kwargs["redis_url"]) as client:
        await client.hset(f"{prefix}e:{name}", "ea", text)
