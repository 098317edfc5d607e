"""An HTTP health check: 200 while the scheduler polls its backend, 500 once the last successful
poll is more than two poll intervals old.

    curl -i localhost:8080/health        (PORT=... to pick another port)

The synchronous executor makes a slow task stall polling, so the endpoint flips to 500 now and then.
"""

import asyncio
import logging
import os
import random

from pyncette import Context
from pyncette import Pyncette
from pyncette.executor import SynchronousExecutor
from pyncette.healthcheck import use_healthcheck_server

logger = logging.getLogger(__name__)

app = Pyncette(executor_cls=SynchronousExecutor)
use_healthcheck_server(app, port=int(os.environ.get("PORT", "8080")))


@app.task(schedule="* * * * * */2")
async def sometimes_slow(context: Context) -> None:
    if random.random() < 0.5:
        await asyncio.sleep(4)
    logger.info("Done at %s", context.scheduled_at)


if __name__ == "__main__":
    app.main()
