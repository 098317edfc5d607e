"""The README's backend snippets (the seed document's, slips fixed) run as written.

Each snippet is taken from README.md, pointed at the test server by replacing only its connection
settings, and then used the way a new user would: a dynamic instance is scheduled and must run.
"""

from __future__ import annotations

import asyncio
import datetime
import pathlib
import re
import uuid
from typing import Any

import pytest

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def _snippets(section: str) -> list[str]:
    text = README.read_text()
    match = re.search(rf"^### {re.escape(section)}\n(.*?)(?=^### |^## )", text, re.S | re.M)
    assert match, f"README has no '### {section}' section"
    return re.findall(r"```python\n(.*?)```", match.group(1), re.S)


async def _runs_an_instance(namespace: dict[str, Any]) -> None:
    app = namespace["app"]
    ran = asyncio.Event()
    name = f"snippet-{uuid.uuid4().hex[:8]}"

    @app.dynamic_task(name=f"readme_{uuid.uuid4().hex[:8]}")
    async def probe(context: Any) -> None:
        ran.set()
        context.app_context.shutdown()

    async with app.create() as ctx:
        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
        await ctx.schedule_task(probe, name, execute_at=past)
        await asyncio.wait_for(ctx.run(), timeout=60)
    assert ran.is_set()


def _exec(snippets: list[str], replacements: dict[str, str]) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "readme_snippet"}
    for code in snippets:
        for old, new in replacements.items():
            code = code.replace(old, new)
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - running the README is the point
    return namespace


async def test_sqlite_snippet(tmp_path: pathlib.Path) -> None:
    snippets = _snippets("SQLite")
    namespace = _exec(snippets, {'"pyncette.db"': repr(str(tmp_path / "pyncette.db"))})
    assert namespace["foo"].schedule == "* * * * * */10"
    await _runs_an_instance(namespace)


@pytest.mark.services
async def test_redis_snippets(redis_url: str) -> None:
    snippets = _snippets("Redis")
    assert len(snippets) == 2
    namespace = _exec(snippets, {'"redis://localhost"': repr(redis_url)})
    await _runs_an_instance(namespace)


@pytest.mark.services
async def test_postgres_snippet(postgres_url: str) -> None:
    namespace = _exec(_snippets("PostgreSQL"), {'"postgres://postgres@localhost/pyncette"': repr(postgres_url)})
    await _runs_an_instance(namespace)


@pytest.mark.services
async def test_mysql_snippet(mysql_params: dict[str, Any]) -> None:
    namespace = _exec(
        _snippets("MySQL"),
        {
            'mysql_host="localhost",': f"mysql_host={mysql_params['host']!r}, mysql_port={mysql_params['port']!r},",
            'mysql_user="pyncette"': f"mysql_user={mysql_params['user']!r}",
            'mysql_password="password"': f"mysql_password={mysql_params['password']!r}",
            'mysql_database="pyncette"': f"mysql_database={mysql_params['database']!r}",
        },
    )
    await _runs_an_instance(namespace)


@pytest.mark.services
async def test_dynamodb_snippet(dynamodb_endpoint: str) -> None:
    namespace = _exec(
        _snippets("Amazon DynamoDB"),
        {
            'dynamodb_region_name="eu-west-1",': (
                f'dynamodb_region_name="eu-west-1", dynamodb_endpoint={dynamodb_endpoint!r},'
            ),
            'dynamodb_table_name="pyncette"': f'dynamodb_table_name="readme_{uuid.uuid4().hex[:8]}"',
        },
    )
    await _runs_an_instance(namespace)
