"""HTTP health endpoints for Kubernetes-style probes: liveness and readiness are different questions.

* ``GET /livez`` -- **liveness**: 200 while the process's event loop answers and the scheduler loop
  is not wedged (``PyncetteContext.health().alive``). A replica busy at ``concurrency_limit`` is
  alive; so is one whose database is down (restarting it would not bring the database back, and a
  restarted replica would only crash-loop). Point a ``livenessProbe`` here.
* ``GET /readyz`` -- **readiness**: 200 while the backend answered the last poll recently (or the
  loop is busy and its last poll succeeded) and the app is not shutting down
  (``PyncetteContext.health().ready``). Point a ``readinessProbe`` here.
* any other path (``/health`` by convention, as in pyncette 1.x) -- ``healthcheck_handler``, by
  default ``default_healthcheck``, which is readiness.

Bodies are ``OK`` or ``Not OK`` (``/livez`` and ``/readyz`` add the reason on the next line). GET only.
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
    """Readiness: the last poll succeeded less than two poll intervals (plus ``backend_timeout``)
    ago, or the loop is busy at ``concurrency_limit`` and its last poll succeeded."""
    return app_context.health().ready


def use_healthcheck_server(
    app: Pyncette,
    port: int = 8080,
    bind_address: str | None = None,
    healthcheck_handler: HealthcheckHandler = default_healthcheck,
) -> None:
    """Serves ``/livez``, ``/readyz`` and the health check over HTTP while the app runs (200 / 500).

    :param port: the port to listen on (0 picks a free one; see ``bound_port``)
    :param bind_address: the address to bind (all interfaces when None)
    :param healthcheck_handler: a coroutine deciding health; an exception counts as unhealthy
    """

    async def healthcheck_fixture(app_context: PyncetteContext) -> AsyncIterator[asyncio.Server]:
        async def respond(method: str, path: str) -> Response:
            if method != "GET":
                return Response(405, b"Method not allowed", headers={"Allow": "GET"})
            route = path.split("?", 1)[0]
            if route in ("/livez", "/readyz"):
                health = app_context.health()
                verdict = health.alive if route == "/livez" else health.ready
                detail = f"loop: {health.loop}; backend: {health.backend}".encode()
                return Response(200, b"OK\n" + detail) if verdict else Response(500, b"Not OK\n" + detail)
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
