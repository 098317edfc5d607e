"""The PostgreSQL backend under the conformance suite: a fresh table per test, dropped after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from pyncette.postgres import postgres_repository

MARKS: list[pytest.MarkDecorator] = [pytest.mark.services]


async def drop_table(postgres_url: str, table_name: str) -> None:
    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f'DROP TABLE IF EXISTS "{table_name}"')
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    postgres_url: str = request.getfixturevalue("postgres_url")
    table_name = f"conformance_{uuid.uuid4().hex[:16]}"
    try:
        yield {
            "repository_factory": postgres_repository,
            "postgres_url": postgres_url,
            "postgres_table_name": table_name,
        }
    finally:
        await drop_table(postgres_url, table_name)


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    connection = await asyncpg.connect(kwargs["postgres_url"])
    try:
        await connection.execute(
            f'UPDATE "{kwargs["postgres_table_name"]}" SET task_spec = $1::json WHERE name = $2', spec, name
        )
    finally:
        await connection.close()
