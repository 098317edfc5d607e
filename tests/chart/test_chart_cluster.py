"""The chart on a real apiserver: server-side dry run, install/upgrade/uninstall, RBAC as granted,
and the operator itself running under the chart's ServiceAccount token.

The local control plane's node is simulated, so the operator runs as a local process started
from the installed Deployment's container spec (tests/chart/kubelet.py). It authenticates with a
token of the chart's ServiceAccount, never admin credentials: a task that runs proves the RBAC is
enough; a 403 in its log, or a Secret it can read, would prove it is not least privilege.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chart.chartkit import CHART_DIR
from chart.chartkit import NAMESPACED_NEEDS
from chart.chartkit import RELEASE
from chart.chartkit import Chart
from chart.chartkit import Obj
from chart.kubelet import OperatorProcess
from chart.kubelet import start_from_deployment
from chart.kubelet import wait_until
from plugins.kube import ON_KWOK
from plugins.kube import SIM_DURATION
from plugins.kube import on_kwok

pytestmark = pytest.mark.cluster

#: Quicker loops than production defaults, set through the chart's own extraEnv.
FAST_ENV = [
    {"name": "PYNCETTE_POLL_INTERVAL", "value": "0.5"},
    {"name": "PYNCETTE_SWEEP_INTERVAL", "value": "5"},
    {"name": "PYNCETTE_EVENTS_QPS", "value": "50"},
]


@dataclass
class Release:
    name: str
    namespace: str
    install_output: str
    cluster: Any

    @property
    def fullname(self) -> str:
        return f"{self.name}-pyncette-operator"

    def deployment(self) -> Obj:
        result: Obj = self.cluster.get_json("deployment", self.fullname, "-n", self.namespace)
        return result

    def can(self, verb: str, resource: str, namespace: str | None, *extra: str) -> bool:
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        sa = f"system:serviceaccount:{self.namespace}:{self.fullname}"
        proc = self.cluster.kubectl("auth", "can-i", verb, resource, *where, "--as", sa, *extra, check=False)
        answer = proc.stdout.strip()
        assert answer in ("yes", "no"), proc.stdout + proc.stderr
        return answer == "yes"


@pytest.fixture
def make_namespace(kube_cluster: Any) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        kube_cluster.kubectl("create", "namespace", name)
        kube_cluster.kubectl("wait", "--for=create", "serviceaccount/default", "-n", name, "--timeout=60s")
        made.append(name)
        return name

    yield make
    for name in made:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def install(kube_cluster: Any, tmp_path: Path) -> Iterator[Callable[..., Release]]:
    releases: list[Release] = []

    def do_install(namespace: str, values: Obj, *, name: str | None = None) -> Release:
        name = name or f"r{secrets.token_hex(2)}"
        if "watch" not in values:
            # Most tests put their tasks beside the release, in a throwaway namespace: asked for.
            values = {**values, "watch": {"releaseNamespace": True}}
        values_file = tmp_path / f"{name}-values.json"
        # The operator runs here as a local process (chart.kubelet); its Pods stay on kwok's node.
        values_file.write_text(json.dumps({**ON_KWOK, **values}))
        proc = kube_cluster.helm(
            "install", name, str(CHART_DIR), "--namespace", namespace, "-f", str(values_file), "--wait=false"
        )
        release = Release(name=name, namespace=namespace, install_output=proc.stdout, cluster=kube_cluster)
        releases.append(release)
        return release

    yield do_install
    for release in releases:
        kube_cluster.helm("uninstall", release.name, "--namespace", release.namespace, "--wait=false", check=False)


@pytest.fixture
def operators(kube_cluster: Any, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    """Starts the release's operator container locally under its ServiceAccount token."""
    started: list[OperatorProcess] = []

    def start(release: Release, *, bin_dir: Path | None = None) -> OperatorProcess:
        kubeconfig = kube_cluster.token_kubeconfig(
            release.namespace, release.fullname, tmp_path / f"{release.name}-{len(started)}.kubeconfig"
        )
        op = start_from_deployment(
            release.deployment(),
            kubeconfig=kubeconfig,
            admin_kubectl=kube_cluster.kubectl,
            workdir=tmp_path,
            replica=len(started),
            bin_dir=bin_dir,
        )
        started.append(op)
        op.wait_healthy()
        return op

    yield start
    for op in started:
        op.stop()


def ptask(name: str, *, interval: str = "2s") -> Obj:
    return {
        "apiVersion": "pyncette.dev/v1",
        "kind": "PyncetteTask",
        "metadata": {"name": name},
        "spec": {
            "interval": interval,
            "podTemplate": {
                "metadata": {"annotations": {SIM_DURATION: "1s"}},
                "spec": on_kwok({"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}),
            },
        },
    }


def _condition(task: Obj, type_: str) -> Obj | None:
    for condition in (task.get("status") or {}).get("conditions") or []:
        if condition.get("type") == type_:
            return dict(condition)
    return None


def assert_task_runs(cluster: Any, namespace: str, name: str, op: OperatorProcess, *, timeout: float = 90) -> Obj:
    """Waits until the task is Ready, has a Pod run owned by it and a success (with the log if not)."""
    try:
        return _wait_task_runs(cluster, namespace, name, timeout=timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- {op.name} log:\n{op.log_text()[-6000:]}") from None


def _wait_task_runs(cluster: Any, namespace: str, name: str, *, timeout: float) -> Obj:

    def ready() -> Obj | None:
        task: Obj = cluster.get_json("pyncettetask", name, "-n", namespace)
        condition = _condition(task, "Ready")
        return task if condition and condition["status"] == "True" else None

    task = wait_until(ready, timeout=timeout, what=f"{namespace}/{name} Ready=True")
    pods = wait_until(
        lambda: cluster.get_json("pods", "-n", namespace, "-l", f"pyncette.dev/task={name}")["items"],
        timeout=timeout,
        what=f"a Pod run of {namespace}/{name}",
    )
    owners = pods[0]["metadata"].get("ownerReferences") or []
    assert [(o["kind"], o["name"], o["uid"]) for o in owners] == [("PyncetteTask", name, task["metadata"]["uid"])]

    def succeeded() -> Obj | None:
        current: Obj = cluster.get_json("pyncettetask", name, "-n", namespace)
        return current if (current.get("status") or {}).get("lastSuccessfulTime") else None

    return wait_until(succeeded, timeout=timeout, what=f"{namespace}/{name} status.lastSuccessfulTime")


def assert_no_permission_errors(op: OperatorProcess) -> None:
    log = op.log_text()
    # "Forbidden" is in every 403 the apiserver returns (kopf's and ours); a bare "403" could be a timestamp.
    for word in ("Forbidden", "forbidden"):
        assert word not in log, f"{op.name} hit a permission error:\n{log[-4000:]}"


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "values",
    [
        {"watch": {"releaseNamespace": True}},
        {"watch": {"allNamespaces": True}},
        {
            "replicaCount": 3,
            "backend": {"existingSecret": {"name": "pyncette-db"}},
            "watch": {"releaseNamespace": True},
        },
    ],
    ids=["namespaced", "cluster-wide", "secret-backend"],
)
def test_rendered_chart_passes_server_side_dry_run(
    chart: Chart, kube_cluster: Any, kube_namespace: str, values: Obj
) -> None:
    manifest = chart.render_text(values, "--include-crds", "--namespace", kube_namespace)
    proc = kube_cluster.kubectl(
        "apply", "--dry-run=server", "-n", kube_namespace, "-f", "-", input=manifest, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"deployment.apps/{RELEASE}-pyncette-operator created (server dry run)" in proc.stdout


def test_install_upgrade_uninstall_and_the_granted_rbac(
    kube_cluster: Any, kube_namespace: str, make_namespace: Callable[[str], str], install: Callable[..., Release]
) -> None:
    other = make_namespace("other")
    values = {"replicaCount": 2, "backend": {"url": "redis://:hunter2@redis.invalid:6379/0"}}
    release = install(kube_namespace, values)
    notes = release.install_output
    assert f"is installed in namespace {kube_namespace}" in notes
    assert "redis://***@redis.invalid:6379/0" in notes and "hunter2" not in notes
    kube_cluster.kubectl(
        "rollout", "status", f"deployment/{release.fullname}", "-n", kube_namespace, "--timeout=120s", timeout=150
    )

    # Everything the operator needs, in its namespace ...
    for group, resource, verb in sorted(NAMESPACED_NEEDS):
        base, _, sub = resource.partition("/")
        qualified = f"{base}.{group}" if group else base
        extra = ("--subresource", sub) if sub else ()
        assert release.can(verb, qualified, kube_namespace, *extra), (verb, resource)
    # ... and nothing more: no Secrets, no other kinds, nothing in other namespaces or cluster-wide.
    denied_here = [
        ("get", "secrets"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("get", "configmaps"),
        ("create", "pyncettetasks.pyncette.dev"),
        ("delete", "pyncettetasks.pyncette.dev"),
        ("patch", "pyncettetasks.pyncette.dev"),
        ("update", "pods"),
        ("create", "deployments.apps"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("create", "serviceaccounts"),
    ]
    for verb, resource in denied_here:
        assert not release.can(verb, resource, kube_namespace), (verb, resource)
    assert not release.can("create", "pods", kube_namespace, "--subresource", "exec")
    for verb, resource in [("create", "pods"), ("list", "pods"), ("list", "pyncettetasks.pyncette.dev")]:
        assert not release.can(verb, resource, other), (verb, resource, other)
    for verb, resource in [("list", "pyncettetasks.pyncette.dev"), ("list", "namespaces"), ("list", "secrets")]:
        assert not release.can(verb, resource, None), (verb, resource, "cluster-wide")

    # Upgrade as docs/helm.md says, then uninstall: the release's objects go, the CRD stays.
    kube_cluster.helm(
        "upgrade", release.name, str(CHART_DIR), "-n", kube_namespace, "--reuse-values", "--set", "replicaCount=3"
    )
    assert release.deployment()["spec"]["replicas"] == 3
    kube_cluster.helm("uninstall", release.name, "-n", kube_namespace)
    left = kube_cluster.kubectl(
        "get", "deployment,serviceaccount,role,rolebinding,service,poddisruptionbudget",
        "-n", kube_namespace, "-l", f"app.kubernetes.io/instance={release.name}", "-o", "name",
    ).stdout.strip()  # fmt: skip
    assert left == ""
    kube_cluster.kubectl("get", "crd", "pyncettetasks.pyncette.dev")


def test_operator_under_the_chart_service_account_runs_tasks_and_nothing_more(
    kube_cluster: Any,
    kube_namespace: str,
    make_namespace: Callable[[str], str],
    install: Callable[..., Release],
    operators: Callable[..., OperatorProcess],
) -> None:
    other = make_namespace("unwatched")
    kube_cluster.kubectl(
        "create", "secret", "generic", "not-for-the-operator", "-n", kube_namespace, "--from-literal=k=v"
    )
    release = install(kube_namespace, {"statusInterval": 1, "extraEnv": FAST_ENV})
    op = operators(release)

    kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(ptask("tick")))
    kube_cluster.kubectl("apply", "-n", other, "-f", "-", input=json.dumps(ptask("elsewhere")))
    assert_task_runs(kube_cluster, kube_namespace, "tick", op)
    # The unwatched namespace's task is not the operator's business: no status, no runs.
    elsewhere = kube_cluster.get_json("pyncettetask", "elsewhere", "-n", other)
    assert not elsewhere.get("status")
    assert not kube_cluster.get_json("pods", "-n", other)["items"]
    assert op.alive()
    assert_no_permission_errors(op)

    # The same credentials, used directly, are refused everything beyond the operator's job.
    def as_operator(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = kube_cluster.kubectl(
            *args, input=input, kubeconfig=op.kubeconfig, check=False
        )
        return result

    for args in (
        ("get", "secrets", "-n", kube_namespace),
        ("get", "secret", "not-for-the-operator", "-n", kube_namespace),
        ("get", "pods", "-n", other),
        ("get", "pyncettetasks", "-n", other),
        ("get", "pyncettetasks", "--all-namespaces"),
        ("get", "namespaces"),
    ):
        proc = as_operator(*args)
        assert proc.returncode != 0 and "Forbidden" in proc.stderr, (args, proc.stdout, proc.stderr)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    proc = as_operator("create", "-n", other, "-f", "-", input=json.dumps(pod))
    assert proc.returncode != 0 and "Forbidden" in proc.stderr, proc.stderr


def test_cluster_wide_release_grants_the_same_everywhere_and_nothing_more(
    kube_cluster: Any, kube_namespace: str, make_namespace: Callable[[str], str], install: Callable[..., Release]
) -> None:
    second = make_namespace("team")
    release = install(kube_namespace, {"watch": {"allNamespaces": True}})
    for group, resource, verb in sorted(NAMESPACED_NEEDS):
        base, _, sub = resource.partition("/")
        qualified = f"{base}.{group}" if group else base
        extra = ("--subresource", sub) if sub else ()
        for namespace in (kube_namespace, second, None):
            assert release.can(verb, qualified, namespace, *extra), (verb, resource, namespace)
    for verb, resource in [("get", "secrets"), ("list", "secrets"), ("list", "namespaces"), ("list", "nodes")]:
        for namespace in (second, None):
            assert not release.can(verb, resource, namespace), (verb, resource, namespace)


def _foreign_tasks(cluster: Any, own: set[str]) -> int:
    """PyncetteTasks in active namespaces other than ``own`` (a cluster-wide operator would take them on)."""
    active = {
        ns["metadata"]["name"]
        for ns in cluster.get_json("namespaces")["items"]
        if ns.get("status", {}).get("phase") == "Active"
    }
    tasks = cluster.get_json("pyncettetasks", "--all-namespaces")["items"]
    return sum(1 for t in tasks if t["metadata"]["namespace"] in active - own)


@pytest.mark.exclusive  # its operator would take on the tasks of tests running beside it
def test_cluster_wide_operator_runs_tasks_in_every_namespace(
    kube_cluster: Any,
    kube_namespace: str,
    make_namespace: Callable[[str], str],
    install: Callable[..., Release],
    operators: Callable[..., OperatorProcess],
) -> None:
    second = make_namespace("team")
    foreign = _foreign_tasks(kube_cluster, {kube_namespace, second})
    if foreign > 20:
        # A shared development cluster (benchmarks, other engineers' tests): a cluster-wide
        # operator would take their tasks over. CI's cluster is this suite's alone.
        pytest.skip(f"{foreign} PyncetteTasks of others in this cluster; not starting a cluster-wide operator")
    release = install(kube_namespace, {"watch": {"allNamespaces": True}, "statusInterval": 1, "extraEnv": FAST_ENV})
    op = operators(release)
    for namespace in (kube_namespace, second):
        kube_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(ptask("everywhere")))
    assert_task_runs(kube_cluster, second, "everywhere", op)

    # The release namespace is watched (cluster-wide RBAC) but not served: it holds the operator's
    # credentials. Its task says so, and never gets a Pod.
    def ready_here() -> Obj | None:
        status = kube_cluster.get_json("pyncettetask", "everywhere", "-n", kube_namespace).get("status") or {}
        return next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), None)

    ready = wait_until(ready_here, what="Ready on the release namespace's task")
    assert (ready["status"], ready["reason"]) == ("False", "NamespaceNotServed"), ready
    assert not kube_cluster.get_json("pods", "-n", kube_namespace, "-l", "pyncette.dev/task=everywhere")["items"]
    assert_no_permission_errors(op)
    proc = kube_cluster.kubectl("get", "secrets", "-A", kubeconfig=op.kubeconfig, check=False)
    assert proc.returncode != 0 and "Forbidden" in proc.stderr


@pytest.mark.slow
def test_the_image_entrypoint_runs_the_chart_deployment(
    kube_cluster: Any,
    kube_namespace: str,
    install: Callable[..., Release],
    operators: Callable[..., OperatorProcess],
    image_venv: Any,
) -> None:
    """The virtualenv built by the Dockerfile's own steps runs the Deployment's container as is."""
    release = install(kube_namespace, {"statusInterval": 1, "extraEnv": FAST_ENV})
    op = operators(release, bin_dir=image_venv.venv / "bin")
    assert op.argv[0] == str(image_venv.venv / "bin" / "pyncette-operator")
    kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(ptask("from-image")))
    assert_task_runs(kube_cluster, kube_namespace, "from-image", op)
    assert_no_permission_errors(op)
    assert "pyncette_operator" in op.metrics_text()


@pytest.mark.services
def test_replicas_share_a_backend_given_as_a_secret(
    kube_cluster: Any,
    kube_namespace: str,
    install: Callable[..., Release],
    operators: Callable[..., OperatorProcess],
    postgres_url: str,
) -> None:
    """docs/helm.md's several-replicas install: the URL in a Secret, two replicas, no slot run twice."""
    # A table of its own, so that operators of other tests sharing this database never see our runs.
    url = f"{postgres_url}?table=chart_{secrets.token_hex(4)}"
    kube_cluster.kubectl(
        "create", "secret", "generic", "pyncette-backend", "-n", kube_namespace, f"--from-literal=url={url}"
    )
    values = {
        "replicaCount": 2,
        "backend": {"existingSecret": {"name": "pyncette-backend"}},
        "statusInterval": 1,
        "extraEnv": FAST_ENV,
    }
    release = install(kube_namespace, values)
    replicas = [operators(release), operators(release)]
    assert all(op.env["PYNCETTE_BACKEND_URL"] == url for op in replicas)
    assert all("PYNCETTE_DATA_DIR" not in op.env for op in replicas)

    kube_cluster.kubectl("apply", "-n", kube_namespace, "-f", "-", input=json.dumps(ptask("shared", interval="1s")))
    assert_task_runs(kube_cluster, kube_namespace, "shared", replicas[0])

    def succeeded_slots() -> list[str] | None:
        pods = kube_cluster.get_json("pods", "-n", kube_namespace, "-l", "pyncette.dev/task=shared")["items"]
        slots = [
            (p["metadata"].get("annotations") or {}).get("pyncette.dev/scheduled-at", "")
            for p in pods
            if p.get("status", {}).get("phase") == "Succeeded"
        ]
        return slots if len(slots) >= 3 else None

    slots = wait_until(succeeded_slots, timeout=90, what="three successful runs of shared")
    assert len(set(slots)) == len(slots), f"a scheduled time ran twice: {sorted(slots)}"
    for op in replicas:
        assert op.alive()
        assert_no_permission_errors(op)
