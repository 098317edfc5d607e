"""Run Pyncette apps in separate OS processes against a shared backend and collect what they ran.

Used by the multi-process tests of every network backend (exactly-once between two processes,
``kill -9`` of a lease holder, a database restart under a running app). Backend-agnostic: a worker
gets the import path of a repository factory (``"pyncette.redis:redis_repository"``) and JSON-able
backend keywords, and runs one dynamic task, ``job``.

    async with DrainWorkers(tmp_path, factory="pyncette.redis:redis_repository", settings={...}) as workers:
        first = await workers.start()
        await register_instances(workers, [template.instantiate(...) ...])
        await workers.wait_until(lambda: workers.finished_names() >= expected, what="all instances ran")

Each worker appends ``start|done <pid> <scheduled_at> <name>`` lines to its own file (flushed at once,
so a killed worker's lines survive). With ``hold=True`` a worker starts executions and never ends
them, keeping their leases until it is killed. This file is also the worker's entry point:
``python drain_helpers.py SPEC.json OUTPUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

#: Upper bound for any single wait of these helpers; generous because the machine is shared.
DEFAULT_TIMEOUT = 120.0


def load_factory(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (a repository factory)."""
    module_name, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


@dataclass
class Event:
    kind: str  # "start" or "done"
    pid: int
    scheduled_at: str
    name: str


@dataclass
class Worker:
    process: subprocess.Popen[str]
    output: Path
    hold: bool

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ready(self) -> bool:
        return Path(f"{self.output}.ready").exists()

    def events(self) -> list[Event]:
        if not self.output.exists():
            return []
        events = []
        for line in self.output.read_text(encoding="utf-8").splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4:
                events.append(Event(parts[0], int(parts[1]), parts[2], parts[3]))
        return events

    def stderr_text(self) -> str:
        path = Path(f"{self.output}.stderr")
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@dataclass
class DrainWorkers:
    """Starts worker processes sharing one backend; stops (SIGTERM, then SIGKILL) them on exit."""

    directory: Path
    factory: str
    settings: dict[str, Any]
    task: dict[str, Any] = field(default_factory=dict)  # Task keywords: lease_duration (s), execution_mode...
    poll_interval: float = 0.1
    batch_size: int = 50
    concurrency_limit: int = 100
    workers: list[Worker] = field(default_factory=list)

    async def __aenter__(self) -> DrainWorkers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_all()

    def template_kwargs(self) -> dict[str, Any]:
        """Keywords to build the ``job`` template in the test process, matching the workers'."""
        return _task_kwargs(self.task)

    async def start(self, *, hold: bool = False, within: float = DEFAULT_TIMEOUT) -> Worker:
        """Starts one worker and returns once its app is up (backend opened, polling)."""
        number = len(self.workers)
        spec = self.directory / f"worker{number}.json"
        spec.write_text(
            json.dumps(
                {
                    "factory": self.factory,
                    "settings": self.settings,
                    "task": self.task,
                    "hold": hold,
                    "poll_interval": self.poll_interval,
                    "batch_size": self.batch_size,
                    "concurrency_limit": self.concurrency_limit,
                }
            ),
            encoding="utf-8",
        )
        output = self.directory / f"worker{number}.txt"
        process = _spawn([sys.executable, __file__, str(spec), str(output)], Path(f"{output}.stderr"))
        worker = Worker(process, output, hold)
        self.workers.append(worker)
        await self.wait_until(lambda: worker.ready, what=f"worker {number} to start", within=within)
        return worker

    def events(self) -> list[Event]:
        return [event for worker in self.workers for event in worker.events()]

    def finished(self) -> list[Event]:
        return [event for event in self.events() if event.kind == "done"]

    def finished_names(self) -> set[str]:
        return {event.name for event in self.finished()}

    async def wait_until(self, condition: Callable[[], bool], *, what: str, within: float = DEFAULT_TIMEOUT) -> None:
        """Polls ``condition`` until it holds; fails naming ``what`` after ``within`` seconds.

        Also fails at once if a worker that was not killed on purpose exited.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            for number, worker in enumerate(self.workers):
                code = worker.process.poll()
                if code is not None and code != -signal.SIGKILL:
                    raise AssertionError(
                        f"worker {number} exited with {code} while waiting for {what}: {worker.stderr_text()[-2000:]}"
                    )
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}")
            await asyncio.sleep(0.05)  # polling a condition under a deadline, not synchronising on time

    def kill(self, worker: Worker) -> None:
        """``kill -9``: the worker dies holding whatever it leased."""
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)

    async def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                # A holding worker would wait for its never-ending executions: no graceful stop for it.
                worker.process.send_signal(signal.SIGKILL if worker.hold else signal.SIGTERM)
        for worker in self.workers:
            for _ in range(int(30 / 0.05)):
                if worker.process.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                worker.process.kill()
                worker.process.wait()


def _spawn(command: list[str], stderr_path: Path) -> subprocess.Popen[str]:
    with open(stderr_path, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, text=True)


async def register_instances(workers: DrainWorkers, instances: Sequence[Any], *, now: datetime.datetime) -> None:
    """Registers instances of the workers' ``job`` template through a repository opened here."""
    factory = load_factory(workers.factory)
    async with factory(**workers.settings) as repository:
        for start in range(0, len(instances), 1000):
            await repository.register_tasks(now, instances[start : start + 1000])


# ---- scenarios shared by the backends' multi-process tests ----


def job_template(workers: DrainWorkers) -> Any:
    """The ``job`` template as the workers declare it (for registering instances from the test)."""
    from pyncette.task import Task

    async def unused(context: Any) -> None:
        raise AssertionError("instances are executed by the worker processes")

    return Task(name="job", func=unused, dynamic=True, **workers.template_kwargs())


async def scenario_exactly_once(workers: DrainWorkers, *, instances: int = 400) -> None:
    """Two processes drain ``instances`` due one-off instances: each runs exactly once in total."""
    await workers.start()
    await workers.start()
    now = datetime.datetime.now(datetime.UTC)
    template = job_template(workers)
    expected = {f"i{i:05}" for i in range(instances)}
    await register_instances(workers, [template.instantiate(n, execute_at=now) for n in sorted(expected)], now=now)
    await workers.wait_until(lambda: workers.finished_names() >= expected, what="every instance to run")
    names = [event.name for event in workers.finished()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert duplicates == [], f"ran more than once: {duplicates[:10]}"
    assert set(names) == expected
    assert all(len({e.pid for e in w.events()}) <= 1 for w in workers.workers)


async def scenario_kill_lease_holder(workers: DrainWorkers, *, instances: int = 20) -> None:
    """A worker leases instances and is killed with SIGKILL mid-run; once the leases expire the
    surviving worker runs every one of them (at-least-once)."""
    holder = await workers.start(hold=True)
    now = datetime.datetime.now(datetime.UTC)
    template = job_template(workers)
    expected = {f"k{i:03}" for i in range(instances)}
    await register_instances(workers, [template.instantiate(n, execute_at=now) for n in sorted(expected)], now=now)
    await workers.wait_until(
        lambda: {e.name for e in holder.events() if e.kind == "start"} == expected,
        what="the holder to start every instance",
    )
    survivor = await workers.start()
    workers.kill(holder)
    await workers.wait_until(
        lambda: {e.name for e in survivor.events() if e.kind == "done"} >= expected,
        what="the survivor to run the killed worker's instances",
    )
    assert not [e for e in holder.events() if e.kind == "done"]


async def scenario_restart_server(workers: DrainWorkers, restart: Callable[[], None], *, instances: int = 10) -> None:
    """A database restart under a running app: the app keeps running and every recurring instance
    runs again afterwards (nothing registered was lost)."""
    worker = await workers.start()
    now = datetime.datetime.now(datetime.UTC)
    template = job_template(workers)
    expected = {f"r{i:03}" for i in range(instances)}
    every = datetime.timedelta(seconds=1)
    await register_instances(workers, [template.instantiate(n, interval=every) for n in sorted(expected)], now=now)
    await workers.wait_until(lambda: workers.finished_names() >= expected, what="every instance to run once")

    await asyncio.get_running_loop().run_in_executor(None, restart)
    restarted = datetime.datetime.now(datetime.UTC)

    def ran_since_restart() -> set[str]:
        return {
            e.name
            for e in worker.events()
            if e.kind == "done" and datetime.datetime.fromisoformat(e.scheduled_at) > restarted
        }

    await workers.wait_until(lambda: ran_since_restart() >= expected, what="every instance to run after the restart")
    assert worker.process.poll() is None, "the app died with the database"
    assert "Traceback" not in worker.stderr_text()


def _task_kwargs(task: dict[str, Any]) -> dict[str, Any]:
    from pyncette.model import ExecutionMode

    kwargs: dict[str, Any] = {}
    if "lease_duration" in task:
        kwargs["lease_duration"] = datetime.timedelta(seconds=task["lease_duration"])
    if "execution_mode" in task:
        kwargs["execution_mode"] = ExecutionMode[task["execution_mode"]]
    return kwargs


# ---- the worker process ----


def _run_worker(spec_path: str, output: str) -> None:
    from pyncette import Context
    from pyncette import Pyncette

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    app = Pyncette(
        repository_factory=load_factory(spec["factory"]),
        poll_interval=datetime.timedelta(seconds=spec["poll_interval"]),
        batch_size=spec["batch_size"],
        concurrency_limit=spec["concurrency_limit"],
        **spec["settings"],
    )
    pid = os.getpid()
    out = open(output, "a", encoding="utf-8")  # noqa: SIM115 - open for the life of the process
    hold = bool(spec["hold"])

    def record(kind: str, context: Context) -> None:
        out.write(f"{kind} {pid} {context.scheduled_at.isoformat()} {context.task.name}\n")
        out.flush()

    @app.fixture()
    async def ready(app_context: Any) -> AsyncIterator[None]:
        Path(f"{output}.ready").touch()  # noqa: ASYNC240 - once, at start-up
        yield

    @app.dynamic_task(name="job", **_task_kwargs(spec["task"]))
    async def job(context: Context) -> None:
        record("start", context)
        if hold:
            await asyncio.Event().wait()  # keeps the lease until the process is killed
        record("done", context)

    app.main()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        _run_worker(sys.argv[1], sys.argv[2])
