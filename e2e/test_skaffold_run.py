"""`skaffold run` with this repository's skaffold.yaml, for real: podman build, local registry, the chart.

skaffold is built from its Go module (hack/cluster/modules/skaffold, `make skaffold`, cached).
Profile local-node builds through hack/images/image.sh --skaffold, pushes to 127.0.0.1:5000 and
deploys the chart with `wait`; `skaffold delete` removes the release again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from realnode import REAL_NODE
from realnode import require_real_node

from plugins.kube import LOCAL_BIN_DIR
from plugins.kube import REPO_ROOT
from plugins.kube import KubeCluster
from testkit import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(1800)]

NAMESPACE = "pyncette-system"
RELEASE = "pyncette-operator"
FLAGS = ["-p", "local-node", "--default-repo=127.0.0.1:5000", "--update-check=false", "--interactive=false"]


@pytest.fixture(scope="module")
def skaffold() -> Path:
    proc = subprocess.run(
        ["make", "-s", "skaffold"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600, check=False
    )
    assert proc.returncode == 0, f"make skaffold failed:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def skaffold_env(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[dict[str, str]]:
    require_real_node(kube_cluster)
    env = {
        **os.environ,
        "KUBECONFIG": str(kube_cluster.kubeconfig),
        "PATH": f"{kube_cluster.bin_dir}{os.pathsep}{LOCAL_BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}",
        # skaffold's own global config and cache stay out of the user's home; the image cache
        # of hack/images stays where it is.
        "HOME": str(tmp_path),
        "PYNCETTE_CACHE_DIR": os.environ.get("PYNCETTE_CACHE_DIR", str(Path.home() / ".cache" / "pyncette")),
    }
    yield env
    kube_cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", check=False)


def _skaffold(binary: Path, verb: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), verb, *FLAGS], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500, check=False
    )


def test_skaffold_run_builds_pushes_and_deploys_then_delete_removes_it(
    kube_cluster: KubeCluster, skaffold: Path, skaffold_env: dict[str, str]
) -> None:
    run = _skaffold(skaffold, "run", skaffold_env)
    assert run.returncode == 0, f"skaffold run failed:\n{run.stdout[-4000:]}{run.stderr[-4000:]}"

    deployment = kube_cluster.get_json("deployment", RELEASE, "-n", NAMESPACE)
    assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"] == 1
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # Tagged by skaffold (inputDigest) in the local registry, pinned by the digest it pushed.
    assert container["image"].startswith("127.0.0.1:5000/pyncette-operator:"), container["image"]
    assert "@sha256:" in container["image"], container["image"]
    pods = kube_cluster.get_json("pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert pods and all(p["spec"]["nodeName"] == REAL_NODE for p in pods)

    delete = _skaffold(skaffold, "delete", skaffold_env)
    assert delete.returncode == 0, f"skaffold delete failed:\n{delete.stdout[-3000:]}{delete.stderr[-3000:]}"
    releases = kube_cluster.helm("list", "-n", NAMESPACE, "-q").stdout.split()
    assert RELEASE not in releases
    wait_until(
        lambda: kube_cluster.kubectl("get", "deployment", RELEASE, "-n", NAMESPACE, check=False).returncode != 0,
        timeout=120,
        what=f"deployment {RELEASE} gone after skaffold delete",
    )
