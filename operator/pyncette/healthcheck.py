"""An HTTP health endpoint for liveness/readiness probes.

Healthy means the main loop polled the backend successfully less than two poll intervals ago, by
the app's clock: a loop stuck on a dead backend, or blocked by a synchronous executor, turns
unhealthy. Any path answers (``/health`` by convention); GET only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable

from pyncette._http import Response
from pyncette._http import bound_port
from pyncette._http import start_server
from pyncette.pyncette import Pyncette
from pyncette.pyncette import PyncetteContext

logger = logging.getLogger(__name__)

HealthcheckHandler = Callable[[PyncetteContext], Awaitable[bool]]


async def default_healthcheck(app_context: PyncetteContext) -> bool:
    """True when the last successful poll is less than two poll intervals old."""
    last_tick = app_context.last_tick
    grace_period = app_context._app._poll_interval * 2
    return last_tick is not None and app_context.clock.now() - last_tick < grace_period


def use_healthcheck_server(
    app: Pyncette,
    port: int = 8080,
    bind_address: str | None = None,
    healthcheck_handler: HealthcheckHandler = default_healthcheck,
) -> None:
    """Serves the health check over HTTP while the app runs (200 "OK" / 500 "Not OK").

    :param port: the port to listen on (0 picks a free one; see ``bound_port``)
    :param bind_address: the address to bind (all interfaces when None)
    :param healthcheck_handler: a coroutine deciding health; an exception counts as unhealthy
    """

    async def healthcheck_fixture(app_context: PyncetteContext) -> AsyncIterator[asyncio.Server]:
        async def respond(method: str, path: str) -> Response:
            del path
            if method != "GET":
                return Response(405, b"Method not allowed", headers={"Allow": "GET"})
            try:
                healthy = await healthcheck_handler(app_context)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                logger.warning("Healthcheck handler raised %s: %s", type(e).__name__, e)
                healthy = False
            return Response(200, b"OK") if healthy else Response(500, b"Not OK")

        server = await start_server(respond, host=bind_address, port=port)
        logger.info("Healthcheck listening on port %d", bound_port(server))
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()

    app.use_fixture("_healthcheck", healthcheck_fixture)
