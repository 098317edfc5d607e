"""The local control plane (hack/cluster) behaves like a real cluster where the operator needs it.

Runs against any cluster KUBECONFIG names, too; the Pod lifecycle tests need kwok's fake node
``kwok-node-0`` with the stages of hack/cluster/kwok/stages.yaml.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from plugins.kube import NODE_NAME
from plugins.kube import REPO_ROOT
from plugins.kube import SIM_DURATION
from plugins.kube import SIM_OUTCOME
from plugins.kube import KubeCluster
from plugins.kube import on_kwok

pytestmark = pytest.mark.cluster

WAIT = "--timeout=60s"


def _apply(cluster: KubeCluster, *objects: dict[str, Any], namespace: str | None = None) -> None:
    args = ["apply", "-f", "-"] + (["--namespace", namespace] if namespace else [])
    cluster.kubectl(*args, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))


def _pod(
    name: str,
    annotations: dict[str, str] | None = None,
    restart_policy: str | None = "Never",
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = on_kwok({"containers": [{"name": "main", "image": "example.invalid/sim:1"}]})
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    metadata: dict[str, Any] = {"name": name, "annotations": annotations or {}}
    if owner is not None:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def _wait_phase(cluster: KubeCluster, namespace: str, pod: str, phase: str) -> None:
    cluster.kubectl("wait", f"pod/{pod}", "-n", namespace, f"--for=jsonpath={{.status.phase}}={phase}", WAIT)


def test_server_version(kube_cluster: KubeCluster) -> None:
    info = json.loads(kube_cluster.kubectl("version", "-o", "json").stdout)
    server = info["serverVersion"]
    assert re.fullmatch(r"v1\.\d+\.\d+", server["gitVersion"]), server
    assert server["major"] == "1"
    assert server["minor"] == server["gitVersion"].split(".")[1]
    if kube_cluster.local:
        gomod = (REPO_ROOT / "hack/cluster/modules/kubernetes/go.mod").read_text()
        pinned = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", gomod, re.MULTILINE)
        assert pinned is not None
        assert server["gitVersion"] == pinned.group(1)
        assert info["clientVersion"]["gitVersion"] == pinned.group(1)


def test_crd_structural_schema_and_cel_rule(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    group = f"t{secrets.token_hex(4)}.test.pyncette.dev"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"ranges.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "ranges", "singular": "range", "kind": "Range", "listKind": "RangeList"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["min", "max"],
                                    "properties": {
                                        "min": {"type": "integer"},
                                        "max": {"type": "integer"},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": "self.min <= self.max", "message": "min must not exceed max"}
                                    ],
                                },
                                "status": {"type": "object", "properties": {"seen": {"type": "integer"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    kube_cluster.kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        kube_cluster.kubectl("wait", f"crd/ranges.{group}", "--for=condition=Established", WAIT)

        def ranged(name: str, lo: Any, hi: Any) -> str:
            return json.dumps(
                {
                    "apiVersion": f"{group}/v1",
                    "kind": "Range",
                    "metadata": {"name": name},
                    "spec": {"min": lo, "max": hi},
                }
            )

        kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=ranged("ok", 1, 2))

        rejected = kube_cluster.kubectl(
            "apply", "-n", kube_namespace, "-f", "-", input=ranged("bad", 3, 2), check=False
        )
        assert rejected.returncode != 0
        assert "min must not exceed max" in rejected.stderr
        assert "Invalid" in rejected.stderr

        mistyped = kube_cluster.kubectl(
            "apply", "-n", kube_namespace, "-f", "-", input=ranged("typed", "one", 2), check=False
        )
        assert mistyped.returncode != 0
        assert "spec.min" in mistyped.stderr

        # The status subresource: spec writes ignore status, status writes go through /status.
        kube_cluster.kubectl(
            "patch", f"ranges.{group}/ok", "-n", kube_namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"seen": 7}}),
        )  # fmt: skip
        stored = kube_cluster.get_json(f"ranges.{group}/ok", "-n", kube_namespace)
        assert stored["status"] == {"seen": 7}
        assert stored["metadata"]["generation"] == 1
    finally:
        kube_cluster.kubectl("delete", f"crd/ranges.{group}", "--wait=false", "--ignore-not-found", check=False)


def test_pods_succeed_fail_or_keep_running(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ns = kube_namespace
    _apply(
        kube_cluster,
        _pod("quick"),  # no annotations: Succeeded after 1s
        _pod("ok", {SIM_DURATION: "2s"}),
        _pod("fails", {SIM_DURATION: "1s", SIM_OUTCOME: "Failed"}),
        _pod("long", {SIM_DURATION: "10m"}),
        _pod("server", restart_policy=None),  # restartPolicy Always, unannotated: a server
        namespace=ns,
    )
    for name in ("long", "server"):
        _wait_phase(kube_cluster, ns, name, "Running")
    # The finite Pods may be past Running before anyone looks (1-2 s on a loaded machine), so
    # wait for their end. kwok's ending stages only match a Running Pod: ending at all shows it ran.
    _wait_phase(kube_cluster, ns, "quick", "Succeeded")
    _wait_phase(kube_cluster, ns, "ok", "Succeeded")
    _wait_phase(kube_cluster, ns, "fails", "Failed")

    pods = {p["metadata"]["name"]: p for p in kube_cluster.get_json("pods", "-n", ns)["items"]}
    assert {p["spec"]["nodeName"] for p in pods.values()} == {NODE_NAME}
    assert all(p["status"].get("startTime") for p in pods.values()), pods

    ok = pods["ok"]["status"]
    assert ok["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    assert ok["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
    failed = pods["fails"]["status"]
    assert failed["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 1
    # Both finished; the long-running Pod and the server still run.
    assert pods["long"]["status"]["phase"] == "Running"
    assert pods["server"]["status"]["phase"] == "Running"
    assert pods["long"]["status"]["podIP"]

    # Deleting a running Pod completes without a kubelet.
    kube_cluster.kubectl("delete", "pod", "long", "-n", ns, "--wait=true", WAIT)


def test_job_owned_pod_completes_the_job(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {SIM_DURATION: "1s"}},
                "spec": on_kwok(
                    {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example.invalid/job:1"}]}
                ),
            },
        },
    }
    _apply(kube_cluster, job, namespace=kube_namespace)
    kube_cluster.kubectl("wait", "job/once", "-n", kube_namespace, "--for=condition=Complete", WAIT)


def test_garbage_collector_deletes_dependents(kube_cluster: KubeCluster, kube_namespace: str) -> None:
    ns = kube_namespace
    _apply(kube_cluster, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}}, namespace=ns)
    owner = kube_cluster.get_json("configmap/owner", "-n", ns)
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    _apply(kube_cluster, _pod("dependent", {SIM_DURATION: "10m"}, owner=ref), namespace=ns)
    _wait_phase(kube_cluster, ns, "dependent", "Running")
    kube_cluster.kubectl("delete", "configmap/owner", "-n", ns)
    kube_cluster.kubectl("wait", "pod/dependent", "-n", ns, "--for=delete", WAIT)


def test_service_account_without_create_permission_gets_403(
    kube_cluster: KubeCluster, kube_namespace: str, tmp_path: Path
) -> None:
    ns = kube_namespace
    _apply(
        kube_cluster,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "get-pods"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader-get-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "get-pods"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}],
        },
        _pod("existing", {SIM_DURATION: "10m"}),
        namespace=ns,
    )
    reader = kube_cluster.token_kubeconfig(ns, "reader", tmp_path / "reader.kubeconfig")

    # The token authenticates and the Role's one permission works ...
    got = kube_cluster.kubectl("get", "pod", "existing", "-n", ns, "-o", "name", kubeconfig=reader)
    assert got.stdout.strip() == "pod/existing"
    # ... and everything else is forbidden by RBAC: 403, not 401.
    created = kube_cluster.kubectl(
        "create", "-n", ns, "-f", "-", "-v=6", input=json.dumps(_pod("intruder")), kubeconfig=reader, check=False
    )
    assert created.returncode != 0
    assert "403 Forbidden" in created.stderr
    assert f'User "system:serviceaccount:{ns}:reader" cannot create resource "pods"' in created.stderr
    listed = kube_cluster.kubectl("get", "pods", "-n", ns, kubeconfig=reader, check=False)
    assert listed.returncode != 0
    assert "(Forbidden)" in listed.stderr
