"""Run Pods: deterministic names, rendering (namespace, owner, labels, restartPolicy), pruning."""

from __future__ import annotations

import datetime
from typing import Any

from pyncette_operator.runs.naming import label_value
from pyncette_operator.runs.naming import run_pod_name
from pyncette_operator.runs.pods import pod_view
from pyncette_operator.runs.pods import prune_candidates
from pyncette_operator.runs.pods import render_pod
from pyncette_operator.spec import TaskSpec

T0 = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def task(**overrides: Any) -> TaskSpec:
    template = {
        "metadata": {
            "namespace": "kube-system",
            "name": "ignored",
            "labels": {"team": "a", "pyncette.dev/task": "spoof"},
        },
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    return TaskSpec(
        namespace="ns",
        name="hello",
        uid="uid-1",
        generation=1,
        interval=datetime.timedelta(seconds=10),
        **{"pod_template": template, **overrides},
    )


def test_names_are_deterministic_short_and_distinct() -> None:
    a = run_pod_name(task_name="hello", task_uid="u", scheduled_at=T0)
    assert a == run_pod_name(task_name="hello", task_uid="u", scheduled_at=T0)
    assert a.startswith(f"hello-{int(T0.timestamp())}-")
    others = {
        run_pod_name(task_name="hello", task_uid="u", scheduled_at=T0 + datetime.timedelta(seconds=1)),
        run_pod_name(task_name="hello", task_uid="u2", scheduled_at=T0),
        run_pod_name(task_name="hello", task_uid="u", scheduled_at=T0, attempt=1),
        run_pod_name(task_name="hello", task_uid="u", scheduled_at=T0, trigger="x"),
    }
    assert a not in others and len(others) == 4
    long_name = "a" * 253
    for name in (
        run_pod_name(task_name=long_name, task_uid="u", scheduled_at=T0),
        run_pod_name(task_name="x.y_Z" * 40, task_uid="u", scheduled_at=T0, trigger="v"),
    ):
        assert len(name) <= 63
        assert name[0].isalnum() and name[-1].isalnum()
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_label_value() -> None:
    assert label_value("hello") == "hello"
    long_a, long_b = "x" * 70 + "a", "x" * 70 + "b"
    assert len(label_value(long_a)) <= 63
    assert label_value(long_a) != label_value(long_b)


def test_render_pod_forces_namespace_owner_labels_and_restart_policy() -> None:
    pod = render_pod(task(), pod_name="hello-1-abcde", scheduled_at=T0)
    meta = pod["metadata"]
    assert meta["namespace"] == "ns"
    assert meta["name"] == "hello-1-abcde"
    assert meta["labels"]["pyncette.dev/task"] == "hello"
    assert meta["labels"]["team"] == "a"
    assert meta["annotations"]["pyncette.dev/scheduled-at"] == "2030-01-01T12:00:00Z"
    assert meta["ownerReferences"] == [
        {"apiVersion": "pyncette.dev/v1", "kind": "PyncetteTask", "name": "hello", "uid": "uid-1", "controller": True}
    ]
    assert pod["spec"]["restartPolicy"] == "Never"
    given = task(pod_template={"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "x"}]}})
    assert render_pod(given, pod_name="p", scheduled_at=T0)["spec"]["restartPolicy"] == "OnFailure"


def test_a_backfill_run_pod_names_its_backfill_and_no_other_pod_does() -> None:
    value = "2030-01-01T00:00:00Z/2030-01-01T12:00:00Z"
    filled = render_pod(task(), pod_name="p", scheduled_at=T0, backfill=value)
    assert filled["metadata"]["annotations"]["pyncette.dev/backfill"] == value
    assert pod_view(filled).backfill == value
    # A template that carries the annotation itself cannot pass a scheduled run off as a backfill's.
    given = task(
        pod_template={
            "metadata": {"annotations": {"pyncette.dev/backfill": value}},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
    )
    scheduled = render_pod(given, pod_name="p", scheduled_at=T0)
    assert "pyncette.dev/backfill" not in scheduled["metadata"]["annotations"]
    assert pod_view(scheduled).backfill is None


def raw_pod(name: str, phase: str, scheduled: str, *, uid: str = "uid-1") -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": name,
            "uid": f"pod-{name}",
            "labels": {"pyncette.dev/task": "hello"},
            "annotations": {"pyncette.dev/scheduled-at": scheduled},
            "ownerReferences": [
                {"apiVersion": "pyncette.dev/v1", "kind": "PyncetteTask", "uid": uid, "controller": True}
            ],
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "main",
                    "state": {
                        "terminated": {
                            "exitCode": 0 if phase == "Succeeded" else 3,
                            "finishedAt": "2030-01-01T12:00:05Z",
                        }
                    },
                }
            ]
            if phase in ("Succeeded", "Failed")
            else [],
        },
    }


def test_pod_view_reads_outcome() -> None:
    view = pod_view(raw_pod("p", "Failed", "2030-01-01T12:00:00Z"))
    assert view.finished and not view.succeeded
    assert view.owner_uid == "uid-1"
    assert "exited with code 3" in view.message
    assert view.finished_at == datetime.datetime(2030, 1, 1, 12, 0, 5, tzinfo=datetime.UTC)
    assert not pod_view(raw_pod("q", "Running", "x")).finished


def test_prune_keeps_the_newest_per_outcome() -> None:
    pods = [pod_view(raw_pod(f"s{i}", "Succeeded", f"2030-01-01T12:00:0{i}Z")) for i in range(5)]
    pods += [pod_view(raw_pod(f"f{i}", "Failed", f"2030-01-01T12:00:0{i}Z")) for i in range(3)]
    pods.append(pod_view(raw_pod("r", "Running", "2030-01-01T12:00:09Z")))
    victims = {p.name for p in prune_candidates(pods, successful_limit=3, failed_limit=1)}
    assert victims == {"s0", "s1", "f0", "f1"}
    assert prune_candidates(pods, successful_limit=10, failed_limit=10) == []
