"""The real node: Pods run real containers (busybox built from Debian's package), ``kubectl logs`` and
``exec`` reach the kubelet, Services route through kube-proxy, Pods reach the API server through the
``kubernetes`` Service with their ServiceAccount token, kwok's node keeps the simulated Pods, and
``node-down`` leaves nothing of the node behind.

Everything here happens on the local control plane with the node of hack/node/up.sh (``make test-node``).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import pytest
from node_helpers import NODE_NAME
from node_helpers import bring_up
from node_helpers import daemons_holding_script_locks
from node_helpers import leftovers
from node_helpers import run_script

from plugins.kube import NODE_NAME as KWOK_NODE
from plugins.kube import SIM_DURATION
from plugins.kube import KubeCluster
from plugins.kube import on_kwok

pytestmark = [pytest.mark.cluster, pytest.mark.node]

WAIT = "--timeout=120s"


def apply(cluster: KubeCluster, namespace: str, *objects: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=body)


def pod(name: str, *command: str, restart: str = "Never", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": list(command)}],
            **spec,
        },
    }


def wait_phase(cluster: KubeCluster, namespace: str, name: str, phase: str) -> dict[str, Any]:
    proc = cluster.kubectl(
        "wait", f"pod/{name}", "-n", namespace, f"--for=jsonpath={{.status.phase}}={phase}", WAIT, check=False
    )
    got = cluster.get_json(f"pod/{name}", "-n", namespace)
    assert proc.returncode == 0, (
        f"pod {name} not {phase}: {json.dumps(got.get('status'), indent=1)}\n"
        + cluster.kubectl("get", "events", "-n", namespace, check=False).stdout
    )
    return dict(got)


def test_a_pod_runs_a_real_container_and_kubectl_logs_shows_it(
    kube_cluster: KubeCluster, kube_namespace: str, real_node: str
) -> None:
    ns = kube_namespace
    # Output only a real process can produce: arithmetic, its own hostname and cgroup.
    script = 'echo "sum=$((40 + 2))"; echo "host=$(hostname)"; grep -q kubepods /proc/self/cgroup && echo cgroup=pod'
    apply(kube_cluster, ns, pod("hello", "sh", "-c", script), pod("fails", "sh", "-c", "echo bye; exit 3"))
    done = wait_phase(kube_cluster, ns, "hello", "Succeeded")
    # An ordinary Pod (no toleration, no selector) lands on the real node, not on kwok's.
    assert done["spec"]["nodeName"] == real_node
    assert re.fullmatch(r"10\.245\.0\.\d+", done["status"]["podIP"]), done["status"]
    logs = kube_cluster.kubectl("logs", "hello", "-n", ns).stdout.split()
    assert logs == ["sum=42", "host=hello", "cgroup=pod"]

    failed = wait_phase(kube_cluster, ns, "fails", "Failed")
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 3
    assert kube_cluster.kubectl("logs", "fails", "-n", ns).stdout == "bye\n"


def test_kubectl_exec_runs_in_the_container(kube_cluster: KubeCluster, kube_namespace: str, real_node: str) -> None:
    ns = kube_namespace
    apply(kube_cluster, ns, pod("shell", "sleep", "3600", restart="Always"))
    wait_phase(kube_cluster, ns, "shell", "Running")
    marker = secrets.token_hex(6)
    kube_cluster.kubectl("exec", "shell", "-n", ns, "--", "sh", "-c", f"echo {marker} > /tmp/marker")
    out = kube_cluster.kubectl("exec", "shell", "-n", ns, "--", "sh", "-c", "cat /tmp/marker; hostname")
    assert out.stdout.split() == [marker, "shell"]
    # stdin passes through, the exit code comes back.
    piped = kube_cluster.kubectl("exec", "-i", "shell", "-n", ns, "--", "wc", "-c", input="12345")
    assert piped.stdout.strip() == "5"
    status = kube_cluster.kubectl("exec", "shell", "-n", ns, "--", "sh", "-c", "exit 7", check=False)
    assert status.returncode != 0
    assert "exit code 7" in status.stderr


def test_a_service_routes_to_its_pods(kube_cluster: KubeCluster, kube_namespace: str, real_node: str) -> None:
    ns = kube_namespace
    content = f"served-by-{secrets.token_hex(4)}"
    server = pod(
        "web",
        "sh",
        "-c",
        f"mkdir -p /www && echo {content} > /www/index.html && exec httpd -f -p 8080 -h /www",
        restart="Always",
    )
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    apply(kube_cluster, ns, service, server, pod("client", "sleep", "3600", restart="Always"))
    wait_phase(kube_cluster, ns, "web", "Running")
    wait_phase(kube_cluster, ns, "client", "Running")
    ip = kube_cluster.get_json("service/web", "-n", ns)["spec"]["clusterIP"]
    # From another Pod, through the Service's virtual IP (kube-proxy's rules), retried until the
    # endpoint is programmed (a Service without one rejects at once). (Debian's busybox wget
    # crashes with -T, hence timeout.)
    fetch = f"for i in $(seq 1 60); do timeout 5 wget -q -O - http://{ip}/ && exit 0; sleep 1; done; exit 1"
    out = kube_cluster.kubectl("exec", "client", "-n", ns, "--", "sh", "-c", fetch)
    assert out.stdout.strip() == content
    # And the Pod's own Service, from inside itself (hairpin).
    out = kube_cluster.kubectl("exec", "web", "-n", ns, "--", "timeout", "5", "wget", "-q", "-O", "-", f"http://{ip}/")
    assert out.stdout.strip() == content


def test_a_pod_reaches_the_api_server_with_its_service_account(
    kube_cluster: KubeCluster, kube_namespace: str, real_node: str
) -> None:
    ns = kube_namespace
    rbac = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "lister"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "list-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "lister-list-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "list-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "lister", "namespace": ns}],
        },
    ]
    # What in-cluster config does: KUBERNETES_SERVICE_HOST/PORT, the projected token and namespace.
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    script = (
        f'echo "host=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT"; '
        f'wget -q -O - --no-check-certificate --header "Authorization: Bearer $(cat {sa}/token)" '
        f'"https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat {sa}/namespace)/pods"'
    )
    apply(
        kube_cluster,
        ns,
        *rbac,
        pod("allowed", "sh", "-c", script, serviceAccountName="lister"),
        pod("denied", "sh", "-c", script),
    )
    wait_phase(kube_cluster, ns, "allowed", "Succeeded")
    out = kube_cluster.kubectl("logs", "allowed", "-n", ns).stdout
    first, _, body = out.partition("\n")
    service_ip = kube_cluster.get_json("service/kubernetes", "-n", "default")["spec"]["clusterIP"]
    assert first == f"host={service_ip}:443"
    listed = json.loads(body)
    assert listed["kind"] == "PodList"
    assert {"allowed", "denied"} <= {p["metadata"]["name"] for p in listed["items"]}
    # The namespace's default ServiceAccount may not list Pods: the API server said so (403).
    wait_phase(kube_cluster, ns, "denied", "Failed")
    # (busybox wget reports the HTTP status on stderr, which is in the container's log too.)
    assert "403 Forbidden" in kube_cluster.kubectl("logs", "denied", "-n", ns).stdout


def test_simulated_pods_still_land_on_kwok(kube_cluster: KubeCluster, kube_namespace: str, real_node: str) -> None:
    ns = kube_namespace
    sim = pod("sim", "does-not-exist")
    sim["metadata"]["annotations"] = {SIM_DURATION: "1s"}
    sim["spec"] = on_kwok({**sim["spec"], "containers": [{"name": "main", "image": "example.invalid/sim:1"}]})
    apply(kube_cluster, ns, sim)
    done = wait_phase(kube_cluster, ns, "sim", "Succeeded")
    assert done["spec"]["nodeName"] == KWOK_NODE
    taints = kube_cluster.get_json(f"node/{KWOK_NODE}")["spec"].get("taints") or []
    assert [(t["key"], t["effect"]) for t in taints] == [("pyncette.dev/simulated", "NoSchedule")]


def test_no_daemon_holds_a_lock_of_the_scripts(real_node: str) -> None:
    """The daemons the scripts started (the node's, the registry the node's images need, the control
    plane's, the database servers) hold none of the scripts' lock files open: a lock held by a daemon
    made the next ``make node-up`` wait forever (CI's test-node did, once the registry had been
    started from inside node-up)."""
    # The registry started from inside node-up's lock, as on a fresh machine.
    down = run_script("hack/images/registry.sh", "down", timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    up = run_script("hack/node/up.sh", timeout=120)
    assert up.returncode == 0, up.stdout + up.stderr
    holders = daemons_holding_script_locks()
    assert holders == [], holders
    again = run_script("hack/node/up.sh", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr


# Last in this file: it takes the node down (and brings it back for whatever runs next).
def test_node_down_leaves_nothing_behind(kube_cluster: KubeCluster, kube_namespace: str, real_node: str) -> None:
    ns = kube_namespace
    apply(
        kube_cluster,
        ns,
        pod("lingering", "sleep", "3600", restart="Always"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "lingering"},
            "spec": {"selector": {"app": "lingering"}, "ports": [{"port": 80}]},
        },
    )
    wait_phase(kube_cluster, ns, "lingering", "Running")
    assert leftovers(), "the node should have processes, mounts and chains while it is up"
    try:
        down = run_script("hack/node/down.sh", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        assert leftovers() == {}
        # The API server forgot the node, and kwok's node takes ordinary Pods again.
        nodes = kube_cluster.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert nodes == [f"node/{KWOK_NODE}"]
        assert not kube_cluster.get_json(f"node/{KWOK_NODE}")["spec"].get("taints")
        # Idempotent: a second run finds nothing to do and fails nothing.
        again = run_script("hack/node/down.sh", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        bring_up()
    assert kube_cluster.get_json(f"node/{NODE_NAME}")["metadata"]["name"] == NODE_NAME
