"""The MySQL/MariaDB backend under the conformance suite: a fresh table per test, dropped after."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomysql
import pytest

from pyncette.mysql import mysql_repository

MARKS: list[pytest.MarkDecorator] = [pytest.mark.services]


def mysql_kwargs(params: dict[str, Any], table_name: str) -> dict[str, Any]:
    """``Pyncette`` keywords for the test server's database and the given table."""
    return {
        "repository_factory": mysql_repository,
        "mysql_host": params["host"],
        "mysql_port": params["port"],
        "mysql_user": params["user"],
        "mysql_password": params["password"],
        "mysql_database": params["database"],
        "mysql_table_name": table_name,
    }


async def drop_table(params: dict[str, Any], table_name: str) -> None:
    connection = await aiomysql.connect(
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        db=params["database"],
        autocommit=True,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(f"DROP TABLE IF EXISTS `{table_name}`")
    finally:
        connection.close()


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    params: dict[str, Any] = request.getfixturevalue("mysql_params")
    table_name = f"conformance_{uuid.uuid4().hex}"
    try:
        yield mysql_kwargs(params, table_name)
    finally:
        await drop_table(params, table_name)


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    connection = await aiomysql.connect(
        host=kwargs["mysql_host"],
        port=kwargs["mysql_port"],
        user=kwargs["mysql_user"],
        password=kwargs["mysql_password"],
        db=kwargs["mysql_database"],
        autocommit=True,
    )
    try:
        async with connection.cursor() as cursor:
            await cursor.execute(
                f"UPDATE `{kwargs['mysql_table_name']}` SET task_spec = %s WHERE name = %s", (spec, name)
            )
    finally:
        connection.close()
