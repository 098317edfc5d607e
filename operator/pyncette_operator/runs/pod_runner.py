"""Pod runs: create (or adopt) the run's Pod, keep the lease while it runs, report how it ended.

One run = one scheduled time of one task (or one run-now value). Its Pod name is deterministic
(``naming.run_pod_name``), so:

* a replica that takes over an expired lease finds the Pod the dead replica created and *adopts*
  it (same owner uid and scheduled-at annotation) instead of starting a second one;
* two replicas racing on one run both try to create the same name; the apiserver lets one win
  (409 AlreadyExists for the other, which adopts).

How long the worker waits, by ``concurrencyPolicy``:

* Forbid: until the Pod ends. The lease is renewed every leaseDuration/3, so the next scheduled
  time is not leased meanwhile (and ``fast_forward`` skips the times that passed).
* Allow / Replace: until the Pod ends or the next scheduled time comes, whichever is first. A Pod
  that ends in time is committed or unlocked by failureMode like any run; one still running at the
  next scheduled time is handed over to the Pod watch (its end is still recorded in status and
  Events) and the schedule moves on, so runs may overlap. Replace deletes the older run Pods of the
  task before it starts a new one.

A retry of the same scheduled time (failureMode None or Unlock after a failed Pod) is a new
attempt with its own Pod name; the attempt number is the count of failed Pods of that run.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass

from pyncette_operator.kube import AlreadyExists
from pyncette_operator.kube import Kube
from pyncette_operator.kube import api_error_message
from pyncette_operator.runs.naming import run_pod_name
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.runs.pods import PodView
from pyncette_operator.runs.pods import pod_view
from pyncette_operator.runs.pods import prune_candidates
from pyncette_operator.runs.pods import render_pod
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time

logger = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run's Pod (or handler) failed; raised so that failureMode applies."""


class RunAbandoned(Exception):
    """The worker stopped waiting (shutdown or lost lease); the Pod runs on and may be adopted."""


@dataclass
class PodRunResult:
    pod_name: str
    finished: bool
    succeeded: bool
    message: str
    finished_at: datetime.datetime | None


@dataclass
class PodRunHooks:
    """Callbacks into status/metrics; kept abstract so this module needs no status machinery."""

    on_created: Callable[[], None]
    on_adopted: Callable[[], None]
    on_pruned: Callable[[int], None]


class PodRunner:
    def __init__(self, *, kube: Kube, tracker: PodTracker, hooks: PodRunHooks) -> None:
        self._kube = kube
        self._tracker = tracker
        self._hooks = hooks

    def _slot_pods(self, task: TaskSpec, scheduled_at: datetime.datetime, trigger: str) -> list[PodView]:
        stamp = format_time(scheduled_at)
        pods = [p for p in self._tracker.pods_of(task.uid) if p.scheduled_at == stamp]
        want = f"run-now:{trigger}" if trigger else None
        return [p for p in pods if (p.trigger == want)]

    async def start(self, task: TaskSpec, scheduled_at: datetime.datetime, trigger: str) -> str:
        """Creates or adopts the Pod of this run; returns its name (RunFailed if the API refuses)."""
        existing = self._slot_pods(task, scheduled_at, trigger)
        for pod in existing:
            if not pod.finished and not pod.deleting:
                self._hooks.on_adopted()
                return pod.name
        attempt = sum(1 for p in existing if p.finished and not p.succeeded)
        done = [p for p in existing if p.succeeded]
        if done:
            self._hooks.on_adopted()
            return done[0].name
        if task.concurrency_policy == "Replace":
            await self._replace_older(task, scheduled_at)
        name = run_pod_name(
            task_name=task.name, task_uid=task.uid, scheduled_at=scheduled_at, trigger=trigger, attempt=attempt
        )
        body = render_pod(task, pod_name=name, scheduled_at=scheduled_at, trigger=trigger, attempt=attempt)
        try:
            created = await self._kube.create_pod(task.namespace, body)
        except AlreadyExists:
            found = await self._kube.get_pod(task.namespace, name)
            seen = pod_view(found) if found is not None else None
            if seen is None or seen.owner_uid != task.uid or seen.scheduled_at != format_time(scheduled_at):
                raise RunFailed(f"a Pod named {name} already exists and does not belong to this run") from None
            self._tracker.observe("MODIFIED", found or {})
            self._hooks.on_adopted()
            return name
        except Exception as e:
            raise RunFailed(f"creating Pod {name} failed: {api_error_message(e)}") from None
        self._tracker.observe("ADDED", created)
        self._hooks.on_created()
        return name

    async def _replace_older(self, task: TaskSpec, scheduled_at: datetime.datetime) -> None:
        stamp = format_time(scheduled_at)
        for pod in self._tracker.pods_of(task.uid):
            if not pod.finished and not pod.deleting and (pod.scheduled_at or "") < stamp:
                logger.info("Replacing run Pod %s/%s of %s", pod.namespace, pod.name, task.key)
                await self._kube.delete_pod(pod.namespace, pod.name, uid=pod.uid)

    async def wait(
        self,
        task: TaskSpec,
        pod_name: str,
        *,
        heartbeat: Callable[[], Awaitable[None]],
        deadline: datetime.datetime | None,
        now: Callable[[], datetime.datetime],
        stopping: asyncio.Event,
    ) -> PodRunResult:
        """Waits for the Pod to end (renewing the lease), or until ``deadline`` (then ``finished=False``)."""
        tick = max(task.lease_duration.total_seconds() / 3, 0.2)
        while True:
            if stopping.is_set():
                raise RunAbandoned("the operator is shutting down")
            budget = tick
            if deadline is not None:
                left = (deadline - now()).total_seconds()
                if left <= 0:
                    return PodRunResult(pod_name, False, False, "still running at the next scheduled time", None)
                budget = min(budget, left)
            waiter = asyncio.ensure_future(self._tracker.wait_finished(task.namespace, pod_name, timeout=budget))
            stopper = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            if not waiter.done():
                waiter.cancel()
                continue
            try:
                view = waiter.result()
            except TimeoutError:
                await heartbeat()
                if self._tracker.get(task.namespace, pod_name) is None:
                    # The watch has not seen it (yet, or it was deleted while the watch reconnected).
                    pod = await self._kube.get_pod(task.namespace, pod_name)
                    if pod is None:
                        return PodRunResult(pod_name, True, False, f"Pod {pod_name} was deleted", now())
                    self._tracker.observe("MODIFIED", pod)
                continue
            if view is None:
                return PodRunResult(pod_name, True, False, f"Pod {pod_name} was deleted before it finished", now())
            message = "" if view.succeeded else (view.message or f"Pod {pod_name} failed")
            return PodRunResult(pod_name, True, view.succeeded, message, view.finished_at or now())

    async def prune(self, task: TaskSpec) -> None:
        """Deletes finished Pods of ``task`` beyond its history limits (oldest first)."""
        victims = prune_candidates(
            self._tracker.pods_of(task.uid),
            successful_limit=task.successful_runs_history_limit,
            failed_limit=task.failed_runs_history_limit,
        )
        for pod in victims:
            try:
                await self._kube.delete_pod(pod.namespace, pod.name, uid=pod.uid)
            except Exception as e:
                logger.warning("Pruning Pod %s/%s failed: %s", pod.namespace, pod.name, api_error_message(e))
                return
        if victims:
            self._hooks.on_pruned(len(victims))
