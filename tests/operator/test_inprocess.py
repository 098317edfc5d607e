"""The mirror and the runs wired together in one process: real pyncette app (memory backend),
fake clock, and a fake apiserver that records what the operator writes.

This exercises the same code as the cluster tests (Mirror, RunExecutor, PodRunner, StatusWriter)
without a cluster, driving the schedule with FakeClock instead of waiting for real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
from collections.abc import AsyncIterator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pyncette.clock import FakeClock
from pyncette.pyncette import PyncetteContext
from pyncette_operator.app import Parts
from pyncette_operator.app import build_parts
from pyncette_operator.backend_url import parse_backend_url
from pyncette_operator.kube import AlreadyExists
from pyncette_operator.kube import Conflict
from pyncette_operator.kube import NotFound
from pyncette_operator.metrics import Metrics
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.settings import Settings

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
POD = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


class FakeKube:
    """Just enough apiserver: Pods, PyncetteTasks with status, Events."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.tasks: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_writes: list[tuple[str, str, dict[str, Any]]] = []
        self.events: list[dict[str, Any]] = []
        self._uids = itertools.count()
        self._versions = itertools.count(1)
        self.conflicts = 0
        """Status writes refused for a stale resourceVersion."""

    async def create_pod(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (namespace, body["metadata"]["name"])
        if key in self.pods:
            raise AlreadyExists(key[1])
        pod = copy.deepcopy(body)
        pod["metadata"]["uid"] = f"pod-uid-{next(self._uids)}"
        pod["status"] = {"phase": "Pending"}
        self.pods[key] = pod
        return copy.deepcopy(pod)

    async def get_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        pod = self.pods.get((namespace, name))
        return copy.deepcopy(pod) if pod else None

    async def delete_pod(self, namespace: str, name: str, *, uid: str | None = None) -> None:
        self.pods.pop((namespace, name), None)

    async def get_task(self, namespace: str, name: str) -> dict[str, Any] | None:
        task = self.tasks.get((namespace, name))
        return copy.deepcopy(task) if task else None

    async def list_tasks(self, namespaces: Any) -> list[dict[str, Any]]:
        return [copy.deepcopy(t) for t in self.tasks.values()]

    async def apply_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        uid: str | None = None,
        resource_version: str | None = None,
    ) -> str | None:
        if (namespace, name) not in self.tasks or (uid and self.tasks[(namespace, name)]["metadata"]["uid"] != uid):
            raise NotFound(name)
        meta = self.tasks[(namespace, name)]["metadata"]
        if resource_version is not None and resource_version != meta.get("resourceVersion"):
            self.conflicts += 1
            raise Conflict(name)
        self.status_writes.append((namespace, name, copy.deepcopy(status)))
        self.tasks[(namespace, name)]["status"] = copy.deepcopy(status)
        meta["resourceVersion"] = self.next_version()
        return str(meta["resourceVersion"])

    def next_version(self) -> str:
        """Like the apiserver's: a new one for every change of any object."""
        return str(next(self._versions))

    async def create_event(self, namespace: str, body: dict[str, Any]) -> None:
        self.events.append(body)

    def status(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.tasks[("ns", name)].get("status") or {}
        return result


@dataclass
class World:
    kube: FakeKube
    clock: FakeClock
    parts: Parts
    ctx: PyncetteContext
    tracker: PodTracker
    metrics: Metrics
    handlers: HandlerRegistry

    async def apply(
        self, name: str, spec: dict[str, Any], *, annotations: dict[str, str] | None = None
    ) -> dict[str, Any]:
        key = ("ns", name)
        old = self.kube.tasks.get(key)
        generation = 1 if old is None else old["metadata"]["generation"] + (old["spec"] != spec)
        body = {
            "apiVersion": "pyncette.dev/v1",
            "kind": "PyncetteTask",
            "metadata": {
                "namespace": "ns",
                "name": name,
                "uid": old["metadata"]["uid"] if old else f"uid-{name}",
                "generation": generation,
                "annotations": annotations or {},
                "resourceVersion": self.kube.next_version(),
            },
            "spec": spec,
            "status": (old or {}).get("status") or {},
        }
        self.kube.tasks[key] = body
        await self.parts.mirror.on_event("ADDED" if old is None else "MODIFIED", copy.deepcopy(body))
        return body

    async def delete(self, name: str) -> None:
        body = self.kube.tasks.pop(("ns", name))
        await self.parts.mirror.on_event("DELETED", body)

    def finish_pod(self, name: str, *, succeeded: bool = True) -> None:
        pod = self.kube.pods[("ns", name)]
        pod["status"] = {
            "phase": "Succeeded" if succeeded else "Failed",
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {
                        "terminated": {"exitCode": 0 if succeeded else 1, "finishedAt": self.clock.now().isoformat()}
                    },
                }
            ],
        }
        self.tracker.observe("MODIFIED", copy.deepcopy(pod))

    def pods_of(self, task: str) -> list[dict[str, Any]]:
        return [p for p in self.kube.pods.values() if p["metadata"]["labels"]["pyncette.dev/task"] == task]


async def until(check: Callable[[], Any], what: str, timeout: float = 10) -> Any:  # noqa: ASYNC109
    """Lets the loop run until ``check()`` is truthy (a condition wait, with a deadline)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running_world(
    kube: FakeKube | None = None,
    clock: FakeClock | None = None,
    backend: str = "memory://",
    poll_interval: float = 0.05,
) -> AsyncIterator[World]:
    """One operator replica (no kopf: the test feeds the watch events) on ``backend``."""
    kube = kube or FakeKube()
    clock = clock or FakeClock(T0)
    metrics, tracker, handlers = Metrics(), PodTracker(), HandlerRegistry()
    # The loop wakes at known due times anyway; a long poll interval keeps clock jumps of hours cheap.
    settings = Settings(status_interval=0.05, poll_interval=poll_interval, sweep_interval=3600)
    stopping = asyncio.Event()
    parts = build_parts(
        settings,
        parse_backend_url(backend),
        kube=kube,  # type: ignore[arg-type]
        handlers=handlers,
        metrics=metrics,
        tracker=tracker,
        stopping=stopping,
        namespaces=["ns"],
        clock=clock,
    )
    async with parts.app.create() as ctx:
        parts.mirror.bind(ctx)
        tasks = [ctx.run(), parts.status.run(), parts.events.run()]
        tasks = [asyncio.ensure_future(t) for t in tasks]
        try:
            yield World(kube, clock, parts, ctx, tracker, metrics, handlers)
        finally:
            ctx.shutdown()
            stopping.set()
            for task in tasks[1:]:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(tasks[0], timeout=5)
            await parts.executor.close()


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with running_world() as w:
        yield w


async def test_pod_task_runs_and_reports(world: World) -> None:
    await world.apply("hello", {"interval": "10s", "podTemplate": POD})
    stored = await world.ctx.get_task(world.parts.mirror._template, "ns/hello")
    assert stored is not None and stored.scheduled_at == T0 + datetime.timedelta(seconds=10)
    status = await until(lambda: world.kube.status("hello").get("conditions") and world.kube.status("hello"), "Ready")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    assert status["nextRunTime"] == "2030-01-01T00:00:10Z"

    await world.clock.advance(seconds=10)
    [pod] = await until(lambda: world.pods_of("hello"), "a run Pod")
    assert pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"] == "2030-01-01T00:00:10Z"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "uid-hello"
    await until(lambda: world.kube.status("hello").get("active"), "active run in status")
    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.kube.status("hello").get("lastSuccessfulTime"), "lastSuccessfulTime")
    assert world.kube.status("hello")["lastScheduleTime"] == "2030-01-01T00:00:10Z"
    assert world.kube.status("hello")["nextRunTime"] == "2030-01-01T00:00:20Z"
    await until(lambda: world.kube.status("hello").get("active") == [], "no active run")
    reasons = [e["reason"] for e in world.kube.events]
    assert "RunStarted" in reasons and "RunSucceeded" in reasons


async def test_invalid_then_fixed(world: World) -> None:
    await world.apply("bad", {"schedule": "not cron", "podTemplate": POD})
    status = await until(lambda: world.kube.status("bad").get("conditions") and world.kube.status("bad"), "status")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert await world.ctx.get_task(world.parts.mirror._template, "ns/bad") is None
    assert [e["reason"] for e in world.kube.events if e["type"] == "Warning"] == ["InvalidSpec"]
    # The same invalid generation seen again (a status echo) posts no second Warning.
    await world.apply("bad", {"schedule": "not cron", "podTemplate": POD})
    assert len([e for e in world.kube.events if e["reason"] == "InvalidSpec"]) == 1
    await world.apply("bad", {"schedule": "*/5 * * * * *", "podTemplate": POD})
    assert await world.ctx.get_task(world.parts.mirror._template, "ns/bad") is not None
    await until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True" for c in world.kube.status("bad").get("conditions", [])
        ),
        "Ready=True after the fix",
    )


async def test_delete_and_sweep_remove_schedules(world: World) -> None:
    template = world.parts.mirror._template
    await world.apply("gone", {"interval": "10s", "podTemplate": POD})
    await world.delete("gone")
    assert await world.ctx.get_task(template, "ns/gone") is None
    # An entry whose task vanished while no operator watched: the sweep removes it,
    # and a task the backend lacks is registered again.
    await world.ctx.schedule_task(template, "ns/orphan", interval=datetime.timedelta(seconds=5), uid="x", generation=1)
    await world.apply("kept", {"interval": "10s", "podTemplate": POD})
    await world.ctx.unschedule_task(template, "ns/kept")
    world.parts.mirror._fingerprints.clear()
    removed, added = await world.parts.mirror.sweep()
    assert (removed, added) == (1, 1)
    assert await world.ctx.get_task(template, "ns/orphan") is None
    assert await world.ctx.get_task(template, "ns/kept") is not None


async def test_spec_change_replaces_schedule(world: World) -> None:
    template = world.parts.mirror._template
    await world.apply("t", {"interval": "10s", "podTemplate": POD})
    await world.clock.advance(seconds=3)
    await world.apply("t", {"interval": "1h", "podTemplate": POD})
    stored = await world.ctx.get_task(template, "ns/t")
    assert stored is not None
    assert stored.scheduled_at == T0 + datetime.timedelta(seconds=3, hours=1)
    assert stored.task.extra_args["generation"] == 2


async def test_run_now_once_per_value_and_adoption(world: World) -> None:
    await world.apply("m", {"interval": "1h", "podTemplate": POD})
    await world.apply("m", {"interval": "1h", "podTemplate": POD}, annotations={"pyncette.dev/run-now": "v1"})
    [pod] = await until(lambda: world.pods_of("m"), "the run-now Pod")
    assert pod["metadata"]["annotations"]["pyncette.dev/trigger"] == "run-now:v1"
    await until(lambda: world.kube.status("m").get("lastRunNow") == "v1", "lastRunNow")
    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.kube.status("m").get("lastSuccessfulTime"), "success")
    # Seen again (status echo, relist): no second run.
    await world.apply("m", {"interval": "1h", "podTemplate": POD}, annotations={"pyncette.dev/run-now": "v1"})
    await world.clock.advance(seconds=1)
    assert len(world.pods_of("m")) == 1
    assert world.metrics.runs_started.labels(kind="Pod")._value.get() == 1


async def test_existing_pod_is_adopted_not_duplicated(world: World) -> None:
    from pyncette_operator.runs.naming import run_pod_name
    from pyncette_operator.runs.pods import render_pod
    from pyncette_operator.spec import parse_task

    body = await world.apply("a", {"interval": "10s", "podTemplate": POD})
    spec = parse_task(body, handlers=())
    scheduled = T0 + datetime.timedelta(seconds=10)
    name = run_pod_name(task_name="a", task_uid="uid-a", scheduled_at=scheduled)
    await world.kube.create_pod("ns", render_pod(spec, pod_name=name, scheduled_at=scheduled))  # type: ignore[arg-type]
    await world.clock.advance(seconds=10)
    await until(lambda: world.metrics.pods_adopted._value.get() == 1, "adoption")
    assert [p["metadata"]["name"] for p in world.pods_of("a")] == [name]
    assert world.metrics.pods_created._value.get() == 0


def ready_of(status: dict[str, Any]) -> tuple[str, str] | None:
    ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)
    return None if ready is None else (ready["status"], ready["reason"])


async def test_a_one_off_says_started_while_its_run_is_in_flight_and_completed_once_it_ended(world: World) -> None:
    at = T0 + datetime.timedelta(minutes=5)
    await world.apply("once", {"executeAt": "2030-01-01T00:05:00Z", "podTemplate": POD})
    await until(lambda: ready_of(world.kube.status("once")) == ("True", "Scheduled"), "Ready=Scheduled")
    await world.clock.set(at)
    [pod] = await until(lambda: world.pods_of("once"), "the run Pod")
    await until(lambda: world.kube.status("once").get("active"), "the run listed as active")
    await world.apply("once", {"executeAt": "2030-01-01T00:05:00Z", "podTemplate": POD})  # the echo of that write
    await until(lambda: ready_of(world.kube.status("once")) == ("True", "Started"), "Ready=Started")
    ready = next(c for c in world.kube.status("once")["conditions"] if c["type"] == "Ready")
    assert "not ended" in ready["message"]

    world.finish_pod(pod["metadata"]["name"])
    await until(lambda: world.kube.status("once").get("lastSuccessfulTime"), "its success")
    await until(lambda: ready_of(world.kube.status("once")) == ("True", "Completed"), "Ready=Completed")
    assert world.kube.status("once")["active"] == []


async def test_handler_run_gets_args(world: World) -> None:
    calls: list[dict[str, Any]] = []

    async def report(context: Any) -> None:
        calls.append(dict(context.args))

    world.handlers.register("report", report, namespaces=["ns"])
    await world.apply("h", {"interval": "5s", "handler": {"name": "report", "args": {"to": "ops"}}})
    await world.clock.advance(seconds=5)
    await until(lambda: calls, "a handler call")
    assert calls == [{"to": "ops"}]
    await until(lambda: world.kube.status("h").get("lastSuccessfulTime"), "success")


async def test_backend_unavailable_then_recovered(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    real = world.ctx.schedule_task

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("backend down")

    monkeypatch.setattr(world.ctx, "schedule_task", broken)
    await world.apply("b", {"interval": "10s", "podTemplate": POD})
    ready = await until(
        lambda: next((c for c in world.kube.status("b").get("conditions", []) if c["type"] == "Ready"), None), "Ready"
    )
    assert (ready["status"], ready["reason"]) == ("False", "BackendUnavailable")
    # The tenant sees a short reason; the driver's message stays in the operator's log.
    assert "backend down" not in ready["message"] and "ConnectionError" not in ready["message"]
    monkeypatch.setattr(world.ctx, "schedule_task", real)
    await world.parts.mirror.retry_dirty()
    assert await world.ctx.get_task(world.parts.mirror._template, "ns/b") is not None
    await until(
        lambda: any(
            c["type"] == "Ready" and c["status"] == "True" for c in world.kube.status("b").get("conditions", [])
        ),
        "Ready=True once the backend is back",
    )


async def test_a_schedule_no_date_matches_is_invalid_not_a_backend_problem_and_its_neighbour_runs(
    world: World,
) -> None:
    """30 February parses as cron but has no run time: Ready=False InvalidSchedule (not
    BackendUnavailable), one Warning, nothing stored, nothing retried; the task beside it runs."""
    await world.apply("feb30", {"schedule": "0 0 30 2 *", "podTemplate": POD})
    await world.apply("neighbour", {"interval": "10s", "podTemplate": POD})
    status = await until(lambda: world.kube.status("feb30").get("conditions") and world.kube.status("feb30"), "status")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert "no next run time" in ready["message"]
    assert await world.ctx.get_task(world.parts.mirror._template, "ns/feb30") is None
    assert "ns/feb30" not in world.parts.mirror._dirty  # not retried every few seconds like an outage

    await world.clock.advance(seconds=10)
    await until(lambda: world.pods_of("neighbour"), "the neighbour's run Pod")
    assert world.pods_of("feb30") == []
    warnings = [e for e in world.kube.events if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["InvalidSpec"]


async def test_a_stored_entry_no_worker_can_load_is_replaced_by_the_next_spec_change(world: World) -> None:
    """A mirrored entry whose stored spec went bad (another version wrote it) is quarantined by the
    workers; the next change of its PyncetteTask replaces it at once instead of waiting for the lease."""
    template = world.parts.mirror._template
    await world.apply("fixme", {"interval": "10s", "podTemplate": POD})
    repository: Any = world.ctx.repository
    [name] = [n for n in repository._entries if n.endswith("ns/fixme")]
    entry = repository._entries[name]
    assert '"AT_LEAST_ONCE"' in entry.spec
    entry.spec = entry.spec.replace('"AT_LEAST_ONCE"', '"SOMETIMES"')
    entry.instance = entry.template = None

    await world.clock.advance(seconds=10)
    await until(lambda: repository._entries[name].locked_until is not None, "the bad entry parked")
    stored = await world.ctx.get_task(template, "ns/fixme")
    assert stored is not None and stored.problem is not None
    assert world.pods_of("fixme") == []

    await world.apply("fixme", {"interval": "20s", "podTemplate": POD})
    stored = await world.ctx.get_task(template, "ns/fixme")
    assert stored is not None and stored.problem is None
    assert stored.task.interval == datetime.timedelta(seconds=20)
    assert "ns/fixme" not in world.parts.mirror._dirty
