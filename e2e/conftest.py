"""End-to-end fixtures: a cluster, the chart installed in it, and the operator running.

Needs only a cluster: ``KUBECONFIG`` if set, else the local control plane that
``plugins.kube`` brings up (``make cluster-up``). Settings come from environment variables, listed
in docs/helm.md ("End-to-end tests"):

``PYNCETTE_E2E_RELEASE``        ``namespace/release`` of an installed chart to use as is
``PYNCETTE_E2E_BACKEND_URL``    backend URL for a release this suite installs (default: embedded SQLite)
``PYNCETTE_E2E_REPLICAS``       operator replicas for that release (default 1)
``PYNCETTE_E2E_IMAGE``          ``repository:tag`` of the operator image for that release (default on
                                the local cluster's real node: the image of ``make image``)
``PYNCETTE_E2E_LOCAL_OPERATOR`` ``1``/``0``: run the operator as local processes under the chart's
                                ServiceAccount token; default: only when the cluster's nodes are
                                kwok's simulated ones (where no container ever runs)
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from e2ekit import E2E
from e2ekit import EXAMPLES
from e2ekit import chart_values
from e2ekit import fake_nodes
from realnode import build_image
from realnode import real_node_ready

from chart.chartkit import CHART_DIR
from chart.kubelet import start_from_deployment

pytest_plugins = ["plugins.kube"]


@pytest.fixture(scope="session")
def e2e(kube_cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    workdir = tmp_path_factory.mktemp("e2e")
    existing = os.environ.get("PYNCETTE_E2E_RELEASE")
    local_flag = os.environ.get("PYNCETTE_E2E_LOCAL_OPERATOR")
    local = local_flag == "1" if local_flag in ("0", "1") else fake_nodes(kube_cluster)
    if not local and not os.environ.get("PYNCETTE_E2E_IMAGE") and real_node_ready(kube_cluster):
        # The local cluster's real node runs the image `make image` builds (cached: seconds).
        os.environ["PYNCETTE_E2E_IMAGE"] = build_image()
    # Handler modules shipped with the examples are loadable only by local processes.
    handler_modules = sorted(p.stem for p in EXAMPLES.glob("*handlers*.py")) if local else []

    if existing:
        namespace, _, release = existing.partition("/")
        env = E2E(kube_cluster, namespace, release, installed_here=False)
    else:
        namespace = f"e2e-{secrets.token_hex(3)}"
        release = "pyncette"
        kube_cluster.kubectl("create", "namespace", namespace)
        kube_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", namespace, "--timeout=60s")
        values_file = workdir / "values.json"
        values_file.write_text(json.dumps(chart_values(handler_modules)))
        wait = [] if local else ["--wait", "--timeout=5m"]
        kube_cluster.helm(
            "install", release, str(CHART_DIR), "-n", namespace, "-f", str(values_file), *wait, timeout=330
        )
        env = E2E(kube_cluster, namespace, release, installed_here=True)
    try:
        if local:
            deployment = env.get("deployment", f"{release}-pyncette-operator")
            service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
            extra_env = {"PYTHONPATH": str(EXAMPLES)} if handler_modules else {}
            for replica in range(max(1, int(deployment["spec"].get("replicas") or 1))):
                kubeconfig = kube_cluster.token_kubeconfig(
                    namespace, service_account, workdir / f"sa-{replica}.kubeconfig"
                )
                env.operators.append(
                    start_from_deployment(
                        deployment,
                        kubeconfig=kubeconfig,
                        admin_kubectl=kube_cluster.kubectl,
                        workdir=workdir,
                        replica=replica,
                        extra_env=extra_env,
                    )
                )
            for op in env.operators:
                op.wait_healthy()
        yield env
    finally:
        for op in env.operators:
            op.stop()
        if env.installed_here:
            kube_cluster.helm("uninstall", release, "-n", namespace, "--wait=false", check=False)
            kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
