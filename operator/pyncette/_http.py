"""A minimal HTTP/1.1 responder on asyncio streams, for the health check and metrics endpoints.

Both endpoints answer tiny GET requests from probes and scrapers, so a full web framework would be
a heavy dependency for little: this reads the request head, calls a handler with the method and
path, writes one response and closes the connection.

The endpoints are often reachable by anyone on the Pod network, so a client cannot make the
server hold resources: at most ``max_connections`` connections are served at once (more are
closed as soon as they are accepted), the request head must arrive within ``read_timeout`` seconds in total
(a client sending one byte a second is cut off), a handler gets ``handler_timeout`` seconds, and
the response must be taken within ``write_timeout`` seconds, else the connection is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

logger = logging.getLogger(__name__)

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 32
"""Connections served at once; probes and a scraper need a handful."""
READ_TIMEOUT_SECONDS = 10.0
"""The whole request head must arrive within this (slow-loris clients are cut off)."""
WRITE_TIMEOUT_SECONDS = 10.0
"""The response must be taken within this, else the connection is aborted."""
HANDLER_TIMEOUT_SECONDS = 30.0
"""A handler (a health check waiting on a dead backend) answers 500 after this."""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[str, str], Awaitable[Response]]


def _encode(response: Response) -> bytes:
    reason = _REASONS.get(response.status, "Unknown")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
        *(f"{key}: {value}" for key, value in response.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


async def start_server(
    handler: Handler,
    *,
    host: str | None,
    port: int,
    max_connections: int = MAX_CONNECTIONS,
    read_timeout: float = READ_TIMEOUT_SECONDS,
    write_timeout: float = WRITE_TIMEOUT_SECONDS,
    handler_timeout: float = HANDLER_TIMEOUT_SECONDS,
) -> asyncio.Server:
    """Listens on ``host:port`` (all interfaces when host is None; port 0 picks a free port)."""
    active = 0

    async def serve(reader: asyncio.StreamReader) -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_timeout)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3:
            return _encode(Response(400, b"Bad Request"))
        method, target, _ = parts
        try:
            response = await asyncio.wait_for(handler(method, target.split("?", 1)[0]), handler_timeout)
        except TimeoutError:
            logger.warning("HTTP handler for %s did not answer within %ss", target.split("?", 1)[0], handler_timeout)
            response = Response(500, b"Internal Server Error")
        except Exception as e:
            logger.warning("HTTP handler failed: %s", e, exc_info=e)
            response = Response(500, b"Internal Server Error")
        return _encode(response)

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= max_connections:
            writer.transport.abort()  # refused at once: nothing of this client is kept
            return
        active += 1
        clean = False
        try:
            writer.write(await serve(reader))
            await asyncio.wait_for(writer.drain(), write_timeout)
            clean = True
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            active -= 1
            if clean:
                writer.close()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), write_timeout)
            writer.transport.abort()  # a no-op after a clean close; frees a stuck client's socket at once

    return await asyncio.start_server(on_connection, host, port, limit=_MAX_HEAD)


def bound_port(server: asyncio.Server) -> int:
    """The port a server listens on (useful after binding port 0)."""
    port: int = server.sockets[0].getsockname()[1]
    return port
