"""A minimal HTTP/1.1 responder on asyncio streams, for the health check and metrics endpoints.

Both endpoints answer tiny GET requests from probes and scrapers, so a full web framework would be
a heavy dependency for little: this reads the request head, calls a handler with the method and
path, writes one response and closes the connection.
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

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
_MAX_HEAD = 16 * 1024
_READ_TIMEOUT_SECONDS = 10


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[str, str], Awaitable[Response]]


async def start_server(handler: Handler, *, host: str | None, port: int) -> asyncio.Server:
    """Listens on ``host:port`` (all interfaces when host is None; port 0 picks a free port)."""

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_SECONDS)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3:
                response = Response(400, b"Bad Request")
            else:
                method, target, _ = parts
                try:
                    response = await handler(method, target.split("?", 1)[0])
                except Exception as e:
                    logger.warning("HTTP handler failed: %s", e, exc_info=e)
                    response = Response(500, b"Internal Server Error")
            reason = _REASONS.get(response.status, "Unknown")
            lines = [
                f"HTTP/1.1 {response.status} {reason}",
                f"Content-Type: {response.content_type}",
                f"Content-Length: {len(response.body)}",
                "Connection: close",
                *(f"{key}: {value}" for key, value in response.headers.items()),
            ]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(on_connection, host, port, limit=_MAX_HEAD)


def bound_port(server: asyncio.Server) -> int:
    """The port a server listens on (useful after binding port 0)."""
    port: int = server.sockets[0].getsockname()[1]
    return port
