"""Real network faults between a running app and Redis, PostgreSQL and MariaDB, through Toxiproxy.

Each test runs an app on the real clock against a Toxiproxy proxy in front of the shared server,
with ``backend_timeout`` of one second, then injects a fault while a 0.3 s interval task runs:

* blackhole: connections stay open and every byte is dropped (a half-open connection). Without a
  deadline the app waits for an answer that never comes (the kernel gives up after ~2 hours), so
  these tests fail with the deadline removed, however long they wait: a call in flight when the
  fault starts never gets its answer, even after the fault ends.
* reset: every connection is reset as soon as data flows.
* latency above the deadline: every call overruns.
* slow close + blackhole at shutdown: closing the backend must not hang the app's exit.

After each fault is removed the app must run the task again without a restart: the timed-out
connections were discarded and fresh ones opened. The waits below are bounds on a condition, not
timing assertions; they are a few deadlines long, far below anything a hung connection could
recover from by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
import uuid
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import TypeVar

import pytest

import faultkit
from pyncette import Context
from pyncette import Pyncette
from pyncette import PyncetteContext
from pyncette.deadline import BackendTimeoutError

pytestmark = [pytest.mark.services]

BACKENDS = ["redis", "postgres", "mariadb"]
DEADLINE = 1.0
T = TypeVar("T")
#: How long a condition may take: several deadlines plus a loaded machine's slack.
BOUND = 30.0


@pytest.fixture
def proxy_for(toxiproxy_api: str) -> Any:
    proxies: list[faultkit.Proxy] = []

    def make(url: str) -> faultkit.Proxy:
        proxy = faultkit.create_proxy(url, prefix="faults", api=toxiproxy_api)
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        with contextlib.suppress(Exception):
            proxy.delete()


def backend_config(request: pytest.FixtureRequest, backend: str, proxy_for: Any) -> tuple[dict[str, Any], Any]:
    """App keywords that reach ``backend`` through a fresh proxy, and the proxy."""
    unique = f"faults_{uuid.uuid4().hex[:12]}"
    if backend == "redis":
        from pyncette.redis import redis_repository

        url = request.getfixturevalue("redis_url")
        proxy = proxy_for(url)
        return {
            "repository_factory": redis_repository,
            "redis_url": proxy.url_for(url),
            "redis_namespace": unique,
        }, proxy
    if backend == "postgres":
        from pyncette.postgres import postgres_repository

        url = request.getfixturevalue("postgres_url")
        proxy = proxy_for(url)
        return {
            "repository_factory": postgres_repository,
            "postgres_url": proxy.url_for(url),
            "postgres_table_name": unique,
        }, proxy
    from pyncette.mysql import mysql_repository

    params = request.getfixturevalue("mysql_params")
    proxy = proxy_for(request.getfixturevalue("mysql_url"))
    return {
        "repository_factory": mysql_repository,
        "mysql_host": "127.0.0.1",
        "mysql_port": proxy.port,
        "mysql_user": params["user"],
        "mysql_password": params["password"],
        "mysql_database": params["database"],
        "mysql_table_name": unique,
    }, proxy


@dataclass
class Running:
    context: PyncetteContext
    runs: list[float] = field(default_factory=list)  # time.monotonic() of each run


async def answered(call: Callable[[], Awaitable[T]], bound: float = BOUND) -> T:
    """``await call()``, again after each ``BackendTimeoutError``, until it answers within ``bound``."""
    deadline = time.monotonic() + bound
    while True:
        try:
            return await call()
        except BackendTimeoutError:
            if time.monotonic() > deadline:
                raise


async def eventually(check: Callable[[], bool], what: str, bound: float = BOUND) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {bound}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_app(config: dict[str, Any]) -> AsyncIterator[Running]:
    app = Pyncette(poll_interval=datetime.timedelta(seconds=0.2), backend_timeout=DEADLINE, **config)
    state: list[Running] = []

    @app.task(interval=datetime.timedelta(seconds=0.3))
    async def tick(context: Context) -> None:
        state[0].runs.append(time.monotonic())

    async with app.create() as context:
        state.append(Running(context))
        loop = asyncio.create_task(context.run())
        try:
            yield state[0]
        finally:
            context.shutdown()
            await asyncio.wait_for(loop, BOUND)


def timeouts_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any("did not answer within" in record.getMessage() for record in caplog.records)


def backend_errors_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return any("Polling the backend failed" in record.getMessage() for record in caplog.records)


async def resumes(running: Running, proxy: faultkit.Proxy) -> float:
    """Heals the proxy and waits until the task has run twice more; returns the seconds it took."""
    before = len(running.runs)
    healed = time.monotonic()
    proxy.heal()
    await eventually(lambda: len(running.runs) >= before + 2, "the task to run again after the fault ended")
    return running.runs[before] - healed


@pytest.mark.parametrize("backend", BACKENDS)
async def test_app_resumes_after_a_blackholed_connection(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    async with running_app(config) as running:
        await eventually(lambda: len(running.runs) >= 2, "the task to run")
        proxy.blackhole()
        await eventually(lambda: timeouts_logged(caplog), "a backend call to overrun its deadline")
        # A database outage is a readiness failure, never a liveness failure.
        await eventually(lambda: not running.context.health().ready, "readiness to report the outage")
        health = running.context.health()
        assert health.alive, health
        assert "did not answer within" in health.backend, health
        seconds = await resumes(running, proxy)
        await eventually(lambda: running.context.health().ready, "readiness to recover")
    print(f"\n{backend}: first run {seconds:.2f}s after a blackhole ended (backend_timeout {DEADLINE}s)")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_app_resumes_after_connections_are_reset(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    async with running_app(config) as running:
        await eventually(lambda: len(running.runs) >= 2, "the task to run")
        proxy.reset()
        await eventually(lambda: backend_errors_logged(caplog), "a poll to fail on a reset connection")
        await resumes(running, proxy)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_app_resumes_after_latency_above_the_deadline(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    async with running_app(config) as running:
        await eventually(lambda: len(running.runs) >= 2, "the task to run")
        proxy.latency(int(DEADLINE * 1000 * 5))
        await eventually(lambda: timeouts_logged(caplog), "a backend call to overrun its deadline")
        await resumes(running, proxy)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_shutdown_finishes_while_the_backend_hangs(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    # Leaving running_app shuts the app down and must finish (asyncio.wait_for bounds it) although
    # every connection hangs and closing one is delayed for a minute.
    async with running_app(config) as running:
        await eventually(lambda: len(running.runs) >= 2, "the task to run")
        proxy.slow_close(60_000)
        proxy.blackhole()
        await eventually(lambda: timeouts_logged(caplog), "a backend call to overrun its deadline")
    proxy.heal()


@contextlib.asynccontextmanager
async def app_with_one_off(
    config: dict[str, Any], *, lease_seconds: float = 60
) -> AsyncIterator[tuple[PyncetteContext, asyncio.Event, asyncio.Event]]:
    """An app running one one-off execution that holds until the test releases it."""
    app = Pyncette(poll_interval=datetime.timedelta(seconds=0.2), backend_timeout=DEADLINE, **config)
    started, release = asyncio.Event(), asyncio.Event()

    @app.dynamic_task(lease_duration=datetime.timedelta(seconds=lease_seconds))
    async def job(context: Context) -> None:
        started.set()
        await release.wait()

    async with app.create() as context:
        loop = asyncio.create_task(context.run())
        try:
            await context.schedule_task(job, "once", execute_at=context.clock.now())
            await asyncio.wait_for(started.wait(), BOUND)
            yield context, release, started
        finally:
            release.set()
            context.shutdown()
            await asyncio.wait_for(loop, BOUND)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_commit_that_times_out_is_retried_while_the_lease_holds(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    async with app_with_one_off(config) as (context, release, _):
        job = context._app._tasks[0]
        proxy.blackhole()
        release.set()  # the run finishes while its commit cannot get through
        await eventually(lambda: logged(caplog, "Failed to commit"), "the commit to fail")
        proxy.heal()
        # Committed: the one-off entry is gone, long before its 60 s lease would have expired. A
        # dropped commit would leave it leased (and run it again after the lease).
        states: list[Any] = [object()]

        async def check() -> None:
            states[0] = await context.get_task(job, "once")

        deadline = time.monotonic() + BOUND
        while states[0] is not None:
            assert time.monotonic() < deadline, f"the entry is still stored: {states[0]!r}"
            with contextlib.suppress(Exception):
                await check()
            await asyncio.sleep(0.05)
        assert not logged(caplog, "Gave up trying to commit")


async def test_results_sent_with_a_lease_that_fails_are_committed_after_the_fault(
    request: pytest.FixtureRequest, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Redis sends a batch's results with the next lease (one script call): when that call fails,
    # the results go back to the flusher and are retried; nothing runs twice, nothing stays leased.
    config, proxy = backend_config(request, "redis", proxy_for)
    caplog.set_level(logging.WARNING)
    app = Pyncette(
        poll_interval=datetime.timedelta(seconds=0.2),
        backend_timeout=DEADLINE,
        batch_size=5,
        concurrency_limit=5,
        **config,
    )
    release = asyncio.Event()
    started: list[str] = []
    ran: list[str] = []

    @app.dynamic_task()
    async def job(context: Context) -> None:
        started.append(context.task.name)
        await release.wait()
        ran.append(context.task.name)

    async with app.create() as context:
        for i in range(20):
            await context.schedule_task(job, f"i{i}", execute_at=context.clock.now())
        loop = asyncio.create_task(context.run())
        try:
            await eventually(lambda: len(started) == 5, "the first batch to start")
            proxy.blackhole()
            release.set()  # the batch finishes; its results leave with the next lease, which hangs
            await eventually(lambda: logged(caplog, "Failed to commit 5 execution(s)"), "the results to fail")
            proxy.heal()
            await eventually(lambda: len(ran) == 20, "every instance to run")
            await answered(context.drain)
            remaining = await answered(lambda: context.list_tasks(job))
            assert remaining.tasks == []  # every result committed, none left leased
        finally:
            release.set()
            context.shutdown()
            await asyncio.wait_for(loop, BOUND)
    assert sorted(ran) == sorted(f"i{i}" for i in range(20))  # each once
    assert not logged(caplog, "Gave up trying to commit")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_commit_is_given_up_and_logged_once_the_lease_would_expire(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    async with app_with_one_off(config, lease_seconds=3) as (_, release, _):
        proxy.blackhole()
        release.set()
        await eventually(
            lambda: logged(caplog, "Gave up trying to commit 1 execution(s) (job:once@"), "the give-up log"
        )
        proxy.heal()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_heartbeats_overrun_their_deadline_and_extend_the_lease_again_after_the_fault(
    request: pytest.FixtureRequest, backend: str, proxy_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from pyncette.utils import with_heartbeat

    config, proxy = backend_config(request, backend, proxy_for)
    caplog.set_level(logging.WARNING)
    app = Pyncette(poll_interval=datetime.timedelta(seconds=0.2), backend_timeout=DEADLINE, **config)
    started, release = asyncio.Event(), asyncio.Event()
    runs: list[datetime.datetime] = []

    # A heartbeat every second keeps an 8 s lease alive.
    @app.dynamic_task(lease_duration=datetime.timedelta(seconds=8))
    @with_heartbeat(lease_remaining_ratio=0.125)
    async def job(context: Context) -> None:
        runs.append(context.scheduled_at)
        started.set()
        await release.wait()

    async with app.create() as context:
        loop = asyncio.create_task(context.run())
        try:
            await context.schedule_task(job, "long", execute_at=context.clock.now())
            await asyncio.wait_for(started.wait(), BOUND)
            proxy.blackhole()
            await eventually(lambda: logged(caplog, "Heartbeating on"), "a heartbeat to overrun its deadline")
            proxy.heal()
            # The first call after the fault may still find the pool busy replacing the connections the
            # blackhole spoiled (slow on a loaded machine): retried within the bound, as a caller would.
            state = await answered(lambda: context.get_task(job, "long"))
            assert state is not None and state.locked_until is not None
            first = state.locked_until
            # The next heartbeat extends the lease: the heartbeater was not left hanging on the
            # blackholed connection (which never answers, even after the fault ends).
            extended: list[bool] = [False]

            async def check() -> None:
                again = await context.get_task(job, "long")
                extended[0] = again is not None and again.locked_until is not None and again.locked_until > first

            deadline = time.monotonic() + BOUND
            while not extended[0]:
                assert time.monotonic() < deadline, "the lease was never extended after the fault"
                await check()
                await asyncio.sleep(0.1)
        finally:
            release.set()
            context.shutdown()
            await asyncio.wait_for(loop, BOUND)
    assert len(runs) == 1, runs
