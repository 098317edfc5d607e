"""The health check and Prometheus endpoints, over real HTTP on 127.0.0.1 ephemeral ports."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable

from core_helpers import eventually
from core_helpers import running
from prometheus_client import CollectorRegistry

from pyncette import Context
from pyncette import FailureMode
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette import PyncetteContext
from pyncette._http import Response
from pyncette._http import bound_port
from pyncette._http import start_server
from pyncette.healthcheck import use_healthcheck_server
from pyncette.prometheus import use_prometheus


async def http(port: int, path: str = "/health", method: str = "GET") -> tuple[int, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.decode().partition("\r\n\r\n")
    return int(head.split(" ")[1]), body


def port_of(ctx: PyncetteContext, fixture: str) -> int:
    return bound_port(getattr(ctx._root_context, fixture))


async def test_healthcheck_follows_the_last_successful_poll(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    use_healthcheck_server(app, port=0, bind_address="127.0.0.1")

    async with app.create() as ctx:
        port = port_of(ctx, "_healthcheck")
        assert await http(port) == (200, "OK")
        # Not polling for longer than two poll intervals plus backend_timeout (the loop is not
        # running) makes it unhealthy.
        await clock.advance(seconds=2 * 1 + 10 + 1)
        assert await http(port) == (500, "Not OK")
        loop = asyncio.create_task(ctx.run())
        await eventually(lambda: ctx.last_tick == clock.now())
        assert await http(port) == (200, "OK")
        assert (await http(port, method="POST"))[0] == 405
        ctx.shutdown()
        await loop


async def test_a_replica_busy_at_its_concurrency_limit_is_alive_and_ready(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app(concurrency_limit=1, poll_interval=datetime.timedelta(seconds=1))
    release = asyncio.Event()
    started: list[datetime.datetime] = []

    @app.task(interval=datetime.timedelta(seconds=1))
    async def slow(context: Context) -> None:
        started.append(context.scheduled_at)
        await release.wait()

    use_healthcheck_server(app, port=0, bind_address="127.0.0.1")
    async with running(app) as ctx:
        port = port_of(ctx, "_healthcheck")
        await clock.advance(seconds=1)
        await eventually(lambda: len(started) == 1)
        # The only slot is taken for a long time: the loop waits for it and polls nothing.
        await clock.advance(seconds=600)
        assert (await http(port, "/livez"))[0] == 200
        assert (await http(port, "/readyz"))[0] == 200
        assert await http(port) == (200, "OK")
        release.set()


async def test_a_loop_that_is_not_running_is_alive_but_not_ready(
    make_app: Callable[..., Pyncette], clock: FakeClock
) -> None:
    app = make_app()
    use_healthcheck_server(app, port=0, bind_address="127.0.0.1")
    async with app.create() as ctx:
        port = port_of(ctx, "_healthcheck")
        await clock.advance(seconds=60)
        status, body = await http(port, "/readyz")
        assert status == 500
        assert "backend: not polled since" in body
        assert (await http(port, "/livez"))[0] == 200


async def test_custom_healthcheck_handler_and_its_errors(make_app: Callable[..., Pyncette]) -> None:
    app = make_app()
    verdicts: list[bool | Exception] = [False, RuntimeError("broken")]

    async def handler(app_context: PyncetteContext) -> bool:
        verdict = verdicts.pop(0)
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    use_healthcheck_server(app, port=0, bind_address="127.0.0.1", healthcheck_handler=handler)
    async with app.create() as ctx:
        port = port_of(ctx, "_healthcheck")
        assert await http(port) == (500, "Not OK")
        assert await http(port) == (500, "Not OK")


async def test_prometheus_metrics_are_served(make_app: Callable[..., Pyncette], clock: FakeClock) -> None:
    registry = CollectorRegistry()
    app = make_app()
    use_prometheus(app, registry=registry, port=0, bind_address="127.0.0.1")
    done: list[str] = []

    @app.task(interval=datetime.timedelta(seconds=1))
    async def fine(context: Context) -> None:
        done.append("fine")

    @app.task(interval=datetime.timedelta(seconds=1), failure_mode=FailureMode.COMMIT)
    async def broken(context: Context) -> None:
        done.append("broken")
        raise ValueError("nope")

    async with running(app) as ctx:
        await clock.advance(seconds=3)
        await eventually(lambda: len(done) == 6)
        await ctx._flusher.flush()
        status, body = await http(port_of(ctx, "_prometheus_http"), "/metrics")
        assert (await http(port_of(ctx, "_prometheus_http"), "/elsewhere"))[0] == 404

    assert status == 200
    assert 'pyncette_tasks_total{task_name="fine"} 3.0' in body
    assert 'pyncette_tasks_failures_total{exception_type="ValueError",task_name="broken"} 3.0' in body
    assert 'pyncette_tasks_staleness_seconds_count{task_name="fine"} 3.0' in body
    assert 'pyncette_repository_ops_total{operation="commit_task",task_name="fine"} 3.0' in body
    assert 'pyncette_repository_batch_ops_total{operation="lease_due"}' in body
    assert "pyncette_ticks_total" in body


async def _answer(port: int) -> tuple[int, str]:
    return await asyncio.wait_for(http(port, "/anything"), 30)


async def test_the_http_server_caps_concurrent_connections() -> None:
    """Connections beyond the cap are closed at once; a probe gets through when a slot frees."""

    async def ok(method: str, path: str) -> Response:
        return Response(200, b"OK")

    server = await start_server(ok, host="127.0.0.1", port=0, max_connections=2)
    port = bound_port(server)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]  # they send nothing
        try:
            refused = await _answer(port)
        except (ConnectionError, IndexError, ValueError):  # reset, or closed before a status line
            refused = None
        assert refused is None
        for _, writer in idle:
            writer.close()
            await writer.wait_closed()
        # The server sees the closes as it reads; the next request after that is served.
        answers = [await _answer_or_none(port)]
        while answers[-1] is None:
            answers.append(await _answer_or_none(port))
        assert answers[-1] == (200, "OK")
    finally:
        server.close()
        await server.wait_closed()


async def _answer_or_none(port: int) -> tuple[int, str] | None:
    try:
        return await _answer(port)
    except (ConnectionError, IndexError, ValueError):
        return None


async def test_the_http_server_cuts_off_slow_clients() -> None:
    """A client that never finishes its request head is disconnected (its slot comes back)."""

    async def ok(method: str, path: str) -> Response:
        return Response(200, b"OK")

    server = await start_server(ok, host="127.0.0.1", port=0, max_connections=1, read_timeout=0.2)
    port = bound_port(server)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: loc")  # ...and nothing more
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 30) == b""  # the server hung up
        writer.close()
        assert await _answer(port) == (200, "OK")  # and serves the next client
    finally:
        server.close()
        await server.wait_closed()


async def test_a_stuck_handler_answers_500_after_its_timeout() -> None:
    never = asyncio.Event()

    async def stuck(method: str, path: str) -> Response:
        await never.wait()
        return Response(200, b"OK")

    server = await start_server(stuck, host="127.0.0.1", port=0, handler_timeout=0.2)
    try:
        assert (await _answer(bound_port(server)))[0] == 500
    finally:
        server.close()
        await server.wait_closed()
