"""Helpers of the real-node end-to-end tests: the operator image, Helm releases, run Pods.

The image is the one `make image` builds (``PYNCETTE_E2E_IMAGE`` names it, else the tests run
hack/images/image.sh themselves: cached layers make that a few seconds). A release counts as up
only once its Deployment has rolled out, Ready through its own probes on the real node. That wait is
`kubectl rollout status`, not `helm --wait`: Helm 3's waiter gives up at the first failed API call
while it polls (helm/helm#9502), which a busy 2-core CI machine turned into a failed upgrade once;
the rollout watch retries such errors, as a user's pipeline would.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plugins.kube import REPO_ROOT
from plugins.kube import KubeCluster
from testkit import wait_until

#: The node of `make node-up` (hack/node/lib.sh).
REAL_NODE = "pyncette-node"
#: The images the node serves as docker.io mirrors (hack/node/images.sh).
BUSYBOX = "busybox:1.36"
REDIS = "redis:7"
TASK_LABEL = "pyncette.dev/task"
SCHEDULED_AT = "pyncette.dev/scheduled-at"
ATTEMPT = "pyncette.dev/attempt"
#: Bound on one rollout after `helm install/upgrade` (image pull, start-up and the readiness probe).
ROLLOUT_WAIT = "300s"


def real_node_ready(cluster: KubeCluster) -> bool:
    proc = cluster.kubectl(
        "get", "node", REAL_NODE, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
    )
    return proc.returncode == 0 and proc.stdout.strip() == "True"


def require_real_node(cluster: KubeCluster) -> None:
    """Skip without the real node, unless PYNCETTE_E2E_REAL_NODE=1 (CI) makes that a failure."""
    if real_node_ready(cluster):
        return
    message = f"node {REAL_NODE} is not Ready: run `make node-up` first"
    if os.environ.get("PYNCETTE_E2E_REAL_NODE") == "1":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def build_image() -> str:
    """The operator image reference: PYNCETTE_E2E_IMAGE, or the last line of hack/images/image.sh."""
    image = os.environ.get("PYNCETTE_E2E_IMAGE")
    if image:
        return image
    proc = subprocess.run(
        ["bash", "hack/images/image.sh"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"make image failed:\n{proc.stderr[-4000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def image_values(image: str) -> dict[str, Any]:
    repository, _, tag = image.rpartition(":")
    return {"image": {"repository": repository, "tag": tag}}


@dataclass
class Release:
    """One Helm release of the chart in its own namespace."""

    cluster: KubeCluster
    namespace: str
    name: str
    workdir: Path

    @property
    def deployment(self) -> str:
        return f"{self.name}-pyncette-operator"

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def helm(self, verb: str, values: dict[str, Any], *extra: str) -> subprocess.CompletedProcess[str]:
        """``helm install`` or ``helm upgrade`` with ``values``, then waits for the Deployment's rollout."""
        values_file = self.workdir / f"{self.name}-{verb}-{os.urandom(3).hex()}.json"
        values_file.write_text(json.dumps(values))
        chart = str(REPO_ROOT / "charts" / "pyncette-operator")
        proc = self.cluster.helm(
            verb, self.name, chart, "-n", self.namespace, "-f", str(values_file), *extra, timeout=120
        )  # fmt: skip
        self.cluster.kubectl(
            "-n", self.namespace, "rollout", "status", f"deployment/{self.deployment}", f"--timeout={ROLLOUT_WAIT}",
            timeout=360,
        )  # fmt: skip
        return proc

    def operator_pods(self) -> list[dict[str, Any]]:
        pods = self.get("pods", "-l", f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=operator")
        return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]

    def ready_operator_pods(self) -> list[dict[str, Any]]:
        def ready(pod: dict[str, Any]) -> bool:
            conditions = (pod.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

        return [p for p in self.operator_pods() if ready(p)]

    def operator_logs(self) -> str:
        return self.kubectl(
            "logs", f"deployment/{self.deployment}", "--all-containers", "--tail=80", check=False
        ).stdout

    def apply_task(self, name: str, spec: dict[str, Any]) -> None:
        task = {"apiVersion": "pyncette.dev/v1", "kind": "PyncetteTask", "metadata": {"name": name}, "spec": spec}
        self.kubectl("apply", "-f", "-", input=json.dumps(task))

    def task(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get("pyncettetask", name)
        return result

    def run_pods(self, task: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-l", f"{TASK_LABEL}={task}")["items"]
        return items

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait=false", check=False)


def condition(task: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (task.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def succeeded(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Succeeded"


def slots(pods: list[dict[str, Any]]) -> Counter[str]:
    """How many Pods each scheduled time got (a run retried after a failure would add attempts)."""
    return Counter(p["metadata"]["annotations"][SCHEDULED_AT] for p in pods)


def wait_deployment_rolled_out(release: Release, timeout: float = 300) -> None:
    release.kubectl("rollout", "status", f"deployment/{release.deployment}", f"--timeout={int(timeout)}s")


def wait_ready_replicas(release: Release, count: int, timeout: float = 300) -> list[dict[str, Any]]:
    return wait_until(
        lambda: (pods := release.ready_operator_pods()) and len(pods) == count and pods,
        timeout=timeout,
        what=f"{count} Ready operator Pod(s) of {release.deployment}",
        period=1,
    )
