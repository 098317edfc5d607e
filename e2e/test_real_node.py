"""The operator as a user runs it: the image from `make image`, `helm install`ed, on the real node.

Needs `make node-up` (the node of hack/node with containerd, kubelet and kube-proxy); skipped
without it unless PYNCETTE_E2E_REAL_NODE=1 (CI), which makes a missing node a failure. Every
wait is on a condition with a bound; the scheduled slots are read back from the run Pods'
``pyncette.dev/scheduled-at`` annotations.
"""

from __future__ import annotations

import datetime
import itertools
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from realnode import ATTEMPT
from realnode import BUSYBOX
from realnode import REAL_NODE
from realnode import REDIS
from realnode import SCHEDULED_AT
from realnode import Release
from realnode import build_image
from realnode import condition
from realnode import image_values
from realnode import require_real_node
from realnode import slots
from realnode import succeeded
from realnode import wait_ready_replicas

from plugins.kube import KubeCluster
from testkit import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(900)]


def _namespace(cluster: KubeCluster, prefix: str) -> str:
    namespace = f"{prefix}-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
    return namespace


def _values(image: str, **extra: Any) -> dict[str, Any]:
    # The tasks of these tests live in the release's own throwaway namespace.
    return {**image_values(image), "watch": {"releaseNamespace": True}, "statusInterval": 1, **extra}


@pytest.fixture(scope="module")
def image(kube_cluster: KubeCluster) -> str:
    require_real_node(kube_cluster)
    return build_image()


@pytest.fixture(scope="module")
def sqlite_release(
    kube_cluster: KubeCluster, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """One replica on the embedded SQLite file, the chart's defaults otherwise."""
    release = Release(kube_cluster, _namespace(kube_cluster, "rn-sqlite"), "pyncette", tmp_path_factory.mktemp("rn"))
    try:
        release.helm("install", _values(image))
        # helm --wait accepts "minimum availability", which is 0 Pods with SQLite's maxUnavailable 1.
        wait_ready_replicas(release, 1)
        yield release
    finally:
        release.uninstall()
        kube_cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def _redis(release: Release) -> str:
    """A Redis (Debian's redis-server, built locally) in the namespace behind a Service: its URL."""
    manifests = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "redis"},
            "spec": {
                "selector": {"matchLabels": {"app": "redis"}},
                "template": {
                    "metadata": {"labels": {"app": "redis"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "redis",
                                "image": REDIS,
                                "ports": [{"containerPort": 6379}],
                                "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                            }
                        ]
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "redis"},
            "spec": {"selector": {"app": "redis"}, "ports": [{"port": 6379, "targetPort": 6379}]},
        },
    ]
    release.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}))
    release.kubectl("rollout", "status", "deployment/redis", "--timeout=180s")
    # No cluster DNS on the local node: the Service's ClusterIP (kube-proxy routes it).
    cluster_ip = release.get("service", "redis")["spec"]["clusterIP"]
    return f"redis://{cluster_ip}:6379/0"


@pytest.fixture(scope="module")
def redis_release(kube_cluster: KubeCluster, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """Two replicas sharing a Redis that runs in the cluster."""
    release = Release(kube_cluster, _namespace(kube_cluster, "rn-redis"), "pyncette", tmp_path_factory.mktemp("rn"))
    try:
        url = _redis(release)
        release.helm("install", _values(image, replicaCount=2, backend={"url": url}))
        wait_ready_replicas(release, 2)
        yield release
    finally:
        release.uninstall()
        kube_cluster.kubectl("delete", "namespace", release.namespace, "--wait=false", check=False)


def _echo_task(release: Release, name: str, every_seconds: int, text: str, **spec: Any) -> None:
    release.apply_task(
        name,
        {
            "schedule": f"* * * * * */{every_seconds}",
            "successfulRunsHistoryLimit": 100,
            "failedRunsHistoryLimit": 100,
            "podTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", f"echo {text}"]}],
                }
            },
            **spec,
        },
    )


def _parse(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _finished_slots(release: Release, task: str) -> list[datetime.datetime]:
    """The scheduled times whose Pod finished, checking each ran exactly once (one Pod, attempt 0)."""
    pods = release.run_pods(task)
    counts = slots(pods)
    assert all(n == 1 for n in counts.values()), f"a slot has more than one Pod: {counts}"
    for pod in pods:
        assert pod["metadata"]["annotations"].get(ATTEMPT, "0") == "0", pod["metadata"]["name"]
    finished = [p for p in pods if succeeded(p)]
    # A Pod just created may not be scheduled yet; every finished one ran on the real node.
    assert all(p["spec"].get("nodeName") == REAL_NODE for p in finished), [p["spec"].get("nodeName") for p in finished]
    return sorted(_parse(p["metadata"]["annotations"][SCHEDULED_AT]) for p in finished)


def _assert_every_slot_once(times: list[datetime.datetime], every_seconds: int) -> None:
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(g == every_seconds for g in gaps), f"slots missing or doubled: {[t.isoformat() for t in times]}"


def _slots_after(release: Release, task: str, moment: datetime.datetime, count: int, every: int) -> None:
    """Waits until ``count`` slots after ``moment`` finished; every slot since the first ran exactly once."""

    def done() -> bool:
        times = _finished_slots(release, task)
        if len([t for t in times if t > moment]) < count:
            return False
        # A slot between two finished ones may still be finishing: that is "not yet", not a gap.
        _assert_every_slot_once(times, every)
        return True

    wait_until(done, timeout=every * (count + 6) + 60, what=f"{count} finished runs of {task} after {moment}", period=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# ------------------------------------------------------------------------------------ one replica


def test_deployment_is_ready_through_its_probes_on_the_real_node(sqlite_release: Release, image: str) -> None:
    wait_until(
        lambda: sqlite_release.get("deployment", sqlite_release.deployment)["status"].get("readyReplicas") == 1,
        timeout=60,
        what="the Deployment's status.readyReplicas == 1",
        period=1,
    )
    (pod,) = sqlite_release.ready_operator_pods()
    assert pod["spec"]["nodeName"] == REAL_NODE
    (container,) = pod["spec"]["containers"]
    assert container["image"] == image
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status


def test_operator_uses_in_cluster_config_as_the_charts_service_account(sqlite_release: Release) -> None:
    (pod,) = sqlite_release.ready_operator_pods()
    service_account = pod["spec"]["serviceAccountName"]
    assert service_account == sqlite_release.deployment
    (container,) = pod["spec"]["containers"]
    assert "KUBECONFIG" not in {e["name"] for e in container.get("env", [])}
    # From inside the operator's container, with what Kubernetes mounts there: the API server
    # through the `kubernetes` Service, authenticated by the Pod's ServiceAccount token.
    probe = (
        "import json, os, ssl, urllib.request; d = '/var/run/secrets/kubernetes.io/serviceaccount/'; "
        "ctx = ssl.create_default_context(cafile=d + 'ca.crt'); "
        "url = 'https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews' % "
        "(os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT']); "
        "body = json.dumps({'apiVersion': 'authentication.k8s.io/v1', 'kind': 'SelfSubjectReview'}).encode(); "
        "req = urllib.request.Request(url, body, {'Content-Type': 'application/json', "
        "'Authorization': 'Bearer ' + open(d + 'token').read()}); "
        "print(json.load(urllib.request.urlopen(req, context=ctx))['status']['userInfo']['username'])"
    )
    out = sqlite_release.kubectl("exec", pod["metadata"]["name"], "--", "python", "-c", probe).stdout.strip()
    assert out == f"system:serviceaccount:{sqlite_release.namespace}:{service_account}"


def test_task_pods_run_a_real_container_and_kubectl_logs_shows_it(sqlite_release: Release) -> None:
    token = f"real-output-{secrets.token_hex(4)}"
    _echo_task(sqlite_release, "echo", 10, token)
    pod = wait_until(
        lambda: next((p for p in sqlite_release.run_pods("echo") if succeeded(p)), None),
        timeout=120,
        what="a Succeeded run Pod of task echo",
        period=1,
    )
    assert pod["spec"]["nodeName"] == REAL_NODE
    logs = sqlite_release.kubectl("logs", pod["metadata"]["name"]).stdout
    assert token in logs
    task = wait_until(
        lambda: (t := sqlite_release.task("echo"))["status"].get("lastSuccessfulTime") and t,
        timeout=60,
        what="status.lastSuccessfulTime of task echo",
        period=1,
    )
    ready = condition(task, "Ready")
    assert ready and ready["status"] == "True", task["status"]


def test_a_container_that_exits_non_zero_gives_last_failure_time_and_a_run_failed_event(
    sqlite_release: Release,
) -> None:
    sqlite_release.apply_task(
        "fails",
        {
            "schedule": "* * * * * */10",
            "backoffLimit": 0,
            "failedRunsHistoryLimit": 5,
            "podTemplate": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "echo broken; exit 3"]}],
                }
            },
        },
    )
    task = wait_until(
        lambda: (t := sqlite_release.task("fails")).get("status", {}).get("lastFailureTime") and t,
        timeout=120,
        what="status.lastFailureTime of task fails",
        period=1,
    )
    assert "lastSuccessfulTime" not in task["status"]
    events = wait_until(
        lambda: sqlite_release.get(
            "events", "--field-selector", "involvedObject.kind=PyncetteTask,involvedObject.name=fails,reason=RunFailed"
        )["items"],
        timeout=60,
        what="a RunFailed Event of task fails",
        period=1,
    )
    assert events[0]["type"] == "Warning"
    # The failure is the container's own: exit code 3 on the real node, its output in the logs.
    pod = next(p for p in sqlite_release.run_pods("fails") if (p.get("status") or {}).get("phase") == "Failed")
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3
    assert "broken" in sqlite_release.kubectl("logs", pod["metadata"]["name"]).stdout


def test_helm_test_passes(sqlite_release: Release) -> None:
    proc = sqlite_release.cluster.helm(
        "test", sqlite_release.name, "-n", sqlite_release.namespace, "--timeout=180s", "--logs", timeout=240
    )
    assert "Phase:          Succeeded" in proc.stdout or "Phase: Succeeded" in proc.stdout, proc.stdout
    assert "the operator is healthy" in proc.stdout, proc.stdout


def test_deleting_the_operator_pod_replaces_it_and_no_slot_runs_twice_or_is_lost(sqlite_release: Release) -> None:
    every = 30
    _echo_task(sqlite_release, "steady", every, "steady")
    _slots_after(sqlite_release, "steady", _now() - datetime.timedelta(seconds=every), 1, every)
    (old,) = sqlite_release.ready_operator_pods()
    killed_at = _now()
    sqlite_release.kubectl("delete", "pod", old["metadata"]["name"], "--wait=false")
    (new,) = wait_ready_replicas(sqlite_release, 1)
    assert new["metadata"]["name"] != old["metadata"]["name"]
    _slots_after(sqlite_release, "steady", killed_at, 2, every)


# ------------------------------------------------------------------------------- two replicas


def test_two_replicas_share_a_redis_in_the_cluster(redis_release: Release) -> None:
    pods = wait_ready_replicas(redis_release, 2)
    for pod in pods:
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0].get("env", [])}
        assert env["PYNCETTE_BACKEND_URL"].startswith("redis://")
    _echo_task(redis_release, "shared", 5, "shared")
    _slots_after(redis_release, "shared", _now(), 4, 5)


def test_killing_a_replica_and_a_helm_upgrade_rollout_lose_and_double_nothing(redis_release: Release) -> None:
    every = 5
    _echo_task(redis_release, "rolled", every, "rolled")
    _slots_after(redis_release, "rolled", _now(), 1, every)

    victim = redis_release.ready_operator_pods()[0]["metadata"]["name"]
    killed_at = _now()
    redis_release.kubectl("delete", "pod", victim, "--wait=false")
    pods = wait_ready_replicas(redis_release, 2)
    assert victim not in {p["metadata"]["name"] for p in pods}
    _slots_after(redis_release, "rolled", killed_at, 3, every)

    # A change to the Pod template: a rolling update, each old Pod stopped with SIGTERM.
    before = {p["metadata"]["name"] for p in redis_release.ready_operator_pods()}
    upgraded_at = _now()
    redis_release.helm("upgrade", {"podAnnotations": {"rollout": secrets.token_hex(3)}}, "--reuse-values")
    after = {p["metadata"]["name"] for p in wait_ready_replicas(redis_release, 2)}
    assert not before & after, "helm upgrade did not replace the operator Pods"
    _slots_after(redis_release, "rolled", upgraded_at, 4, every)
