"""pytest plugin: pyncette 1.1.0's own test suite, run against this package (``make compat-1x``).

hack/compat/run.sh unpacks 1.1.0's source distribution into a scratch directory and runs pytest
there with ``-p pyncette_1x_plugin``. Not a line of that suite is edited; this plugin makes, at run
time, the adaptations a 1.x user would make to run it against their own servers:

* MongoDB is not one of our backends. ``pyncette.mongodb`` becomes a stub module (so their
  conftest still imports) and ``MongoDBBackend`` is taken out of ``conftest.all_backends``.
* Server addresses come from the variables the suite already reads (``POSTGRES_URL``,
  ``REDIS_URL``, ``MYSQL_HOST``/``_DATABASE``/``_USER``/``_PASSWORD``, ``DYNAMODB_ENDPOINT``,
  ``SQLITE_DATABASE``; run.sh sets them). The suite has no MySQL port setting, so
  ``pyncette.mysql.mysql_repository`` gets ``mysql_port=$MYSQL_PORT`` unless a caller passes one.
* Every table name and Redis namespace the suite makes up (its conftest's ``random_table_name``)
  is recorded, and dropped from the servers when the session ends; the session fails if any of
  them is still there afterwards.

Expected failures are listed in ``expected-failures-1x.toml`` beside this file. Each entry names
test ids (patterns in which ``*`` stands for anything), the reason, and the line of our docs that
documents the difference (a file and a phrase that must occur on exactly one of its lines).
Matching tests run as ``xfail(strict=True)``: an unlisted failure fails the run, and so does a
listed test that passes, an entry that matches no test (on a run of the whole suite) or one whose
documentation line is gone. ``[[flaky]]`` entries (tests that race real time against process
start-up) must pass, with a few reruns (pytest-rerunfailures).

The summary counts outcomes per backend: the parametrized tests by their ``[backend]`` id, the
backend-specific modules by their backend, and the rest (``Pyncette()`` apps: our in-memory
backend, and SQLite ``:memory:`` where they pass 1.x's default backend) as "app only".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import sys
import tomllib
import types
import warnings
from collections import Counter
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import pyncette.mysql

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
EXPECTED_FILE = HERE / "expected-failures-1x.toml"
BACKENDS = ("postgres", "mysql", "redis", "dynamodb", "default", "sqlite_persisted")
LABELS = {
    "default": "default (SQLite :memory:)",
    "sqlite_persisted": "sqlite_persisted (SQLite file)",
    "app": "app only (in-memory, SQLite :memory:)",
}
# Tests that are not parametrized by backend are counted under the backend they exercise.
MODULE_BACKENDS = {
    "test_postgres.py": "postgres",
    "test_mysql.py": "mysql",
    "test_redis.py": "redis",
    "test_dynamodb.py": "dynamodb",
    "test_sqlite.py": "default",
}


# --- adaptations made when the plugin is imported (before their conftest is) ------------------


def _no_mongodb(**kwargs: Any) -> Any:
    raise RuntimeError("MongoDB is not a backend of this package")


_mongodb_stub = types.ModuleType("pyncette.mongodb")
_mongodb_stub.mongodb_repository = _no_mongodb  # type: ignore[attr-defined]
sys.modules.setdefault("pyncette.mongodb", _mongodb_stub)

_mysql_repository = pyncette.mysql.mysql_repository


@functools.wraps(_mysql_repository)
def _mysql_repository_with_port(**kwargs: Any) -> Any:
    if "MYSQL_PORT" in os.environ:
        kwargs.setdefault("mysql_port", int(os.environ["MYSQL_PORT"]))
    return _mysql_repository(**kwargs)


pyncette.mysql.mysql_repository = _mysql_repository_with_port  # type: ignore[assignment]

_created_names: list[str] = []


def _recording(random_table_name: Callable[[], str]) -> Callable[[], str]:
    @functools.wraps(random_table_name)
    def recorded() -> str:
        name = random_table_name()
        _created_names.append(name)
        return name

    return recorded


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    conftest = sys.modules.get("conftest")
    if conftest is None or not hasattr(conftest, "all_backends"):
        raise pytest.UsageError("pyncette_1x_plugin: run it from the root of pyncette 1.1.0's sdist, on tests/")
    conftest.all_backends[:] = [b for b in conftest.all_backends if b.__name__ != "mongodb"]
    conftest.random_table_name = _recording(conftest.random_table_name)
    config.stash[_EXPECTED] = _load_expected()
    config.stash[_FLAKY] = _load_flaky()


# --- expected failures --------------------------------------------------------------------------


@dataclass
class Expected:
    tests: list[str]
    reason: str
    doc: str
    line: str
    matched: int = 0

    def where(self) -> str:
        """``doc#Ln`` of the documenting line; raises if the phrase is not on exactly one line."""
        lines = (REPO_ROOT / self.doc).read_text(encoding="utf-8").splitlines()
        hits = [n for n, text in enumerate(lines, 1) if self.line in text]
        if len(hits) != 1:
            raise ValueError(f"{self.doc}: {self.line!r} is on {len(hits)} lines, expected exactly one")
        return f"{self.doc}#L{hits[0]}"


@dataclass
class Flaky:
    tests: list[str]
    reason: str
    reruns: int
    matched: int = 0


_EXPECTED = pytest.StashKey[list[Expected]]()
_FLAKY = pytest.StashKey[list[Flaky]]()


def _load_expected() -> list[Expected]:
    data = tomllib.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    entries = [Expected(**entry) for entry in data.get("expected", [])]
    for entry in entries:
        try:
            entry.where()
        except (OSError, ValueError) as e:
            raise pytest.UsageError(f"{EXPECTED_FILE.name}: {entry.tests}: {e}") from None
    return entries


def _load_flaky() -> list[Flaky]:
    data = tomllib.loads(EXPECTED_FILE.read_text(encoding="utf-8"))
    return [Flaky(**entry) for entry in data.get("flaky", [])]


def _matches(item: pytest.Item, patterns: list[str]) -> bool:
    """Whether the item's node id matches a pattern in which ``*`` (only) stands for anything."""
    return any(re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), item.nodeid) for pattern in patterns)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for entry in config.stash[_EXPECTED]:
            if _matches(item, entry.tests):
                entry.matched += 1
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{entry.reason} ({entry.where()})"))
                break
        for flaky in config.stash[_FLAKY]:
            if _matches(item, flaky.tests):
                flaky.matched += 1
                item.add_marker(pytest.mark.flaky(reruns=flaky.reruns))  # pytest-rerunfailures


# --- per-backend summary ------------------------------------------------------------------------


def _backend_of(nodeid: str) -> str:
    match = re.search(r"\[([^\]]+)\]$", nodeid)
    if match and match.group(1) in BACKENDS:
        return match.group(1)
    module = nodeid.split("::")[0].rsplit("/", 1)[-1]
    return MODULE_BACKENDS.get(module, "app")


_outcomes: dict[str, Counter[str]] = defaultdict(Counter)
_unexpected: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    backend = _backend_of(report.nodeid)
    if hasattr(report, "wasxfail"):
        if report.skipped:
            _outcomes[backend]["xfailed"] += 1
        elif report.failed:  # strict: an expected failure passed
            _outcomes[backend]["xpassed (not allowed)"] += 1
            _unexpected.append(f"XPASS {report.nodeid}")
        return
    if report.outcome == "rerun":
        _outcomes[backend]["reruns"] += 1
        _unexpected.append(f"(rerun) {report.nodeid}")
        return
    if report.when == "call" and report.passed:
        _outcomes[backend]["passed"] += 1
    elif report.failed:
        _outcomes[backend]["failed" if report.when == "call" else "errors"] += 1
        _unexpected.append(f"{'FAILED' if report.when == 'call' else 'ERROR'} {report.nodeid}")
    elif report.skipped and report.when != "teardown":
        _outcomes[backend]["skipped"] += 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    write = terminalreporter.write_line
    write("")
    write("pyncette 1.1.0's test suite against this package, per backend:")
    for backend in sorted(_outcomes):
        counts = ", ".join(f"{n} {what}" for what, n in sorted(_outcomes[backend].items()))
        write(f"  {LABELS.get(backend, backend):38} {counts}")
    entries = config.stash.get(_EXPECTED, [])
    unused: list[Expected | Flaky] = [entry for entry in entries if entry.matched == 0]
    unused += [entry for entry in config.stash.get(_FLAKY, []) if entry.matched == 0]
    write(f"expected failures: {len(entries)} entries, {sum(e.matched for e in entries)} tests")
    for entry in entries:
        write(f"  {entry.matched:3} x {entry.where()}")
    for entry in unused if _whole_suite(config) else []:
        write(f"  STALE ENTRY (matches no test): {entry.tests}")
    for line in _unexpected:
        write(f"  {line}")
    write(f"leftovers: {_leftover_report}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _leftover_report
    entries = session.config.stash.get(_EXPECTED, [])
    stale = [entry for entry in [*entries, *session.config.stash.get(_FLAKY, [])] if entry.matched == 0]
    if not _whole_suite(session.config):
        stale = []  # a subset was asked for: entries for the other tests match nothing
    leftovers = asyncio.run(_clean_up(sorted(set(_created_names))))
    _leftover_report = (
        f"{len(set(_created_names))} names created, all removed"
        if not leftovers
        else f"STILL THERE after clean-up: {', '.join(leftovers)}"
    )
    if (stale or leftovers) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _whole_suite(config: pytest.Config) -> bool:
    return (
        config.args == ["tests"]
        and not config.option.keyword
        and not config.option.markexpr
        and not config.getoption("backend")
    )


# --- clean-up -------------------------------------------------------------------------------------

_leftover_report = "not checked"


async def _clean_up(names: list[str]) -> list[str]:
    """Drops every table / namespace named in ``names``; returns what is still there afterwards."""
    if not names:
        return []
    left: list[str] = []
    for clean in (_clean_postgres, _clean_mysql, _clean_redis, _clean_dynamodb):
        left.extend(await clean(names))
    return left


async def _clean_postgres(names: list[str]) -> list[str]:
    import asyncpg

    connection = await asyncpg.connect(os.environ["POSTGRES_URL"])
    try:
        for name in names:
            await connection.execute(f'DROP TABLE IF EXISTS "{name}"')
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE tablename = ANY($1::text[])", names)
    finally:
        await connection.close()
    return [f"postgres table {row['tablename']}" for row in rows]


async def _clean_mysql(names: list[str]) -> list[str]:
    import aiomysql

    connection = await aiomysql.connect(
        host=os.environ["MYSQL_HOST"],
        port=int(os.environ["MYSQL_PORT"]),
        user=os.environ["MYSQL_USER"],
        password=os.environ["MYSQL_PASSWORD"],
        db=os.environ["MYSQL_DATABASE"],
    )
    try:
        async with connection.cursor() as cursor:
            with warnings.catch_warnings():  # "Unknown table" for names the other backends used
                warnings.simplefilter("ignore")
                for name in names:
                    await cursor.execute(f"DROP TABLE IF EXISTS `{name}`")
            placeholders = ", ".join(["%s"] * len(names))
            await cursor.execute(
                "SELECT table_name FROM information_schema.tables "
                f"WHERE table_schema = DATABASE() AND table_name IN ({placeholders})",
                names,
            )
            rows = await cursor.fetchall()
    finally:
        connection.close()
    return [f"mysql table {row[0]}" for row in rows]


async def _clean_redis(names: list[str]) -> list[str]:
    from redis import asyncio as aioredis

    client = aioredis.from_url(os.environ["REDIS_URL"])
    left: list[str] = []
    try:
        for name in names:
            pattern = f"pyncette:{name}:*"
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
            if keys:
                await client.delete(*keys)
            if [key async for key in client.scan_iter(match=pattern, count=1000)]:
                left.append(f"redis keys {pattern}")
    finally:
        await client.aclose()
    return left


async def _clean_dynamodb(names: list[str]) -> list[str]:
    import aioboto3

    session = aioboto3.Session()
    wanted = set(names)
    async with session.client(
        "dynamodb", endpoint_url=os.environ["DYNAMODB_ENDPOINT"], region_name="eu-west-1"
    ) as client:
        for name in await _dynamodb_tables(client):
            if name in wanted:
                with contextlib.suppress(client.exceptions.ResourceNotFoundException):
                    await client.delete_table(TableName=name)
        return [f"dynamodb table {name}" for name in await _dynamodb_tables(client) if name in wanted]


async def _dynamodb_tables(client: Any) -> list[str]:
    names: list[str] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = await client.list_tables(**kwargs)
        names.extend(page.get("TableNames", []))
        if "LastEvaluatedTableName" not in page:
            return names
        kwargs = {"ExclusiveStartTableName": page["LastEvaluatedTableName"]}
