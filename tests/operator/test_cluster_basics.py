"""The operator on the local control plane: what a user sees with kubectl.

Each test runs its own operator subprocess, watching only the test's namespace, on an embedded
SQLite file; resources are applied with kubectl as a user would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

pytestmark = pytest.mark.cluster


def test_api_server_rejects_one_of_violations(k: Kubectl, crd_installed: None) -> None:
    cases = [
        (
            ptask("both", schedule="* * * * *", interval="1m", podTemplate=pod_template()),
            "exactly one of spec.schedule, spec.schedules, spec.interval or spec.executeAt must be set",
        ),
        (
            ptask("none", podTemplate=pod_template()),
            "exactly one of spec.schedule, spec.schedules, spec.interval or spec.executeAt must be set",
        ),
        (ptask("what", interval="1m"), "exactly one of spec.podTemplate or spec.handler must be set"),
        (
            ptask("two", interval="1m", podTemplate=pod_template(), handler={"name": "x"}),
            "exactly one of spec.podTemplate or spec.handler must be set",
        ),
        (
            ptask("tz", interval="1m", timezone="UTC", podTemplate=pod_template()),
            "spec.timezone may only be set together with spec.schedule",
        ),
        (
            ptask("mode", interval="1m", executionMode="Sometimes", podTemplate=pod_template()),
            'Unsupported value: "Sometimes"',
        ),
        (ptask("dur", interval="ten seconds", podTemplate=pod_template()), "spec.interval"),
        (ptask("when", executeAt="tomorrow", podTemplate=pod_template()), "spec.executeAt"),
    ]
    for manifest, message in cases:
        result = k.apply(manifest, check=False)
        assert result.returncode != 0, manifest
        assert message in result.stderr, result.stderr
    assert k.get("pyncettetasks")["items"] == []


def test_pod_runs_with_status_events_and_history(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    template = pod_template(duration="200ms")
    template["metadata"]["namespace"] = "kube-system"  # ignored: runs stay in the task's namespace
    k.apply(ptask("hello", interval="1s", podTemplate=template, successfulRunsHistoryLimit=2))

    def succeeded_runs() -> bool:
        return op.metric("pyncette_operator_runs_finished_total") >= 4

    wait_until(succeeded_runs, timeout=90, what="four finished runs")
    status = wait_until(
        lambda: k.task("hello").get("status", {}).get("lastSuccessfulTime") and k.task("hello")["status"],
        what="lastSuccessfulTime",
    )
    assert status["observedGeneration"] == 1
    assert status["scheduleText"] == "every 1s"
    for field in ("lastScheduleTime", "nextRunTime", "lastSuccessfulTime"):
        assert field in status, status
    ready = k.condition("hello", "Ready")
    assert ready is not None and ready["status"] == "True" and ready["reason"] == "Scheduled"
    assert k.condition("hello", "Running") is not None

    task = k.task("hello")
    pods = k.pods("hello")
    assert pods
    for pod in pods:
        meta = pod["metadata"]
        assert len(meta["name"]) <= 63 and meta["name"].startswith("hello-")
        assert meta["namespace"] == k.namespace
        assert meta["labels"]["pyncette.dev/task"] == "hello"
        assert "pyncette.dev/scheduled-at" in meta["annotations"]
        [owner] = meta["ownerReferences"]
        assert owner["kind"] == "PyncetteTask" and owner["uid"] == task["metadata"]["uid"] and owner["controller"]
        assert pod["spec"]["restartPolicy"] == "Never"
    # History: at most 2 finished successful Pods are kept (the one running may be extra).
    wait_until(
        lambda: len([p for p in k.pods("hello") if p["status"].get("phase") == "Succeeded"]) <= 2,
        what="pruning to successfulRunsHistoryLimit",
    )
    reasons = wait_until(
        lambda: (
            {e["reason"] for e in k.events("hello")} >= {"RunStarted", "RunSucceeded"}
            and {e["reason"] for e in k.events("hello")}
        ),
        what="run Events",
    )
    assert "RunStarted" in reasons

    # kubectl get shows the printer columns.
    table = k("get", "ptask", "hello").stdout
    for column in ("SCHEDULE", "SUSPEND", "LAST RUN", "NEXT RUN", "READY", "AGE"):
        assert column in table
    assert "every 1s" in table and "True" in table


def test_invalid_specs_give_ready_false_and_never_crash(k: Kubectl, start_operator: Any) -> None:
    op = start_operator(
        "--namespace", k.namespace, "--allowed-service-accounts", "default,runner", "--status-interval", "1"
    )
    k.apply(ptask("cron", schedule="61 * * * *", podTemplate=pod_template()))
    # Parses, but no date matches: found by computing it (issue 10), not reported as BackendUnavailable.
    k.apply(ptask("feb30", schedule="0 0 30 2 *", podTemplate=pod_template()))
    k.apply(ptask("zone", schedule="* * * * *", timezone="Mars/Olympus_Mons", podTemplate=pod_template()))
    k.apply(ptask("nohandler", interval="10s", handler={"name": "does-not-exist"}))
    k.apply(ptask("sa", interval="10s", podTemplate=pod_template(service_account="cluster-admin-ish")))
    k.apply(ptask("fine", interval="1s", podTemplate=pod_template(duration="100ms")))
    expected = {
        "cron": ("InvalidSchedule", "spec.schedule"),
        "feb30": ("InvalidSchedule", "no next run time"),
        "zone": ("UnknownTimezone", "Mars/Olympus_Mons"),
        "nohandler": ("UnknownHandler", "does-not-exist"),
        "sa": ("ForbiddenServiceAccount", "cluster-admin-ish"),
    }
    for name, (reason, fragment) in expected.items():
        ready = wait_until(lambda name=name: k.condition(name, "Ready"), what=f"Ready on {name}")
        assert ready["status"] == "False", ready
        assert ready["reason"] == reason, ready
        assert fragment in ready["message"] and "\n" not in ready["message"]
        warnings = wait_until(
            lambda name=name: [e for e in k.events(name) if e["reason"] == "InvalidSpec" and e["type"] == "Warning"],
            what=f"InvalidSpec Event on {name}",
        )
        assert fragment in warnings[0]["message"]
        assert k.pods(name) == []
    # The valid task in the same namespace keeps running, and the operator never restarted.
    wait_until(
        lambda: op.metric("pyncette_operator_runs_finished_total") >= 2, timeout=60, what="runs of the valid task"
    )
    assert op.alive()
    # Fixing the spec makes it Ready (level-triggered: the next event applies the new spec).
    k("patch", "ptask", "cron", "--type=merge", "-p", json.dumps({"spec": {"schedule": "*/2 * * * * *"}}))
    wait_until(lambda: (k.condition("cron", "Ready") or {}).get("status") == "True", what="Ready after the fix")
    assert (k.condition("cron", "Ready") or {}).get("observedGeneration") == 2
    assert op.alive()


def test_handler_runs_receive_args(k: Kubectl, start_operator: Any, tmp_path: Path) -> None:
    out = tmp_path / "calls.jsonl"
    op = start_operator("--namespace", k.namespace, "--handlers", "ptask_test_handlers", "--status-interval", "1")
    k.apply(
        ptask(
            "report", interval="1s", handler={"name": "record", "args": {"path": str(out), "to": ["ops@example.com"]}}
        )
    )
    k.apply(ptask("broken", interval="1s", failureMode="Commit", handler={"name": "explode", "args": {"who": "me"}}))
    lines = wait_until(
        lambda: out.exists() and len(out.read_text().splitlines()) >= 2 and out.read_text().splitlines(),
        what="two handler calls",
    )
    call = json.loads(lines[0])
    assert call["args"] == {"path": str(out), "to": ["ops@example.com"]}
    wait_until(lambda: k.task("report").get("status", {}).get("lastSuccessfulTime"), what="lastSuccessfulTime")
    broken = wait_until(
        lambda: k.task("broken").get("status", {}).get("lastFailureTime") and k.task("broken"), what="lastFailureTime"
    )
    assert "lastSuccessfulTime" not in broken["status"]
    failed = wait_until(lambda: [e for e in k.events("broken") if e["reason"] == "RunFailed"], what="RunFailed Event")
    # The tenant sees the exception's type; its message (the operator's business) is in the log only.
    assert "RuntimeError" in failed[0]["message"] and "boom" not in failed[0]["message"]
    assert "boom for me" in op.log_text()
    assert k.pods("report") == []
    assert op.alive()


def test_failed_pods_failure_mode_and_failed_history(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask(
            "flaky",
            interval="1s",
            failureMode="Commit",
            failedRunsHistoryLimit=1,
            podTemplate=pod_template(duration="100ms", outcome="Failed"),
        )
    )
    wait_until(
        lambda: op.metric('pyncette_operator_runs_finished_total{kind="Pod",outcome="failed"}') >= 3,
        timeout=90,
        what="three failed runs",
    )
    status = wait_until(
        lambda: k.task("flaky").get("status", {}).get("lastFailureTime") and k.task("flaky")["status"],
        what="lastFailureTime",
    )
    assert "lastSuccessfulTime" not in status
    wait_until(
        lambda: len([p for p in k.pods("flaky") if p["status"].get("phase") == "Failed"]) <= 1,
        what="failed Pods pruned to failedRunsHistoryLimit",
    )
    events = wait_until(lambda: [e for e in k.events("flaky") if e["reason"] == "RunFailed"], what="RunFailed Event")
    assert events[0]["type"] == "Warning"


def test_failure_mode_unlock_retries_the_same_slot(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(
        ptask(
            "retry",
            interval="1h",
            failureMode="Unlock",
            failedRunsHistoryLimit=10,
            podTemplate=pod_template(duration="100ms", outcome="Failed"),
        )
    )
    k("annotate", "ptask", "retry", "pyncette.dev/run-now=go")
    # One run-now slot, retried: several Pods with the same scheduled time and increasing attempts.
    pods = wait_until(lambda: len(k.pods("retry")) >= 3 and k.pods("retry"), timeout=90, what="retried attempts")
    slots = {p["metadata"]["annotations"]["pyncette.dev/scheduled-at"] for p in pods}
    attempts = sorted(int(p["metadata"]["annotations"]["pyncette.dev/attempt"]) for p in pods)
    assert len(slots) == 1
    assert attempts[:3] == [0, 1, 2]
    assert op.alive()


def test_run_now_runs_once_per_value(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(ptask("manual", schedule="0 0 1 1 *", podTemplate=pod_template(duration="100ms")))
    wait_until(lambda: (k.condition("manual", "Ready") or {}).get("status") == "True", what="Ready")
    assert k.pods("manual") == []
    k("annotate", "ptask", "manual", "pyncette.dev/run-now=first")
    wait_until(lambda: k.task("manual").get("status", {}).get("lastRunNow") == "first", what="lastRunNow=first")
    wait_until(lambda: len(k.pods("manual")) == 1, what="one Pod for the first run-now")
    wait_until(lambda: k.task("manual").get("status", {}).get("lastSuccessfulTime"), what="the run-now run succeeded")
    # Re-applying or touching the object does not run it again; a new value does.
    k("label", "ptask", "manual", "touched=yes")
    k("annotate", "--overwrite", "ptask", "manual", "pyncette.dev/run-now=second")
    wait_until(lambda: k.task("manual").get("status", {}).get("lastRunNow") == "second", what="lastRunNow=second")
    pods = wait_until(lambda: len(k.pods("manual")) == 2 and k.pods("manual"), what="a second Pod")
    triggers = sorted(p["metadata"]["annotations"].get("pyncette.dev/trigger") for p in pods)
    assert triggers == ["run-now:first", "run-now:second"]
    # Wait for a sweep (every 5 s) to have passed, then check nothing ran a third time.
    sweeps = op.metric('pyncette_operator_apiserver_requests_total{resource="pyncettetasks",verb="list"}')
    wait_until(
        lambda: (
            op.metric('pyncette_operator_apiserver_requests_total{resource="pyncettetasks",verb="list"}') >= sweeps + 2
        ),
        timeout=30,
        what="two sweeps",
    )
    assert len(k.pods("manual")) == 2
    assert op.metric("pyncette_operator_runs_started_total") == 2


def test_suspend_resume_and_delete(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(ptask("pausable", interval="1s", successfulRunsHistoryLimit=50, podTemplate=pod_template(duration="100ms")))
    wait_until(lambda: len(k.pods("pausable")) >= 2, timeout=60, what="two runs")
    k("patch", "ptask", "pausable", "--type=merge", "-p", json.dumps({"spec": {"suspend": True}}))
    wait_until(lambda: (k.condition("pausable", "Ready") or {}).get("reason") == "Suspended", what="Suspended")
    wait_until(lambda: (k.condition("pausable", "Running") or {}).get("status") == "False", what="no run in flight")
    count = len(k.pods("pausable"))
    # A canary task in the same operator proves time passes and runs happen meanwhile.
    k.apply(ptask("canary", interval="1s", podTemplate=pod_template(duration="100ms")))
    wait_until(lambda: len(k.pods("canary")) >= 3, timeout=60, what="three canary runs")
    assert len(k.pods("pausable")) == count
    assert "nextRunTime" not in k.task("pausable")["status"]
    k("patch", "ptask", "pausable", "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    wait_until(lambda: len(k.pods("pausable")) > count, timeout=60, what="runs after resume")

    k("delete", "ptask", "pausable", "--wait=true", "--timeout=60s")
    wait_until(lambda: k.pods("pausable") == [], timeout=90, what="Pods garbage-collected via ownerReferences")
    wait_until(
        lambda: op.metric('pyncette_operator_backend_registrations_total{action="unschedule"}') >= 1, what="unschedule"
    )
    assert op.alive()


def test_status_write_cap(k: Kubectl, start_operator: Any) -> None:
    """A task running every second costs at most one status write per --status-interval."""
    interval = 3.0
    op = start_operator("--namespace", k.namespace, "--status-interval", str(interval))
    k.apply(ptask("busy", interval="1s", podTemplate=pod_template(duration="100ms")))
    wait_until(lambda: op.metric("pyncette_operator_runs_finished_total") >= 1, timeout=60, what="the first run")
    runs0, writes0 = (
        op.metric("pyncette_operator_runs_finished_total"),
        op.metric("pyncette_operator_status_writes_total"),
    )
    skew0 = op.metric("pyncette_operator_start_skew_seconds_count")
    wait_until(
        lambda: op.metric("pyncette_operator_runs_finished_total") >= runs0 + 12, timeout=90, what="12 more runs"
    )
    runs = op.metric("pyncette_operator_runs_finished_total") - runs0
    writes = op.metric("pyncette_operator_status_writes_total") - writes0
    started = op.metric("pyncette_operator_start_skew_seconds_count") - skew0
    # Every run changes status twice (start, end); the window spans at least `runs` seconds
    # (interval 1s, one run at a time), so the cap allows runs/interval writes plus the edges.
    assert started >= runs
    assert writes <= runs / interval + 2, (writes, runs)
    assert writes >= 1


def test_startup_without_rbac_fails_in_one_line(
    kube_cluster: Any, k: Kubectl, crd_installed: None, tmp_path: Path
) -> None:
    config = kube_cluster.token_kubeconfig(k.namespace, "default", tmp_path / "sa.kubeconfig")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "pyncette-operator"),
            "run",
            "--backend",
            "memory://",
            "--namespace",
            k.namespace,
        ],
        env={**os.environ, "KUBECONFIG": str(config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("pyncette-operator: error: cannot list pyncettetasks (403"), result.stderr
    assert "Traceback" not in result.stderr


ROLE_RULES = [
    {"apiGroups": ["pyncette.dev"], "resources": ["pyncettetasks"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["pyncette.dev"], "resources": ["pyncettetasks/status"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def test_runs_with_exactly_the_documented_namespaced_rbac(
    kube_cluster: Any, k: Kubectl, start_operator: Any, tmp_path: Path
) -> None:
    """The operator needs nothing beyond docs/operator.md's Role (as a ServiceAccount, real 403s)."""
    k.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}})
    k.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "operator"},
            "rules": ROLE_RULES,
        }
    )
    k.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": k.namespace}],
        }
    )
    config = kube_cluster.token_kubeconfig(k.namespace, "operator", tmp_path / "operator.kubeconfig")
    op = start_operator("--namespace", k.namespace, "--status-interval", "1", env={"KUBECONFIG": str(config)})
    k.apply(ptask("rbac", interval="1s", successfulRunsHistoryLimit=1, podTemplate=pod_template(duration="100ms")))
    k.apply(ptask("rbac-bad", schedule="nope", podTemplate=pod_template()))
    wait_until(lambda: op.metric("pyncette_operator_pods_pruned_total") >= 1, timeout=90, what="runs and pruning")
    wait_until(lambda: k.task("rbac").get("status", {}).get("lastSuccessfulTime"), what="status written")
    wait_until(lambda: [e for e in k.events("rbac-bad") if e["reason"] == "InvalidSpec"], what="an Event posted")
    wait_until(lambda: op.metric("pyncette_operator_apiserver_requests_total") > 0, what="requests")
    # A 403 anywhere, but not the digits inside a number (the metrics port was 44033 once).
    log = op.log_text()
    assert not re.search(r"(?<!\d)403(?!\d)", log) and "Forbidden" not in log, log[-3000:]
