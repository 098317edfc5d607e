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

A retry of the same scheduled time (after a failed Pod, up to backoffLimit) is a new attempt with
its own Pod name; the attempt number is the highest ``pyncette.dev/attempt`` annotation among the
run's Pods plus one, so it survives history pruning and a takeover by another replica. A Pod that
has finished is never adopted as the *next* attempt: a 409 on a finished Pod means the tracker was
behind, and the next attempt number is read again.
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
from pyncette_operator.kube import is_transient
from pyncette_operator.runs.naming import run_pod_name
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.runs.pods import PodView
from pyncette_operator.runs.pods import pod_view
from pyncette_operator.runs.pods import prune_candidates
from pyncette_operator.runs.pods import render_pod
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_duration
from pyncette_operator.spec import format_time

logger = logging.getLogger(__name__)


class RunFailed(Exception):
    """The run's Pod could not be created or failed. ``transient``: the apiserver could not be
    reached or was overloaded (retried at once, not an attempt); otherwise it refused the Pod."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


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
class SlotState:
    """What the cluster says about one scheduled run (its Pods, all attempts)."""

    running: PodView | None
    """An attempt still in flight (to adopt), if any."""
    succeeded: PodView | None
    next_attempt: int
    """Highest attempt annotation among the run's Pods + 1 (0 when it has none)."""
    last_finished_at: datetime.datetime | None
    """When the latest failed attempt ended (backoff counts from there)."""
    last_message: str
    backfills: frozenset[str] = frozenset()
    """The backfill values the run's Pods were created for (empty for scheduled runs)."""


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

    def slot(self, task: TaskSpec, scheduled_at: datetime.datetime, trigger: str) -> SlotState:
        """The run's Pods as the tracker sees them: one to adopt, a success, or the next attempt number."""
        stamp = format_time(scheduled_at)
        want = f"run-now:{trigger}" if trigger else None
        pods = [
            p for p in self._tracker.pods_of(task.namespace, task.uid) if p.scheduled_at == stamp and p.trigger == want
        ]
        running = next((p for p in pods if not p.finished and not p.deleting), None)
        succeeded = next((p for p in pods if p.succeeded), None)
        failed = sorted((p for p in pods if p.finished and not p.succeeded), key=lambda p: p.attempt)
        last = failed[-1] if failed else None
        return SlotState(
            running=running,
            succeeded=succeeded,
            next_attempt=max((p.attempt for p in pods), default=-1) + 1,
            last_finished_at=(last.finished_at or last.created_at) if last else None,
            last_message=last.message if last else "",
            backfills=frozenset(p.backfill for p in pods if p.backfill),
        )

    async def create(
        self,
        task: TaskSpec,
        scheduled_at: datetime.datetime,
        trigger: str,
        *,
        attempt: int,
        backfill: str | None = None,
    ) -> str | None:
        """Creates the Pod of one attempt; returns its name, or None when a Pod of that attempt already
        finished (the caller reads the slot again). RunFailed if the API refuses."""
        if task.concurrency_policy == "Replace" and attempt == 0:
            try:
                await self._replace_older(task, scheduled_at)
            except Exception as e:
                raise RunFailed(
                    f"replacing older Pods failed: {api_error_message(e)}", transient=is_transient(e)
                ) from None
        name = run_pod_name(
            task_name=task.name, task_uid=task.uid, scheduled_at=scheduled_at, trigger=trigger, attempt=attempt
        )
        body = render_pod(
            task, pod_name=name, scheduled_at=scheduled_at, trigger=trigger, attempt=attempt, backfill=backfill
        )
        try:
            created = await self._kube.create_pod(task.namespace, body)
        except AlreadyExists:
            try:
                found = await self._kube.get_pod(task.namespace, name)
            except Exception as e:
                raise RunFailed(
                    f"reading Pod {name} failed: {api_error_message(e)}", transient=is_transient(e)
                ) from None
            seen = pod_view(found) if found is not None else None
            if seen is None or seen.owner_uid != task.uid or seen.scheduled_at != format_time(scheduled_at):
                raise RunFailed(f"a Pod named {name} already exists and does not belong to this run") from None
            self._tracker.observe("MODIFIED", found or {})
            if seen.finished or seen.deleting:
                return None  # never re-adopt a finished attempt as a new one
            self._hooks.on_adopted()
            return name
        except Exception as e:
            raise RunFailed(f"creating Pod {name} failed: {api_error_message(e)}", transient=is_transient(e)) from None
        self._tracker.observe("ADDED", created)
        self._hooks.on_created()
        return name

    def adopted(self) -> None:
        self._hooks.on_adopted()

    async def _replace_older(self, task: TaskSpec, scheduled_at: datetime.datetime) -> None:
        stamp = format_time(scheduled_at)
        for pod in self._tracker.pods_of(task.namespace, task.uid):
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
        """Waits for the Pod to end (renewing the lease), or until ``deadline`` (then ``finished=False``).

        With ``activeDeadlineSeconds`` the Pod is deleted once it has run that long (counted from its
        creation, so a replica that adopts it keeps the same limit) and the attempt fails.
        """
        tick = max(task.lease_duration.total_seconds() / 3, 0.2)
        while True:
            if stopping.is_set():
                raise RunAbandoned("the operator is shutting down")
            budget = tick
            current = now()
            if deadline is not None:
                left = (deadline - current).total_seconds()
                if left <= 0:
                    return PodRunResult(pod_name, False, False, "still running at the next scheduled time", None)
                budget = min(budget, left)
            view = self._tracker.get(task.namespace, pod_name)
            if task.active_deadline is not None and view is not None and view.created_at is not None:
                expires = view.created_at + task.active_deadline
                left = (expires - current).total_seconds()
                if left <= 0 and not view.finished:
                    if not await self.stop_overdue(task, view):
                        await asyncio.sleep(1.0)  # the apiserver is unreachable: try again
                        continue
                    message = f"Pod {pod_name} exceeded activeDeadlineSeconds ({format_duration(task.active_deadline)})"
                    return PodRunResult(pod_name, True, False, message, current)
                budget = min(budget, max(left, 0.05))
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
                finished = waiter.result()
            except TimeoutError:
                await heartbeat()
                if self._tracker.get(task.namespace, pod_name) is None:
                    # The watch has not seen it (yet, or it was deleted while the watch reconnected).
                    pod = await self._kube.get_pod(task.namespace, pod_name)
                    if pod is None:
                        return PodRunResult(pod_name, True, False, f"Pod {pod_name} was deleted", now())
                    self._tracker.observe("MODIFIED", pod)
                continue
            if finished is None:
                return PodRunResult(pod_name, True, False, f"Pod {pod_name} was deleted before it finished", now())
            message = "" if finished.succeeded else (finished.message or f"Pod {pod_name} failed")
            return PodRunResult(pod_name, True, finished.succeeded, message, finished.finished_at or now())

    async def stop_overdue(self, task: TaskSpec, view: PodView) -> bool:
        """Deletes a Pod past activeDeadlineSeconds; False if the apiserver could not be reached."""
        logger.info("Pod %s/%s exceeded activeDeadlineSeconds; deleting it", view.namespace, view.name)
        try:
            await self._kube.delete_pod(view.namespace, view.name, uid=view.uid)
        except Exception as e:
            logger.warning("Deleting Pod %s/%s failed (retrying): %s", view.namespace, view.name, api_error_message(e))
            return False
        return True

    async def prune(self, task: TaskSpec, *, keep_slots: frozenset[str] = frozenset()) -> None:
        """Deletes finished Pods of ``task`` beyond its history limits (oldest first)."""
        victims = prune_candidates(
            self._tracker.pods_of(task.namespace, task.uid),
            successful_limit=task.successful_runs_history_limit,
            failed_limit=task.failed_runs_history_limit,
            keep_slots=keep_slots,
        )
        for pod in victims:
            try:
                await self._kube.delete_pod(pod.namespace, pod.name, uid=pod.uid)
            except Exception as e:
                logger.warning("Pruning Pod %s/%s failed: %s", pod.namespace, pod.name, api_error_message(e))
                return
        if victims:
            self._hooks.on_pruned(len(victims))
