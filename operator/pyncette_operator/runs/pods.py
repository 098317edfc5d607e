"""Rendering a run's Pod from a PyncetteTask's podTemplate, and reading a Pod's outcome.

The rendered Pod always lands in the task's namespace (whatever the template says), carries an
ownerReference to the task (so deleting the task garbage-collects its Pods), the label
``pyncette.dev/task`` (so one label-selected watch per replica sees every run Pod) and the
scheduled time in an annotation (so an adopting replica can check it found the right Pod). Nothing
here reads or copies Secrets: the template is used as it is, and the kubelet resolves its
references with the Pod's own ServiceAccount.
"""

from __future__ import annotations

import copy
import datetime
from dataclasses import dataclass
from typing import Any

from pyncette_operator.runs.naming import label_value
from pyncette_operator.spec import GROUP
from pyncette_operator.spec import KIND
from pyncette_operator.spec import VERSION
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_time

TASK_LABEL = "pyncette.dev/task"
TASK_UID_LABEL = "pyncette.dev/task-uid"
SCHEDULED_AT_ANNOTATION = "pyncette.dev/scheduled-at"
TRIGGER_ANNOTATION = "pyncette.dev/trigger"
ATTEMPT_ANNOTATION = "pyncette.dev/attempt"
BACKFILL_ANNOTATION = "pyncette.dev/backfill"
"""On a run Pod: the backfill value it ran for, so a slot leased again (a late second registration of
the backfill, or a lease that expired) is recognised as this backfill's own, not counted twice."""
MANAGED_BY = "pyncette-operator"


def owner_reference(task: TaskSpec) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": task.name,
        "uid": task.uid,
        "controller": True,
    }


def render_pod(
    task: TaskSpec,
    *,
    pod_name: str,
    scheduled_at: datetime.datetime,
    trigger: str = "",
    attempt: int = 0,
    backfill: str | None = None,
) -> dict[str, Any]:
    """The Pod manifest for one run of ``task`` (a podTemplate task)."""
    assert task.pod_template is not None
    template = copy.deepcopy(task.pod_template)
    meta = dict(template.get("metadata") or {})
    spec = dict(template.get("spec") or {})
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update(
        {
            TASK_LABEL: label_value(task.name),
            TASK_UID_LABEL: task.uid,
            "app.kubernetes.io/managed-by": MANAGED_BY,
        }
    )
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    annotations[SCHEDULED_AT_ANNOTATION] = format_time(scheduled_at)
    annotations[ATTEMPT_ANNOTATION] = str(attempt)
    if trigger:
        annotations[TRIGGER_ANNOTATION] = f"run-now:{trigger}"
    else:
        annotations.pop(TRIGGER_ANNOTATION, None)
    if backfill:
        annotations[BACKFILL_ANNOTATION] = backfill
    else:
        annotations.pop(BACKFILL_ANNOTATION, None)
    spec.setdefault("restartPolicy", "Never")
    metadata: dict[str, Any] = {
        "name": pod_name,
        "namespace": task.namespace,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [owner_reference(task)],
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class PodPhase:
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


@dataclass(frozen=True)
class PodView:
    """What the operator needs from a run Pod (taken from watch events; plain dicts, any client)."""

    namespace: str
    name: str
    uid: str
    owner_uid: str | None
    task_name: str | None
    scheduled_at: str | None
    trigger: str | None
    phase: str
    finished_at: datetime.datetime | None
    deleting: bool
    message: str
    attempt: int = 0
    created_at: datetime.datetime | None = None
    backfill: str | None = None

    @property
    def finished(self) -> bool:
        return self.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED)

    @property
    def succeeded(self) -> bool:
        return self.phase == PodPhase.SUCCEEDED


def pod_view(pod: dict[str, Any]) -> PodView:
    """Builds a ``PodView`` from a Pod as the API returns it (camelCase dict)."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    owner_uid = None
    for ref in meta.get("ownerReferences") or []:
        # Another API group's "PyncetteTask" kind is not ours, whatever its uid says.
        group = str(ref.get("apiVersion") or "").partition("/")[0]
        if ref.get("kind") == KIND and group == GROUP and ref.get("controller"):
            owner_uid = ref.get("uid")
    annotations = meta.get("annotations") or {}
    try:
        attempt = max(0, int(annotations.get(ATTEMPT_ANNOTATION) or 0))
    except ValueError:
        attempt = 0
    return PodView(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        uid=meta.get("uid", ""),
        owner_uid=owner_uid,
        task_name=(meta.get("labels") or {}).get(TASK_LABEL),
        scheduled_at=annotations.get(SCHEDULED_AT_ANNOTATION),
        trigger=annotations.get(TRIGGER_ANNOTATION),
        phase=status.get("phase") or PodPhase.PENDING,
        finished_at=_finished_at(status),
        deleting=meta.get("deletionTimestamp") is not None,
        message=_failure_message(status),
        attempt=attempt,
        created_at=_parse_stamp(meta.get("creationTimestamp")),
        backfill=annotations.get(BACKFILL_ANNOTATION),
    )


def _parse_stamp(raw: Any) -> datetime.datetime | None:
    if not raw:
        return None
    try:
        return datetime.datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None


def _finished_at(status: dict[str, Any]) -> datetime.datetime | None:
    latest: datetime.datetime | None = None
    for container in status.get("containerStatuses") or []:
        finished = ((container.get("state") or {}).get("terminated") or {}).get("finishedAt")
        if finished:
            value = datetime.datetime.fromisoformat(str(finished).replace("Z", "+00:00"))
            latest = value if latest is None or value > latest else latest
    return latest


def _failure_message(status: dict[str, Any]) -> str:
    if status.get("message"):
        return str(status["message"])
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated.get("exitCode"):
            reason = terminated.get("reason") or "Error"
            return f"container {container.get('name')} exited with code {terminated['exitCode']} ({reason})"
    return str(status.get("reason") or "")


def prune_candidates(
    pods: list[PodView], *, successful_limit: int, failed_limit: int, keep_slots: frozenset[str] = frozenset()
) -> list[PodView]:
    """Finished Pods beyond the history limits, oldest first (by scheduled time, then attempt).

    Pods of the scheduled times in ``keep_slots`` (runs still being retried) are never candidates:
    their attempt annotations are where the next attempt number comes from.
    """

    def order(p: PodView) -> tuple[str, int, str]:
        return (p.scheduled_at or "", p.attempt, p.name)

    victims: list[PodView] = []
    for want_success, limit in ((True, successful_limit), (False, failed_limit)):
        done = sorted(
            (
                p
                for p in pods
                if p.finished and p.succeeded == want_success and not p.deleting and p.scheduled_at not in keep_slots
            ),
            key=order,
        )
        if len(done) > limit:
            victims.extend(done[: len(done) - limit])
    return victims
