"""Prometheus instrumentation (optional extra ``pyncette[prometheus]``).

``use_prometheus(app)`` measures, under pyncette 1.x's metric names:

* ticks (one poll of the backend): ``pyncette_ticks_total``, ``_duration_seconds``,
  ``_failures_total``, ``_in_progress``;
* task executions: ``pyncette_tasks_*`` by ``task_name`` (the template's name, so dynamic instances
  do not explode cardinality) and the start lag histogram ``pyncette_tasks_staleness_seconds``;
* repository operations: ``pyncette_repository_ops_*`` by ``operation`` and ``task_name``, with
  1.x's operation names and counts (``poll_task``, ``poll_dynamic_task``, ``commit_task``,
  ``unlock_task``, ``extend_lease``, ``register_task``...), although the scheduler makes them in
  batches (see ``MeteredRepository``);
* the batch calls themselves (new, one per round trip): ``pyncette_repository_batch_ops_*`` by
  ``operation`` (``lease_due``, ``commit_executions``, ``unlock_executions``, ``extend_leases``,
  ``register_tasks``).

Metrics go to ``prometheus_client.REGISTRY`` unless another registry is given. Like 1.x this does
not serve them by itself (combine it with ``prometheus_client.start_http_server``), unless a
``port`` is given, in which case ``/metrics`` is served on it while the app runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest

from pyncette._http import Response
from pyncette._http import bound_port
from pyncette._http import start_server
from pyncette.model import Context
from pyncette.model import ContinuationToken
from pyncette.model import ExecutionMode
from pyncette.model import Lease
from pyncette.model import LeaseBatch
from pyncette.model import LeasedExecution
from pyncette.model import ListTasksResponse
from pyncette.model import NextFunc
from pyncette.model import PollResponse
from pyncette.model import QueryResponse
from pyncette.model import TaskState
from pyncette.pyncette import Pyncette
from pyncette.pyncette import PyncetteContext
from pyncette.repository import Repository
from pyncette.repository import RepositoryFactory
from pyncette.task import Task

logger = logging.getLogger(__name__)

TASK_LABELS = ["task_name"]
_STALENESS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    25.0,
    50.0,
    75.0,
    100.0,
    250.0,
    500.0,
    750.0,
    1000.0,
    math.inf,
)


def _task_labels(task: Task) -> dict[str, str]:
    # Dynamic instances would explode cardinality; label by template name.
    return {"task_name": task.parent_task.name if task.parent_task else task.name}


class OperationMetricSet:
    """Counter, duration histogram, failure counter and in-progress gauge of one kind of operation."""

    def __init__(self, operation_name: str, labels: list[str], registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"pyncette_{operation_name}_total", f"Total count of {operation_name} operations", labels, registry=registry
        )
        self.requests_duration = Histogram(
            f"pyncette_{operation_name}_duration_seconds",
            f"Histogram of {operation_name} processing time",
            labels,
            registry=registry,
        )
        self.exceptions = Counter(
            f"pyncette_{operation_name}_failures_total",
            f"Total count of failed {operation_name} operations",
            [*labels, "exception_type"],
            registry=registry,
        )
        self.requests_in_progress = Gauge(
            f"pyncette_{operation_name}_in_progress",
            f"Gauge of {operation_name} operations currently being processed",
            labels,
            registry=registry,
        )

    @contextlib.asynccontextmanager
    async def measure(self, **labels: str) -> AsyncIterator[None]:
        """Counts and times the wrapped block; exceptions are counted by type and re-raised."""
        in_progress = self.requests_in_progress.labels(**labels) if labels else self.requests_in_progress
        requests = self.requests.labels(**labels) if labels else self.requests
        duration = self.requests_duration.labels(**labels) if labels else self.requests_duration
        in_progress.inc()
        requests.inc()
        started = time.perf_counter()
        try:
            yield
        except Exception as e:
            self.exceptions.labels(**labels, exception_type=type(e).__name__).inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)
            in_progress.dec()


class _Metrics:
    """Every metric of one registry (created once per registry: names must be unique in it)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = OperationMetricSet("tasks", TASK_LABELS, registry)
        self.staleness = Histogram(
            "pyncette_tasks_staleness_seconds",
            "Histogram of staleness of task executions (difference between scheduled and actual time)",
            TASK_LABELS,
            buckets=_STALENESS_BUCKETS,
            registry=registry,
        )
        self.repository = OperationMetricSet("repository_ops", ["operation", *TASK_LABELS], registry)
        self.repository_batches = OperationMetricSet("repository_batch_ops", ["operation"], registry)
        self.ticks = OperationMetricSet("ticks", [], registry)


_metrics_by_registry: dict[int, _Metrics] = {}


def _metrics(registry: CollectorRegistry) -> _Metrics:
    metrics = _metrics_by_registry.get(id(registry))
    if metrics is None:
        metrics = _metrics_by_registry[id(registry)] = _Metrics(registry)
    return metrics


class MeteredRepository(Repository):
    """Wraps a repository and measures every call under pyncette 1.x's operation names.

    The 1.x calls (``poll_task``, ``commit_task``...) are measured as they happen. A batch call
    counts, in ``pyncette_repository_ops_*``, every 1.x operation it stands for, labelled with each
    task's name, as 1.x counted them (its duration is the batch's); the batch call itself goes to
    ``pyncette_repository_batch_ops_*`` by ``operation`` (when ``batch_metric_set`` is given):

    * ``lease_due`` (one poll of the backend): ``poll_dynamic_task`` for every task polled and
      ``poll_task`` for every static task polled (1.x polled each of them on every tick), plus
      ``poll_task`` for every dynamic instance leased;
    * ``commit_executions``, ``unlock_executions``, ``extend_leases``: ``commit_task``,
      ``unlock_task``, ``extend_lease`` per leased execution;
    * ``register_tasks``: ``register_task`` per instance.
    """

    def __init__(
        self,
        metric_set: OperationMetricSet,
        inner_repository: Repository,
        batch_metric_set: OperationMetricSet | None = None,
    ) -> None:
        self._metric_set = metric_set
        self._batch_metric_set = batch_metric_set
        self._inner = inner_repository

    def _measure(self, operation: str, task: Task) -> AbstractAsyncContextManager[None]:
        return self._metric_set.measure(operation=operation, **_task_labels(task))

    @contextlib.asynccontextmanager
    async def _measure_batch(
        self, batch_operation: str, operations: list[tuple[str, Task]]
    ) -> AsyncIterator[Callable[[list[tuple[str, Task]]], None]]:
        """Measures one batch call as ``batch_operation`` and as the 1.x ``operations`` it stands for.

        Yields a function that adds operations known only once the call returned (such as the
        instances it leased); they are counted with the batch's duration.
        """
        metrics = self._metric_set
        labels = [{"operation": operation, **_task_labels(task)} for operation, task in operations]
        for each in labels:
            metrics.requests.labels(**each).inc()
            metrics.requests_in_progress.labels(**each).inc()
        later: list[dict[str, str]] = []

        def add(more: list[tuple[str, Task]]) -> None:
            for operation, task in more:
                each = {"operation": operation, **_task_labels(task)}
                metrics.requests.labels(**each).inc()
                later.append(each)

        batch = (
            self._batch_metric_set.measure(operation=batch_operation)
            if self._batch_metric_set is not None
            else contextlib.nullcontext()
        )
        started = time.perf_counter()
        try:
            async with batch:
                yield add
        except Exception as e:
            for each in labels:
                metrics.exceptions.labels(**each, exception_type=type(e).__name__).inc()
            raise
        finally:
            elapsed = time.perf_counter() - started
            for each in labels:
                metrics.requests_duration.labels(**each).observe(elapsed)
                metrics.requests_in_progress.labels(**each).dec()
            for each in later:
                metrics.requests_duration.labels(**each).observe(elapsed)

    async def poll_dynamic_task(
        self, utc_now: datetime.datetime, task: Task, continuation_token: ContinuationToken | None = None
    ) -> QueryResponse:
        async with self._measure("poll_dynamic_task", task):
            return await self._inner.poll_dynamic_task(utc_now, task, continuation_token)

    async def register_task(self, utc_now: datetime.datetime, task: Task, force: bool = False) -> None:
        async with self._measure("register_task", task):
            await self._inner.register_task(utc_now, task, force=force)

    async def unregister_task(self, utc_now: datetime.datetime, task: Task) -> None:
        async with self._measure("unregister_task", task):
            await self._inner.unregister_task(utc_now, task)

    async def poll_task(self, utc_now: datetime.datetime, task: Task, lease: Lease | None = None) -> PollResponse:
        async with self._measure("poll_task", task):
            return await self._inner.poll_task(utc_now, task, lease)

    async def commit_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        async with self._measure("commit_task", task):
            await self._inner.commit_task(utc_now, task, lease)

    async def extend_lease(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> Lease | None:
        async with self._measure("extend_lease", task):
            return await self._inner.extend_lease(utc_now, task, lease)

    async def unlock_task(self, utc_now: datetime.datetime, task: Task, lease: Lease) -> None:
        async with self._measure("unlock_task", task):
            await self._inner.unlock_task(utc_now, task, lease)

    async def get_task_state(self, utc_now: datetime.datetime, task: Task) -> TaskState | None:
        async with self._measure("get_task_state", task):
            return await self._inner.get_task_state(utc_now, task)

    async def list_task_states(
        self,
        utc_now: datetime.datetime,
        parent_task: Task,
        limit: int | None = None,
        continuation_token: ContinuationToken | None = None,
    ) -> ListTasksResponse:
        async with self._measure("list_task_states", parent_task):
            return await self._inner.list_task_states(utc_now, parent_task, limit, continuation_token)

    async def lease_due(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, limit: int) -> LeaseBatch:
        polled = [("poll_dynamic_task", task) for task in tasks]
        polled += [("poll_task", task) for task in tasks if not task.dynamic]
        async with self._measure_batch("lease_due", polled) as add:
            batch = await self._inner.lease_due(utc_now, tasks, limit=limit)
            add([("poll_task", e.task) for e in batch.executions if e.task.parent_task is not None])
            return batch

    async def commit_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        async with self._measure_batch("commit_executions", _leased("commit_task", executions)):
            await self._inner.commit_executions(utc_now, executions)

    async def unlock_executions(self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]) -> None:
        async with self._measure_batch("unlock_executions", _leased("unlock_task", executions)):
            await self._inner.unlock_executions(utc_now, executions)

    async def extend_leases(
        self, utc_now: datetime.datetime, executions: Sequence[LeasedExecution]
    ) -> list[Lease | None]:
        async with self._measure_batch("extend_leases", _leased("extend_lease", executions)):
            return await self._inner.extend_leases(utc_now, executions)

    async def register_tasks(self, utc_now: datetime.datetime, tasks: Sequence[Task], *, force: bool = False) -> None:
        async with self._measure_batch("register_tasks", [("register_task", task) for task in tasks]):
            await self._inner.register_tasks(utc_now, tasks, force=force)

    async def check_health(self) -> None:
        await self._inner.check_health()


def _leased(operation: str, executions: Sequence[LeasedExecution]) -> list[tuple[str, Task]]:
    """The 1.x ``operation`` once per execution that holds a lease (1.x had nothing to do for the others)."""
    return [
        (operation, execution.task)
        for execution in executions
        if execution.lease is not None and execution.task.execution_mode == ExecutionMode.AT_LEAST_ONCE
    ]


def with_prometheus_repository(
    repository_factory: RepositoryFactory, registry: CollectorRegistry = REGISTRY
) -> RepositoryFactory:
    """Wraps a repository factory so that every repository operation is measured."""
    metrics = _metrics(registry)

    @contextlib.asynccontextmanager
    async def _factory(**kwargs: Any) -> AsyncIterator[Repository]:
        async with repository_factory(**kwargs) as inner:
            yield MeteredRepository(metrics.repository, inner, batch_metric_set=metrics.repository_batches)

    return _factory


def _task_middleware(metrics: _Metrics) -> Any:
    async def prometheus_middleware(context: Context, next: NextFunc) -> None:
        labels = _task_labels(context.task)
        staleness = context.app_context.clock.now() - context.scheduled_at
        metrics.staleness.labels(**labels).observe(staleness.total_seconds())
        async with metrics.tasks.measure(**labels):
            await next()

    return prometheus_middleware


def _tick_fixture(metrics: _Metrics) -> Any:
    async def prometheus_fixture(app_context: PyncetteContext) -> AsyncIterator[None]:
        tick = app_context._tick

        async def metered_tick(*args: Any, **kwargs: Any) -> Any:
            async with metrics.ticks.measure():
                return await tick(*args, **kwargs)

        app_context._tick = metered_tick  # type: ignore[method-assign]
        yield

    return prometheus_fixture


def _http_fixture(registry: CollectorRegistry, port: int, bind_address: str | None) -> Any:
    async def respond(method: str, path: str) -> Response:
        if method != "GET":
            return Response(405, b"Method not allowed", headers={"Allow": "GET"})
        if path not in ("/metrics", "/"):
            return Response(404, b"Not found")
        return Response(200, generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    async def prometheus_http_fixture(app_context: PyncetteContext) -> AsyncIterator[asyncio.Server]:
        server = await start_server(respond, host=bind_address, port=port)
        logger.info("Prometheus metrics served on port %d at /metrics", bound_port(server))
        try:
            yield server
        finally:
            server.close()
            await server.wait_closed()

    return prometheus_http_fixture


def use_prometheus(
    app: Pyncette,
    measure_repository: bool = True,
    measure_ticks: bool = True,
    measure_tasks: bool = True,
    *,
    registry: CollectorRegistry = REGISTRY,
    port: int | None = None,
    bind_address: str | None = None,
) -> None:
    """Instruments ``app`` with Prometheus metrics.

    :param measure_repository: measure repository operations
    :param measure_ticks: measure polls of the backend
    :param measure_tasks: measure task executions and their start lag
    :param registry: where the metrics are registered (default: the global registry)
    :param port: if given, serve ``/metrics`` on this port while the app runs (0: a free port)
    :param bind_address: address for ``port`` (all interfaces when None)
    """
    metrics = _metrics(registry)
    if measure_repository:
        app._repository_factory = with_prometheus_repository(app._repository_factory, registry)
    if measure_ticks:
        app.use_fixture("_prometheus", _tick_fixture(metrics))
    if measure_tasks:
        app.use_middleware(_task_middleware(metrics))
    if port is not None:
        app.use_fixture("_prometheus_http", _http_fixture(registry, port, bind_address))
