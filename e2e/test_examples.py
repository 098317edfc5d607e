"""The sample tasks in examples/ run on a cluster installed with the chart, as a user would see it.

Only ``kubectl apply`` and ``kubectl get``; the assertions are on what ``kubectl get ptask``
shows: Ready, runs (Pods owned by the task), and the status times.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2ekit import E2E
from e2ekit import EXAMPLES

from chart.kubelet import wait_until
from plugins.kube import SIM_DURATION
from plugins.kube import on_kwok

pytestmark = pytest.mark.cluster

TIMEOUT = 120.0


def _example_tasks() -> list[Any]:
    tasks = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "PyncetteTask":
                tasks.append(pytest.param(path, doc, id=f"{path.name}:{doc['metadata']['name']}"))
    return tasks


def _condition(task: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for condition in (task.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def _ready(e2e: E2E, name: str) -> dict[str, Any] | None:
    task: dict[str, Any] = e2e.get("pyncettetask", name)
    condition = _condition(task, "Ready")
    if condition and condition["status"] == "True":
        assert condition.get("observedGeneration", task["metadata"]["generation"]) == task["metadata"]["generation"]
        return task
    return None


def _parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_examples_exist() -> None:
    assert _example_tasks(), f"no PyncetteTask manifests in {EXAMPLES}/*.yaml"


@pytest.mark.parametrize(("path", "task"), _example_tasks())
def test_example_task_runs(e2e: E2E, path: Path, task: dict[str, Any]) -> None:
    name = task["metadata"]["name"]
    spec = task["spec"]
    if "handler" in spec and not any("--handlers=" in a for op in e2e.operators for a in op.argv):
        pytest.skip(f"{name} needs in-process handlers, which only a locally run operator can load here")
    task = {**task, "metadata": {**task["metadata"], "namespace": e2e.namespace}}
    e2e.kubectl("apply", "-f", "-", input=json.dumps(task))
    try:
        ready = wait_until(lambda: _ready(e2e, name), timeout=TIMEOUT, what=f"{name} Ready=True")
        if spec.get("suspend"):
            return
        next_run = wait_until(
            lambda: (e2e.get("pyncettetask", name).get("status") or {}).get("nextRunTime"),
            timeout=TIMEOUT,
            what=f"{name} status.nextRunTime",
        )
        due_in = (_parse_time(next_run) - datetime.datetime.now(datetime.UTC)).total_seconds()
        if due_in > TIMEOUT / 2:
            return  # e.g. a nightly schedule: Ready with a next run time is all a test can see
        if "podTemplate" in spec:
            pods = wait_until(
                lambda: e2e.get("pods", "-l", f"pyncette.dev/task={name}")["items"],
                timeout=TIMEOUT,
                what=f"a Pod run of {name}",
            )
            owner = pods[0]["metadata"]["ownerReferences"][0]
            assert (owner["kind"], owner["name"], owner["uid"]) == ("PyncetteTask", name, ready["metadata"]["uid"])
        wait_until(
            lambda: (e2e.get("pyncettetask", name).get("status") or {}).get("lastSuccessfulTime"),
            timeout=TIMEOUT,
            what=f"{name} status.lastSuccessfulTime",
        )
        if "podTemplate" in spec:
            # However many replicas run, one scheduled time never gets two successful Pods.
            slots = Counter(
                (pod["metadata"].get("annotations") or {}).get("pyncette.dev/scheduled-at")
                for pod in e2e.get("pods", "-l", f"pyncette.dev/task={name}")["items"]
                if pod.get("status", {}).get("phase") == "Succeeded"
            )
            assert slots and max(slots.values()) == 1, slots
    except AssertionError as e:
        raise AssertionError(f"{e}\n{e2e.operator_logs()}") from None
    finally:
        e2e.kubectl("delete", "pyncettetask", name, "--ignore-not-found", "--wait=false", check=False)


def test_api_server_rejects_a_task_with_two_schedules(e2e: E2E) -> None:
    task = {
        "apiVersion": "pyncette.dev/v1",
        "kind": "PyncetteTask",
        "metadata": {"name": "two-schedules"},
        "spec": {"schedule": "* * * * *", "interval": "10s", "handler": {"name": "x"}},
    }
    proc = e2e.kubectl("apply", "-f", "-", input=json.dumps(task), check=False)
    assert proc.returncode != 0
    assert "exactly one of spec.schedule, spec.schedules, spec.interval or spec.executeAt" in proc.stderr


def test_operator_reports_what_only_it_can_judge(e2e: E2E) -> None:
    task = {
        "apiVersion": "pyncette.dev/v1",
        "kind": "PyncetteTask",
        "metadata": {"name": "bad-cron"},
        "spec": {
            "schedule": "61 * * * *",
            "podTemplate": {"spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}},
        },
    }
    e2e.kubectl("apply", "-f", "-", input=json.dumps(task))
    try:

        def not_ready() -> dict[str, Any] | None:
            condition = _condition(e2e.get("pyncettetask", "bad-cron"), "Ready")
            return condition if condition and condition["status"] == "False" else None

        condition = wait_until(not_ready, timeout=TIMEOUT, what="bad-cron Ready=False")
        assert condition["reason"] == "InvalidSchedule"
        assert "61" in condition["message"] or "schedule" in condition["message"].lower()
        assert all(op.alive() for op in e2e.operators), e2e.operator_logs()
    finally:
        e2e.kubectl("delete", "pyncettetask", "bad-cron", "--ignore-not-found", "--wait=false", check=False)


def test_deleting_a_task_takes_its_pods_along(e2e: E2E) -> None:
    task = {
        "apiVersion": "pyncette.dev/v1",
        "kind": "PyncetteTask",
        "metadata": {"name": "short-lived"},
        "spec": {
            "interval": "2s",
            "podTemplate": {
                "metadata": {"annotations": {SIM_DURATION: "1s"}},
                "spec": on_kwok({"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}),
            },
        },
    }
    e2e.kubectl("apply", "-f", "-", input=json.dumps(task))
    selector = "pyncette.dev/task=short-lived"
    wait_until(lambda: e2e.get("pods", "-l", selector)["items"], timeout=TIMEOUT, what="a run of short-lived")
    e2e.kubectl("delete", "pyncettetask", "short-lived", "--wait=true", "--timeout=60s")
    wait_until(
        lambda: not [p for p in e2e.get("pods", "-l", selector)["items"] if not p["metadata"].get("deletionTimestamp")],
        timeout=TIMEOUT,
        what="the Pods of the deleted task to go (ownerReferences)",
    )
