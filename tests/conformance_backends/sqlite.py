"""The SQLite backend under the conformance suite: a database file in the test's tmp_path."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pyncette.sqlite import sqlite_repository

MARKS: list[pytest.MarkDecorator] = []


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    yield {
        "repository_factory": sqlite_repository,
        "sqlite_database": str(tmp_path / "pyncette.sqlite3"),
        "sqlite_table_name": "pyncette_conformance",
    }


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(kwargs["sqlite_database"])) as connection, connection:
        connection.execute(f"UPDATE {kwargs['sqlite_table_name']} SET task_spec = ? WHERE name = ?", (spec, name))
