"""Prometheus metrics of ticks, task executions (count, duration, failures, start lag) and
repository operations.

    curl localhost:9699/metrics          (PORT=... to pick another port)
"""

import asyncio
import datetime
import logging
import os
import random
import uuid

from pyncette import Context
from pyncette import FailureMode
from pyncette import Pyncette
from pyncette.prometheus import use_prometheus

logger = logging.getLogger(__name__)

app = Pyncette()
use_prometheus(app, port=int(os.environ.get("PORT", "9699")))


@app.task(schedule="* * * * * */2")
async def hello(context: Context) -> None:
    logger.info("Hello, world!")


@app.task(schedule="* * * * * */2")
async def sleepy(context: Context) -> None:
    await asyncio.sleep(random.random() * 3)


@app.task(schedule="* * * * * */2", failure_mode=FailureMode.UNLOCK)
async def flaky(context: Context) -> None:
    if random.random() < 0.5:
        raise RuntimeError("Something went wrong")


@app.dynamic_task()
async def one_off(context: Context) -> None:
    logger.info("one-off %s", context.task.name)


@app.task(interval=datetime.timedelta(seconds=1))
async def schedule_one_offs(context: Context) -> None:
    await context.app_context.schedule_task(
        one_off, uuid.uuid4().hex, execute_at=context.scheduled_at + datetime.timedelta(seconds=1)
    )


if __name__ == "__main__":
    app.main()
