"""A worker process for the multi-process tests: runs the ``job`` dynamic task on a shared SQLite file.

Usage: ``python sqlite_worker.py DATABASE OUTPUT [hang]``. Once the app has started it creates
``OUTPUT.ready``; every execution appends the instance name to OUTPUT (one line each). The process
runs until SIGTERM, then finishes gracefully. With ``hang``, executions never finish (the test
then kills the process while it holds their leases).
"""

from __future__ import annotations

import asyncio
import datetime
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from pyncette import Context
from pyncette import Pyncette
from pyncette.pyncette import PyncetteContext

database, output = sys.argv[1], sys.argv[2]
hang = sys.argv[3:] == ["hang"]
app = Pyncette(
    sqlite_database=database,
    poll_interval=datetime.timedelta(milliseconds=100),
    batch_size=5,
    concurrency_limit=2,  # few leases per round trip, so both processes keep competing for the rest
)


@app.fixture()
async def ready(app_context: PyncetteContext) -> AsyncIterator[None]:
    Path(f"{output}.ready").touch()  # noqa: ASYNC240 - once, at start-up
    yield


@app.dynamic_task()
async def job(context: Context) -> None:
    with open(output, "a", encoding="utf-8") as out:  # noqa: ASYNC230 - a tiny append is the point
        out.write(f"{context.task.name}\n")
    if hang:
        await asyncio.Event().wait()


if __name__ == "__main__":
    app.main()
