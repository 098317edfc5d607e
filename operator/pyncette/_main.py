"""The process entry point behind ``Pyncette.main()``: logging, the event loop, and signals.

Kept apart from the app so that embedding pyncette in another program (which owns its own loop,
logging and signal handling) never runs any of this. The first SIGINT/SIGTERM starts a graceful
shutdown (stop leasing, let running tasks finish, flush their results); a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyncette.context import PyncetteContext
    from pyncette.pyncette import Pyncette

logger = logging.getLogger("pyncette.pyncette")  # the 1.x logger name, which users filter on


def run_app(app: Pyncette) -> None:
    """Configures logging from ``LOG_LEVEL`` and runs ``app`` until a signal stops it."""
    configure_logging()
    if os.environ.get("USE_UVLOOP"):
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            logger.warning("USE_UVLOOP is set but uvloop is not installed; using asyncio's loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(_run(app))
            return
    asyncio.run(_run(app))


async def _run(app: Pyncette) -> None:
    async with app.create() as context:
        install_signal_handlers(context)
        await context.run()
        logger.info("Finished.")


def configure_logging() -> None:
    import coloredlogs

    coloredlogs.install(level=os.environ.get("LOG_LEVEL", "INFO"), milliseconds=True)


def install_signal_handlers(context: PyncetteContext) -> None:
    """First SIGINT/SIGTERM: graceful shutdown of ``context``; the second: exit at once."""
    loop = asyncio.get_running_loop()

    def handler(signum: int) -> None:
        if not context.shutting_down:
            logger.info(
                "Received %s, finishing running tasks (send it again to exit at once)", signal.Signals(signum).name
            )
            context.shutdown()
            return
        logger.critical("Received %s again, exiting now", signal.Signals(signum).name)
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not available on every platform
            loop.add_signal_handler(signum, handler, signum)
