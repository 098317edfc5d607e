"""Fixtures wrap the whole app's lifetime and hand resources to tasks; middlewares wrap every
execution (logging, metrics, sessions...).
"""

import asyncio
import logging
import pathlib
import random
import time
from collections.abc import AsyncIterator
from typing import TextIO

from pyncette import Context
from pyncette import Pyncette
from pyncette import PyncetteContext
from pyncette.model import NextFunc

logger = logging.getLogger(__name__)

app = Pyncette()


@app.fixture(name="log")
async def log_file(app_context: PyncetteContext) -> AsyncIterator[TextIO]:
    path = pathlib.Path("task-durations.log")
    logger.info("Writing task durations to %s", path)
    with path.open("a") as f:  # noqa: ASYNC230 - opening a local file once at start-up
        yield f  # available to every task and middleware as context.log
    logger.info("Closed %s", path)  # after the last running task finished


@app.middleware
async def timing(context: Context, next: NextFunc) -> None:
    started = time.perf_counter()
    try:
        await next()
    finally:
        print(f"{context.task.name} took {time.perf_counter() - started:.3f}s", file=context.log, flush=True)


@app.task(schedule="* * * * * */2")
async def slow_task(context: Context) -> None:
    await asyncio.sleep(random.uniform(0, 1))


@app.task(schedule="* * * * * */2")
async def fast_task(context: Context) -> None:
    pass


if __name__ == "__main__":
    app.main()
