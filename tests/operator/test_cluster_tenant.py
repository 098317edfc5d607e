"""Bounds and tenant safety on the local control plane, as a tenant with kubectl sees them.

Each test runs its own operator subprocess watching only the test's namespace. What the apiserver
refuses (CEL, schema bounds) is tried with ``kubectl apply``; what only the operator judges shows
up as ``Ready=False`` with a reason.
"""

from __future__ import annotations

import datetime
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import wait_until

pytestmark = pytest.mark.cluster


def ready(k: Kubectl, name: str) -> dict[str, Any]:
    condition: dict[str, Any] = wait_until(lambda: k.condition(name, "Ready"), what=f"Ready on {name}")
    return condition


def test_api_server_refuses_pods_that_never_finish_and_oversized_or_path_like_fields(
    k: Kubectl, crd_installed: None
) -> None:
    always = pod_template()
    always["spec"]["restartPolicy"] = "Always"
    proc = k.apply(ptask("forever", interval="1m", podTemplate=always), check=False)
    assert proc.returncode != 0
    assert "spec.podTemplate.spec.restartPolicy must be Never or OnFailure (a run's Pod must finish)" in proc.stderr
    for policy in ("Never", "OnFailure"):
        fine = pod_template()
        fine["spec"]["restartPolicy"] = policy
        assert k.apply(ptask(f"fine-{policy.lower()}", interval="1m", podTemplate=fine), check=False).returncode == 0

    proc = k.apply(
        ptask("zone", schedule="0 0 * * *", timezone="/etc/localtime", podTemplate=pod_template()), check=False
    )
    assert proc.returncode != 0 and "spec.timezone" in proc.stderr

    many = {f"key{i}": i for i in range(65)}
    proc = k.apply(ptask("args", interval="1m", handler={"name": "record", "args": many}), check=False)
    assert proc.returncode != 0 and "spec.handler.args" in proc.stderr

    crowded = pod_template()
    crowded["spec"]["containers"] = [{"name": f"c{i}", "image": "busybox"} for i in range(17)]
    proc = k.apply(ptask("crowded", interval="1m", podTemplate=crowded), check=False)
    assert proc.returncode != 0 and "spec.podTemplate.spec.containers" in proc.stderr


def test_the_operators_own_service_account_is_refused(
    k: Kubectl, kube_cluster: Any, start_operator: Any, tmp_path: Path
) -> None:
    """The operator runs under a ServiceAccount token and finds out which one by itself."""
    k("create", "serviceaccount", "pyncette-operator")
    k(
        "create",
        "role",
        "pyncette-operator",
        "--verb=get,list,watch",
        "--resource=pyncettetasks.pyncette.dev",
    )
    k("create", "role", "pyncette-operator-status", "--verb=patch", "--resource=pyncettetasks.pyncette.dev/status")
    k("create", "role", "pyncette-operator-pods", "--verb=get,list,watch,create,delete", "--resource=pods")
    k("create", "role", "pyncette-operator-events", "--verb=create", "--resource=events")
    for role in ("pyncette-operator", "pyncette-operator-status", "pyncette-operator-pods", "pyncette-operator-events"):
        k("create", "rolebinding", role, f"--role={role}", f"--serviceaccount={k.namespace}:pyncette-operator")
    kubeconfig = kube_cluster.token_kubeconfig(k.namespace, "pyncette-operator", tmp_path / "operator.kubeconfig")
    op = start_operator("--namespace", k.namespace, "--status-interval", "1", env={"KUBECONFIG": str(kubeconfig)})
    assert f"Running as ServiceAccount {k.namespace}/pyncette-operator" in op.log_text()

    k.apply(ptask("escalate", interval="2s", podTemplate=pod_template(service_account="pyncette-operator")))
    k.apply(ptask("honest", interval="2s", podTemplate=pod_template(duration="100ms")))
    condition = ready(k, "escalate")
    assert (condition["status"], condition["reason"]) == ("False", "ForbiddenServiceAccount")
    assert condition["message"] == (
        "spec.podTemplate.spec.serviceAccountName: ServiceAccount 'pyncette-operator' is the operator's own"
        " and may not run tasks"
    )
    # The other task runs (so the operator had every chance to create Pods), the refused one never.
    wait_until(lambda: k.task("honest").get("status", {}).get("lastSuccessfulTime"), what="a run of the honest task")
    assert k.pods("escalate") == []


def test_handlers_serve_only_their_namespaces_and_show_tenants_no_internals(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--handlers", "ptask_test_handlers", "--status-interval", "1")
    # "only-blue" is registered for namespace blue-team only: here it does not exist.
    k.apply(ptask("blue", interval="5s", handler={"name": "only-blue"}))
    condition = ready(k, "blue")
    assert (condition["status"], condition["reason"]) == ("False", "UnknownHandler")
    assert f"no handler named 'only-blue' serves namespace '{k.namespace}'" in condition["message"]
    assert "only-blue" not in condition["message"].partition("available here:")[2]
    # A HandlerError is a message for the task's owner; it reaches the RunFailed Event.
    k.apply(ptask("refused", interval="2s", failureMode="Commit", handler={"name": "refuse", "args": {"who": "ops"}}))
    failed = wait_until(lambda: [e for e in k.events("refused") if e["reason"] == "RunFailed"], what="RunFailed")
    assert "no report for ops today" in failed[0]["message"]


def test_min_interval_makes_frequent_schedules_not_ready(k: Kubectl, start_operator: Any) -> None:
    start_operator("--namespace", k.namespace, "--min-interval", "1m", "--status-interval", "1")
    k.apply(ptask("fast", interval="10s", podTemplate=pod_template()))
    k.apply(ptask("fast-cron", schedule="* * * * * */10", podTemplate=pod_template()))
    k.apply(ptask("slow", interval="2m", podTemplate=pod_template()))
    fast = ready(k, "fast")
    assert (fast["status"], fast["reason"]) == ("False", "ScheduleTooFrequent")
    assert fast["message"] == "spec.interval: 10s is shorter than the operator allows (--min-interval 1m)"
    cron = ready(k, "fast-cron")
    assert (cron["status"], cron["reason"]) == ("False", "ScheduleTooFrequent")
    assert "runs 10s apart" in cron["message"]
    assert ready(k, "slow")["status"] == "True"


def test_pod_creates_beyond_the_burst_wait_for_the_rate(k: Kubectl, start_operator: Any) -> None:
    """With a burst of 2 and one Pod per 100 s, four due runs make two Pods; two creates wait."""
    op = start_operator(
        "--namespace", k.namespace, "--pod-create-qps", "0.01", "--pod-create-burst", "2", "--status-interval", "1"
    )
    due = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    names = [f"once-{i}" for i in range(4)]
    for name in names:
        k.apply(ptask(name, executeAt=due, podTemplate=pod_template(duration="1h")))
    wait_until(
        lambda: op.metric("pyncette_operator_pod_creates_waiting") == 2, what="two Pod creates waiting for the rate"
    )
    assert sum(len(k.pods(name)) for name in names) == 2
    assert op.metric("pyncette_operator_pods_created_total") == 2


def test_status_active_is_capped(k: Kubectl, start_operator: Any) -> None:
    """An Allow task whose Pods run long piles up runs; status lists 20, Running counts them all."""
    start_operator("--namespace", k.namespace, "--status-interval", "1")
    k.apply(ptask("pileup", interval="1s", concurrencyPolicy="Allow", podTemplate=pod_template(duration="1h")))

    def counted() -> int:
        message = (k.condition("pileup", "Running") or {}).get("message", "")
        return int(message.split(" ")[0]) if message[:1].isdigit() else 0

    wait_until(lambda: counted() > 21, timeout=120, what="more than 21 runs in flight")
    status = k.task("pileup")["status"]
    assert len(status["active"]) == 20
    assert k("patch", "ptask", "pileup", "--type=merge", "-p", json.dumps({"spec": {"suspend": True}})).returncode == 0


def test_a_flood_on_the_metrics_port_does_not_starve_the_health_probe(k: Kubectl, start_operator: Any) -> None:
    op = start_operator("--namespace", k.namespace)
    idle = [socket.create_connection(("127.0.0.1", op.metrics_port), timeout=10) for _ in range(40)]
    try:
        # The metrics server is full (32 connections); the health endpoint is its own server.
        wait_until(lambda: not _metrics_answer(op.metrics_port), what="the metrics server refusing more connections")
        assert op.healthy()
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: _metrics_answer(op.metrics_port), what="metrics again once the idle clients left")


def _metrics_answer(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_endpoints_listen_on_their_bind_addresses(k: Kubectl, start_operator: Any) -> None:
    """--metrics-bind-address 127.0.0.2: metrics answer there and nowhere else on the machine."""
    op = start_operator(
        "--namespace", k.namespace, "--metrics-bind-address", "127.0.0.2", "--health-bind-address", "127.0.0.1"
    )
    with socket.create_connection(("127.0.0.2", op.metrics_port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(16).startswith(b"HTTP/1.1 200")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", op.metrics_port), timeout=10).close()
    assert op.healthy()  # the harness probes 127.0.0.1, where --health-bind-address put it
