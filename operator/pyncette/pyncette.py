"""The public API of the app: ``Pyncette`` declares tasks, fixtures and middlewares and opens a run.

Three files, one job each:

* here, what users call: ``Pyncette`` (``@app.task``, ``@app.dynamic_task``, ``use_fixture``,
  ``create()``, ``main()``) and the default repository factory;
* ``pyncette.context``: the running app (``PyncetteContext``), its run-time API and the main loop;
* ``pyncette._main``: the process entry point behind ``app.main()`` (logging, uvloop, signals).

``PyncetteContext`` is re-exported here, so ``from pyncette.pyncette import PyncetteContext`` keeps
working as in pyncette 1.x.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from typing import TypeVar

from pyncette._flusher import ResultFlusher
from pyncette.clock import Clock
from pyncette.clock import SystemClock
from pyncette.context import PyncetteContext
from pyncette.deadline import BackendTimeoutError
from pyncette.deadline import backend_timeout
from pyncette.deadline import bounded
from pyncette.executor import DEFAULT_CONCURRENCY_LIMIT
from pyncette.executor import DefaultExecutor
from pyncette.model import Context
from pyncette.model import Decorator
from pyncette.model import FixtureFunc
from pyncette.model import MiddlewareFunc
from pyncette.model import TaskFunc
from pyncette.repository import Repository
from pyncette.repository import RepositoryFactory
from pyncette.task import PartitionedTask
from pyncette.task import Task

__all__ = ["Pyncette", "PyncetteContext", "default_repository_factory"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_BATCH_SIZE = 100
DEFAULT_POLL_INTERVAL = datetime.timedelta(seconds=1)


def _current_time() -> datetime.datetime:
    """The wall-clock "now" of the default clock (pyncette 1.x's name: tests written for 1.x patch it)."""
    return datetime.datetime.now(datetime.UTC)


class _DefaultClock(SystemClock):
    """``SystemClock`` whose "now" goes through ``_current_time``, looked up at every call."""

    def now(self) -> datetime.datetime:
        return _current_time()


def default_repository_factory(**kwargs: Any) -> AbstractAsyncContextManager[Repository]:
    """SQLite when ``sqlite_database`` is configured, otherwise the in-memory backend.

    Backends are imported here rather than at module import time, so the app does not depend on
    any particular one.
    """
    if "sqlite_database" in kwargs:
        from pyncette.sqlite import sqlite_repository

        return sqlite_repository(**kwargs)
    from pyncette.memory import memory_repository

    return memory_repository(**kwargs)


def _task_name(func: Any, kwargs: dict[str, Any]) -> str:
    name = kwargs.get("name") or getattr(func, "__name__", None)
    if not isinstance(name, str) or not name:
        raise ValueError("Unable to determine name for the task")
    return name


class Pyncette:
    """A Pyncette app: tasks, fixtures, middlewares and the backend configuration.

    ``repository_factory`` defaults to SQLite when ``sqlite_database=`` is given, else in-memory.
    Other keywords (``batch_size``, ``concurrency_limit``, backend settings such as
    ``sqlite_database``) are passed to the repository factory and the executor, as in 1.x.
    ``clock`` replaces the time source (tests pass a ``FakeClock``). ``backend_timeout`` (a
    timedelta or seconds, default ``pyncette.deadline.DEFAULT_BACKEND_TIMEOUT``, 10 s) is the
    deadline of every backend call; the backends also apply it to their drivers.
    """

    _tasks: list[Task]
    _fixtures: list[tuple[str, Callable[[PyncetteContext], AbstractAsyncContextManager[Any]]]]
    _middlewares: list[MiddlewareFunc]
    _repository_factory: RepositoryFactory
    _poll_interval: datetime.timedelta
    _executor_cls: Callable[..., Any]
    _configuration: dict[str, Any]
    _batch_size: int
    _backend_timeout: datetime.timedelta

    def __init__(
        self,
        repository_factory: RepositoryFactory = default_repository_factory,
        executor_cls: Callable[..., Any] = DefaultExecutor,
        poll_interval: datetime.timedelta = DEFAULT_POLL_INTERVAL,
        *,
        clock: Clock | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(poll_interval, datetime.timedelta) or poll_interval <= datetime.timedelta():
            raise ValueError(f"Pyncette: poll_interval: must be a positive timedelta, got {poll_interval!r}")
        batch_size = kwargs.get("batch_size", DEFAULT_BATCH_SIZE)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"Pyncette: batch_size: must be an integer >= 1, got {batch_size!r}")
        limit = kwargs.get("concurrency_limit", DEFAULT_CONCURRENCY_LIMIT)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"Pyncette: concurrency_limit: must be an integer >= 1, got {limit!r}")
        self._tasks = []
        self._fixtures = []
        self._middlewares = []
        self._poll_interval = poll_interval
        self._executor_cls = executor_cls
        self._repository_factory = repository_factory
        self._configuration = kwargs
        self._batch_size = batch_size
        self._backend_timeout = backend_timeout(kwargs)
        self.clock: Clock = clock or _DefaultClock()

    # ---- declaring tasks ----

    def task(self, **kwargs: Any) -> Callable[[TaskFunc], Task]:
        """Decorator declaring a static task (``schedule=`` cron or ``interval=``)."""

        def _declare(func: TaskFunc) -> Task:
            body = func.task_func if isinstance(func, Task) else func
            name = _task_name(body, kwargs)
            self._check_task_name(name)
            task = Task(func=body, dynamic=False, **{**kwargs, "name": name})
            self._tasks.append(task)
            return task

        return _declare

    def dynamic_task(self, **kwargs: Any) -> Callable[[TaskFunc], Task]:
        """Decorator declaring a dynamic task template (instances come from ``schedule_task``)."""

        def _declare(func: TaskFunc) -> Task:
            body = func.task_func if isinstance(func, Task) else func
            name = _task_name(body, kwargs)
            self._check_task_name(name)
            task = Task(func=body, dynamic=True, **{**kwargs, "name": name})
            self._tasks.append(task)
            return task

        return _declare

    def partitioned_task(self, **kwargs: Any) -> Callable[[TaskFunc], PartitionedTask]:
        """Decorator declaring a dynamic task whose instances are spread over ``partition_count`` partitions."""

        def _declare(func: TaskFunc) -> PartitionedTask:
            body = func.task_func if isinstance(func, Task) else func
            name = _task_name(body, kwargs)
            self._check_task_name(name)
            task = PartitionedTask(func=body, **{**kwargs, "name": name})
            self._tasks.extend(task.get_partitions())
            return task

        return _declare

    def _check_task_name(self, name: str) -> None:
        if any(task.name == name for task in self._tasks):
            raise ValueError(f"task {name!r}: name: duplicate task name")

    # ---- fixtures and middlewares ----

    def use_fixture(self, fixture_name: str, func: FixtureFunc) -> None:
        """Registers an async generator whose yielded value every task sees as ``context.<fixture_name>``."""
        if fixture_name in Context.__annotations__:
            raise ValueError(f"fixture {fixture_name!r}: name: reserved name")
        if any(name == fixture_name for name, _ in self._fixtures):
            raise ValueError(f"fixture {fixture_name!r}: name: duplicate fixture name")
        self._fixtures.append((fixture_name, contextlib.asynccontextmanager(func)))

    def use_middleware(self, func: MiddlewareFunc) -> None:
        """Adds a middleware; the first one added is the outermost."""
        self._middlewares.append(func)

    def fixture(self, name: str | None = None) -> Decorator[FixtureFunc]:
        """Decorator form of ``use_fixture`` (the name defaults to the function's)."""

        def _declare(func: FixtureFunc) -> FixtureFunc:
            fixture_name = name or getattr(func, "__name__", None)
            if not fixture_name:
                raise ValueError("Unable to determine name for the fixture")
            self.use_fixture(fixture_name, func)
            return func

        return _declare

    def middleware(self, func: MiddlewareFunc) -> MiddlewareFunc:
        """Decorator form of ``use_middleware``."""
        self._middlewares.append(func)
        return func

    # ---- running ----

    @contextlib.asynccontextmanager
    async def create(self, context_items: dict[str, Any] | None = None) -> AsyncIterator[PyncetteContext]:
        """Opens the backend and the executor and yields a context to ``run()`` the app with.

        Leaving the block waits for running executions, flushes their results, closes the
        fixtures and then the backend (in that order).
        """
        timeout = self._backend_timeout.total_seconds()
        async with _closed_within(self._repository_factory(**self._configuration), timeout) as repository:
            context: PyncetteContext | None = None

            def on_next_due(when: datetime.datetime) -> None:
                if context is not None:
                    context._note_due(when)

            flusher = ResultFlusher(
                repository, clock=self.clock, on_next_due=on_next_due, timeout=self._backend_timeout.total_seconds()
            )
            # Exit order (reverse): executor drains, fixtures close, results flush, backend closes.
            async with (
                flusher,
                contextlib.AsyncExitStack() as fixtures,
                self._executor_cls(**self._configuration) as executor,
            ):
                context = PyncetteContext(self, repository, executor, clock=self.clock, flusher=flusher)
                root = Context()
                root.app_context = context
                context.initialize(root)
                for name, fixture in self._fixtures:
                    setattr(root, name, await fixtures.enter_async_context(fixture(context)))
                for name, value in (context_items or {}).items():
                    context.add_to_context(name, value)
                yield context

    def main(self) -> None:
        """Entry point for console apps: logging from ``LOG_LEVEL``, graceful SIGINT/SIGTERM handling.

        The first signal stops leasing and waits for running tasks; a second one exits at once.
        ``USE_UVLOOP=1`` runs the app on uvloop when it is installed.
        """
        from pyncette._main import run_app

        run_app(self)


@contextlib.asynccontextmanager
async def _closed_within(manager: AbstractAsyncContextManager[_T], seconds: float) -> AsyncIterator[_T]:
    """Enters ``manager``; gives its exit ``seconds``, then abandons it with a warning.

    A graceful close over a hung connection would never finish, so closing the backend is bounded
    by ``backend_timeout`` like every other backend call.
    """
    value = await manager.__aenter__()
    error: BaseException | None = None
    try:
        yield value
    except BaseException as e:
        error = e
        raise
    finally:
        try:
            await bounded(
                manager.__aexit__(type(error) if error else None, error, error.__traceback__ if error else None),
                operation="closing the backend",
                timeout=seconds,
            )
        except BackendTimeoutError as e:
            logger.warning("%s; its connections were abandoned", e)
