"""Several schedules per task and ``H`` spread, on the local control plane, as a user sees them."""

from __future__ import annotations

import collections
import datetime
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

from pyncette.schedule import spread_cron
from pyncette_operator.runs.jitter import jitter_delay
from pyncette_operator.spec import parse_time

pytestmark = pytest.mark.cluster

SCHEDULED_AT = "pyncette.dev/scheduled-at"


def scheduled_seconds(k: Kubectl, task: str) -> list[int]:
    """The second-of-minute of every scheduled (not run-now) Pod's slot, one entry per Pod."""
    out = []
    for pod in k.pods(task):
        annotations = pod["metadata"].get("annotations") or {}
        if SCHEDULED_AT in annotations and "pyncette.dev/trigger" not in annotations:
            out.append(parse_time(annotations[SCHEDULED_AT]).second)
    return out


def test_the_api_server_rejects_bad_schedule_lists(k: Kubectl, crd_installed: None) -> None:
    cases = [
        (
            ptask("both", schedule="* * * * *", schedules=["0 * * * *"], podTemplate=pod_template()),
            "exactly one of spec.schedule, spec.schedules, spec.interval or spec.executeAt must be set",
        ),
        (ptask("empty", schedules=[], podTemplate=pod_template()), "spec.schedules"),
        (ptask("dup", schedules=["0 * * * *", "0 * * * *"], podTemplate=pod_template()), "Duplicate value"),
        (
            ptask("tz", interval="1m", timezone="UTC", podTemplate=pod_template()),
            "spec.timezone may only be set together with spec.schedule or spec.schedules",
        ),
    ]
    for manifest, message in cases:
        result = k.apply(manifest, check=False)
        assert result.returncode != 0, manifest
        assert message in result.stderr, result.stderr
    assert k.get("pyncettetasks")["items"] == []
    # A time zone with a list is fine.
    k.apply(ptask("ok", schedules=["0 9 * * *"], timezone="Europe/Dublin", podTemplate=pod_template()))


def test_a_task_with_two_schedules_runs_at_both_once_per_slot(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    # Seconds 10 and 40 of every minute; the third expression matches the same times again and
    # must not add a second Pod to any slot.
    schedules = ["* * * * * 10", "* * * * * 40", "* * * * * 10,40"]
    k.apply(ptask("two", schedules=schedules, podTemplate=pod_template(duration="500ms")))

    seconds = wait_until(
        lambda: (s := scheduled_seconds(k, "two")) and {10, 40} <= set(s) and s,
        timeout=150,
        what="Pods for both schedules",
    )
    assert set(seconds) <= {10, 40}
    slots = collections.Counter(
        pod["metadata"]["annotations"][SCHEDULED_AT]
        for pod in k.pods("two")
        if SCHEDULED_AT in pod["metadata"]["annotations"]
    )
    assert all(count == 1 for count in slots.values()), slots  # retries aside, one Pod per slot
    status = k.task("two")["status"]
    assert status["scheduleText"] == "; ".join(schedules)
    assert parse_time(status["nextRunTime"]).second in (10, 40)
    ready = k.condition("two", "Ready")
    assert ready is not None and ready["status"] == "True"


def test_h_runs_at_the_tasks_own_time_shown_in_status(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(ptask("spread", schedule="* * * * * H", podTemplate=pod_template(duration="200ms")))
    resolved = spread_cron("* * * * * H", f"{k.namespace}/spread")
    second = int(resolved.split()[5])

    text = wait_until(lambda: (k.task("spread").get("status") or {}).get("scheduleText"), what="scheduleText")
    assert text == resolved
    columns = k("get", "ptask", "spread", "--no-headers").stdout.split()
    assert columns[1:7] == resolved.split()  # the SCHEDULE column of kubectl get
    seconds = wait_until(lambda: scheduled_seconds(k, "spread"), timeout=90, what="a Pod of the spread task")
    assert set(seconds) == {second}
    assert parse_time(k.task("spread")["status"]["nextRunTime"]).second == second


def test_jitter_delays_each_run_but_keeps_its_slot(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(ptask("jit", schedule="* * * * * 0,30", jitter="20s", podTemplate=pod_template(duration="200ms")))
    uid = k.task("jit")["metadata"]["uid"]
    [pod] = wait_until(lambda: k.pods("jit")[:1], timeout=90, what="a Pod of the jittered task")
    slot = parse_time(pod["metadata"]["annotations"][SCHEDULED_AT])
    assert slot.second in (0, 30)
    assert pod["metadata"]["name"].startswith(f"jit-{int(slot.timestamp())}-")  # named by its slot
    delay = jitter_delay(task_uid=uid, scheduled_at=slot, jitter=datetime.timedelta(seconds=20))
    created = parse_time(pod["metadata"]["creationTimestamp"])  # whole seconds, rounded down
    assert created >= (slot + delay).replace(microsecond=0), (created, slot, delay)
