"""Dynamic tasks: a template declared in code, instances scheduled and removed at run time.

Each user gets a recurring greeting with its own interval; a greeting may unschedule itself, so
after long enough none are left.
"""

import asyncio
import contextlib
import datetime
import logging
import pathlib
import random

from pyncette import Context
from pyncette import ExecutionMode
from pyncette import Pyncette

logger = logging.getLogger(__name__)

app = Pyncette(poll_interval=datetime.timedelta(seconds=0.5))


@app.dynamic_task(execution_mode=ExecutionMode.AT_MOST_ONCE)
async def greeter(context: Context) -> None:
    logger.info("Hello from %s.", context.args["username"])
    if random.random() < 0.2:
        logger.warning("%s says goodbye and unschedules itself", context.args["username"])
        await context.app_context.unschedule_task(context.task)


async def main() -> None:
    usernames = (pathlib.Path(__file__).parent / "data" / "usernames.txt").read_text().split()
    async with app.create() as ctx:
        for username in usernames:
            every = datetime.timedelta(seconds=random.uniform(2, 10))
            await ctx.schedule_task(greeter, username, interval=every, username=username)
            logger.info("Scheduled %s every %.1fs", username, every.total_seconds())
        page = await ctx.list_tasks(greeter, limit=5)
        logger.info("First page of instances: %s", [state.task.name for state in page.tasks])
        await ctx.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
