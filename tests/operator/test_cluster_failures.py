"""The operator's failure paths on the local control plane, tried as a user would (kubectl, a real
operator process, real faults): downtime catch-up, bounded retries, a Pod deleted while the watch
was cut, SIGTERM handing runs to another replica, and a fatal error exiting non-zero.

Time is real here (the operator is a subprocess), so the schedules are seconds long: "a per-minute
task stopped for ten minutes" is an every-2-seconds task stopped for 22 seconds. The same rules on
the fake clock, at their real sizes, are in test_inprocess_failures.py.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import replica_with_run_in_flight
from ptask_harness import rfc3339
from ptask_harness import wait_until

from faultkit import Proxy
from faultkit import available
from faultkit import create_proxy

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow]


def scheduled(pod: dict[str, Any]) -> datetime.datetime:
    return rfc3339(pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"])


def attempt(pod: dict[str, Any]) -> int:
    return int(pod["metadata"]["annotations"]["pyncette.dev/attempt"])


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@pytest.fixture
def apiserver_proxy(kube_cluster: Any, tmp_path: Path) -> Iterator[tuple[Proxy, Path]]:
    """A Toxiproxy proxy in front of the apiserver and a kubeconfig that goes through it: cutting
    it cuts one operator's watches (a watch gap) without touching the apiserver everyone shares."""
    if not available():
        pytest.fail("Toxiproxy is not running: make services-up")
    config = json.loads(kube_cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = config["clusters"][0]["cluster"]["server"]
    proxy = create_proxy(server.replace("https://", "tcp://"), prefix="apiserver")
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "proxied-kubeconfig.json"
    path.write_text(json.dumps(config))
    try:
        yield proxy, path
    finally:
        proxy.delete()


def test_operator_down_for_ten_slots_gets_one_catch_up_run(k: Kubectl, start_operator: Any) -> None:
    k.apply(
        ptask(
            "catchup",
            schedule="* * * * * */2",
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="200ms"),
        )
    )
    op = start_operator("--namespace", k.namespace, name="catchup")
    wait_until(lambda: k.pods("catchup"), timeout=60, what="a first run")
    op.stop()
    assert op.proc.returncode == 0, op.log_text()[-2000:]
    stopped = now()
    # Eleven slots pass while no operator runs.
    wait_until(lambda: now() > stopped + datetime.timedelta(seconds=22), timeout=60, what="22 s of downtime")
    restarted = now()
    op = start_operator("--namespace", k.namespace, name="catchup")  # the same SQLite file

    def after(t: datetime.datetime) -> list[datetime.datetime]:
        return sorted(s for s in (scheduled(p) for p in k.pods("catchup")) if s > t)

    # The schedule goes on after the catch-up run: wait for a slot well after the restart.
    wait_until(
        lambda: any(s > restarted + datetime.timedelta(seconds=4) for s in after(restarted)),
        timeout=90,
        what="runs on the normal schedule after the restart",
    )
    runs = after(stopped)
    # No burst: the first run after the outage is the latest missed slot (the slots of the outage
    # before it never ran), and from there one run per slot.
    assert runs[0] >= restarted - datetime.timedelta(seconds=2), (stopped, restarted, runs)
    assert all(b - a == datetime.timedelta(seconds=2) for a, b in itertools.pairwise(runs)), runs
    assert op.metric("pyncette_operator_missed_schedules_total") >= 9
    missed = [e for e in k.events("catchup") if e["reason"] == "MissedSchedules"]
    assert missed and missed[0]["type"] == "Warning", k.events("catchup")


def test_always_failing_pods_get_backoff_limit_plus_one_then_the_schedule_moves_on(
    k: Kubectl, start_operator: Any
) -> None:
    start_operator("--namespace", k.namespace)
    k.apply(
        ptask(
            "fails",
            schedule="* * * * * */20",
            concurrencyPolicy="Forbid",
            backoffLimit=1,
            failedRunsHistoryLimit=20,
            podTemplate=pod_template(duration="200ms", outcome="Failed"),
        )
    )
    first = wait_until(lambda: k.pods("fails") and min(scheduled(p) for p in k.pods("fails")), timeout=60, what="a run")
    wait_until(
        lambda: any(scheduled(p) > first for p in k.pods("fails")),
        timeout=90,
        what="the next scheduled time running after the first gave up",
    )
    by_slot = collections.defaultdict(list)
    for pod in k.pods("fails"):
        by_slot[scheduled(pod)].append(attempt(pod))
    assert sorted(by_slot[first]) == [0, 1], dict(by_slot)  # backoffLimit 1: two Pods for the slot
    failed = [e for e in k.events("fails") if e["reason"] == "RunFailed"]
    assert any("after 2 attempt(s)" in e["message"] for e in failed), failed
    wait_until(lambda: (k.task("fails").get("status") or {}).get("lastFailureTime"), timeout=30, what="lastFailureTime")


def test_forbid_run_whose_pod_is_deleted_during_a_watch_gap_runs_again(
    k: Kubectl, start_operator: Any, apiserver_proxy: tuple[Proxy, Path]
) -> None:
    proxy, kubeconfig = apiserver_proxy
    # No periodic LIST during the test: only the re-list after the watch restart can notice.
    start_operator(
        "--namespace",
        k.namespace,
        env={"KUBECONFIG": str(kubeconfig), "PYNCETTE_SWEEP_INTERVAL": "3600"},
        name="gap",
    )
    k.apply(
        ptask(
            "gap",
            interval="3s",
            concurrencyPolicy="Forbid",
            backoffLimit=0,
            podTemplate=pod_template(duration="1h"),
        )
    )
    [pod] = wait_until(
        lambda: [p for p in k.pods("gap") if (p.get("status") or {}).get("phase") == "Running"],
        timeout=60,
        what="the first run's Pod running",
    )
    proxy.set_enabled(False)  # the operator's watches (and every other call) are cut
    try:
        k("delete", "pod", pod["metadata"]["name"], "--grace-period=0", "--force", "--wait=true")
    finally:
        proxy.set_enabled(True)
    later = wait_until(
        lambda: [p for p in k.pods("gap") if scheduled(p) > scheduled(pod)],
        timeout=90,
        what="a new run after the deleted Pod (the run stopped waiting for it)",
    )
    assert later


def test_sigterm_hands_running_pods_to_the_other_replica_at_once(
    k: Kubectl, start_operator: Any, redis_url: str
) -> None:
    url = f"{redis_url.split('?', 1)[0]}?namespace={k.namespace}"
    replicas = [start_operator("--namespace", k.namespace, backend=url, name=f"r{i}") for i in range(2)]
    k.apply(
        ptask(
            "handover",
            interval="2s",
            concurrencyPolicy="Forbid",
            leaseDuration="10m",  # without the release, the other replica would wait 10 minutes
            podTemplate=pod_template(duration="1h"),
        )
    )

    victim = wait_until(
        lambda: replica_with_run_in_flight(replicas), timeout=60, what="the replica waiting for the Pod"
    )
    [other] = [op for op in replicas if op is not victim]
    # A run counts as started just before its Pod is created: wait for the Pod itself.
    wait_until(lambda: len(k.pods("handover")) >= 1, timeout=30, what="the run's Pod")
    pods_before = {p["metadata"]["name"] for p in k.pods("handover")}
    started = time.monotonic()
    victim.stop()
    assert victim.proc.returncode == 0, victim.log_text()[-2000:]
    assert "Traceback" not in victim.log_text()
    assert "lost, not committing" not in victim.log_text()  # handed over on purpose, not lost
    wait_until(
        lambda: other.metric("pyncette_operator_pods_adopted_total") >= 1,
        timeout=60,
        what="the other replica adopting the running Pod",
    )
    took = time.monotonic() - started
    assert took < 60  # well inside leaseDuration (10 minutes): the lease was released, not left to expire
    assert {p["metadata"]["name"] for p in k.pods("handover")} == pods_before  # adopted, not duplicated
    assert other.alive()


def test_a_handler_run_handed_over_during_its_backoff_keeps_its_attempt_count(
    k: Kubectl, start_operator: Any, redis_url: str, tmp_path: Path
) -> None:
    """backoffLimit 2 is three attempts in all, even when the replica retrying the run is stopped
    during its backoff: the other replica reads the attempt from status.active and continues."""
    url = f"{redis_url.split('?', 1)[0]}?namespace={k.namespace}"
    flags = ("--namespace", k.namespace, "--handlers", "ptask_test_handlers", "--status-interval", "1")
    replicas = [start_operator(*flags, backend=url, name=f"r{i}") for i in range(2)]
    calls = tmp_path / "calls.jsonl"
    at = now() + datetime.timedelta(seconds=3)
    handler = {"name": "record-and-refuse", "args": {"path": str(calls)}}
    k.apply(ptask("retried", executeAt=at.strftime("%Y-%m-%dT%H:%M:%SZ"), backoffLimit=2, handler=handler))

    def active_attempts() -> list[Any]:
        return [run.get("attempt") for run in (k.task("retried").get("status") or {}).get("active") or []]

    wait_until(lambda: active_attempts() == [2], timeout=60, what="attempt 2 waiting out its 10 s backoff")
    victim = wait_until(lambda: replica_with_run_in_flight(replicas), timeout=10, what="the retrying replica")
    [other] = [op for op in replicas if op is not victim]
    victim.stop()
    assert victim.proc.returncode == 0, victim.log_text()[-2000:]
    assert len(calls.read_text().splitlines()) == 1
    wait_until(
        lambda: (k.task("retried").get("status") or {}).get("lastFailureTime"), timeout=120, what="the run given up"
    )
    assert "taken over at attempt 2" in other.log_text()
    assert len(calls.read_text().splitlines()) == 3, other.log_text()[-2000:]
    assert active_attempts() == []


def test_a_fatal_error_exits_non_zero_with_its_traceback(
    k: Kubectl, kube_cluster: Any, start_operator: Any, tmp_path: Path
) -> None:
    """Credentials revoked while running: kopf gives up (no valid credentials left), and the process
    must say so and exit 1 (so Kubernetes restarts it), not swallow it and exit 0."""
    k("create", "serviceaccount", "op")
    k("create", "role", "op", "--verb=get,list,watch,create,delete,patch", "--resource=pyncettetasks,pods,events")
    k("create", "role", "op-status", "--verb=patch", "--resource=pyncettetasks/status")
    k("create", "rolebinding", "op", "--role=op", f"--serviceaccount={k.namespace}:op")
    k("create", "rolebinding", "op-status", "--role=op-status", f"--serviceaccount={k.namespace}:op")
    kubeconfig = kube_cluster.token_kubeconfig(k.namespace, "op", tmp_path / "sa-kubeconfig.json")
    op = start_operator("--namespace", k.namespace, env={"KUBECONFIG": str(kubeconfig)}, name="fatal")
    k("delete", "serviceaccount", "op")  # its tokens stop authenticating
    wait_until(lambda: not op.alive(), timeout=120, what="the operator giving up")
    assert op.proc.returncode == 1, op.log_text()[-3000:]
    log = op.log_text()
    assert "The operator stops" in log and "Traceback" in log, log[-3000:]


def test_a_replica_started_while_the_apiserver_is_unreachable_waits_for_it(
    k: Kubectl, start_operator: Any, apiserver_proxy: tuple[Proxy, Path], tmp_path: Path
) -> None:
    """A replica (re)started during an apiserver restart does not exit: under the kubelet each such
    exit grows the crash back-off, and the replica stays down long after the apiserver is back."""
    proxy, kubeconfig = apiserver_proxy
    log = tmp_path / "patient-0.log"  # the start_operator fixture's log of the first "patient" replica
    waited: list[str] = []

    def heal_once_it_waits() -> None:
        wait_until(
            lambda: log.exists() and "Cannot list pyncettetasks yet" in log.read_text(errors="replace"),
            timeout=60,
            what="the replica waiting for the apiserver",
        )
        waited.append(log.read_text(errors="replace"))
        proxy.set_enabled(True)

    proxy.set_enabled(False)
    healer = threading.Thread(target=heal_once_it_waits, daemon=True)
    healer.start()
    try:
        op = start_operator("--namespace", k.namespace, env={"KUBECONFIG": str(kubeconfig)}, name="patient")
    finally:
        healer.join(timeout=90)
        proxy.set_enabled(True)
    assert waited, "the replica never said it was waiting for the apiserver"
    assert op.alive()
    k.apply(ptask("patient", interval="1s", podTemplate=pod_template()))
    wait_until(lambda: k.pods("patient"), timeout=60, what="a run Pod once the apiserver answers")
