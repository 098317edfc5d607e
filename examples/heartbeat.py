"""Heartbeats keep the lease of a long AT_LEAST_ONCE execution, so no other worker takes it over.

Cooperative: call ``await context.heartbeat()`` now and then. Automatic: decorate with
``with_heartbeat()``. A heartbeat after the lease expired raises ``LeaseLostException``.
"""

import asyncio
import datetime
import logging

from pyncette import Context
from pyncette import Pyncette
from pyncette.utils import with_heartbeat

logger = logging.getLogger(__name__)
app = Pyncette()
LEASE = datetime.timedelta(seconds=2)


@app.task(schedule="* * * * * */3", lease_duration=LEASE)
async def cooperative(context: Context) -> None:
    logger.info("cooperative: started")
    for _ in range(4):
        await asyncio.sleep(1)
        await context.heartbeat()
    logger.info("cooperative: finished with the lease intact")


@app.task(schedule="* * * * * */3", lease_duration=LEASE)
async def too_late(context: Context) -> None:
    logger.info("too_late: started")
    await asyncio.sleep(3)
    await context.heartbeat()  # the lease expired a second ago: raises LeaseLostException
    logger.info("too_late: never printed")


@app.task(schedule="* * * * * */3", lease_duration=LEASE)
@with_heartbeat()
async def automatic(context: Context) -> None:
    logger.info("automatic: started")
    await asyncio.sleep(4)
    logger.info("automatic: finished, heartbeats ran in the background")


if __name__ == "__main__":
    app.main()
