"""A delay queue: one-off instances (``execute_at``) that run once and are then gone.

AT_LEAST_ONCE jobs that fail are retried (here: as soon as they are unlocked); AT_MOST_ONCE jobs
are never retried. Use a persistent backend to survive restarts and to share the queue.
"""

import datetime
import logging
import random
import uuid

from pyncette import Context
from pyncette import ExecutionMode
from pyncette import FailureMode
from pyncette import Pyncette

logger = logging.getLogger(__name__)

app = Pyncette()
NAMES = ["Alice", "Bob", "Charlie", "Dave", "Eve"]


@app.dynamic_task(execution_mode=ExecutionMode.AT_LEAST_ONCE, failure_mode=FailureMode.UNLOCK)
async def reliable_job(context: Context) -> None:
    logger.info("Reliable job for %s (due %s); retried until it succeeds", context.args["user"], context.scheduled_at)
    if random.random() < 0.5:
        raise RuntimeError("flaky")


@app.dynamic_task(execution_mode=ExecutionMode.AT_MOST_ONCE)
async def best_effort_job(context: Context) -> None:
    logger.info("Best-effort job for %s (due %s); never retried", context.args["user"], context.scheduled_at)
    if random.random() < 0.5:
        raise RuntimeError("flaky")


@app.task(interval=datetime.timedelta(seconds=2))
async def producer(context: Context) -> None:
    for job in (reliable_job, best_effort_job):
        delay = datetime.timedelta(seconds=random.uniform(0.5, 3))
        await context.app_context.schedule_task(
            job, uuid.uuid4().hex, execute_at=context.scheduled_at + delay, user=random.choice(NAMES)
        )


if __name__ == "__main__":
    app.main()
