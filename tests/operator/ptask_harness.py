"""Harness for the operator's integration tests on the local control plane (fixtures re-exported
by this folder's conftest.py; helpers imported by the tests from here, a name no other folder uses).

The operator runs as a user would run it: a subprocess of the ``pyncette-operator`` console script
with flags, talking to the cluster through a kubeconfig. Resources are applied with kubectl.
Waiting is always "poll a condition until a deadline", never a fixed sleep.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import pytest

from plugins.kube import SIM_DURATION
from plugins.kube import SIM_OUTCOME
from plugins.kube import on_kwok
from testkit import free_port
from testkit import wait_until

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "pyncettetask.yaml"
OPERATOR_BIN = Path(sys.executable).parent / "pyncette-operator"


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    health_port: int
    args: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        """Prometheus samples summed by metric name (labels dropped) plus ``name{labels}`` entries."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
            name = key.split("{", 1)[0]
            if "{" in key:
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def metric(self, name: str) -> float:
        return self.metrics().get(name, 0.0)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def has_run_in_flight(self) -> bool:
        """A run started and not finished: its lease is held, its Pod may be running."""
        m = self.metrics()
        return m.get("pyncette_operator_runs_started_total", 0) > m.get("pyncette_operator_runs_finished_total", 0)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def crd_installed(kube_cluster: Any) -> None:
    kube_cluster.kubectl("apply", "-f", str(CRD))
    kube_cluster.kubectl("wait", "--for", "condition=established", "--timeout=60s", "crd/pyncettetasks.pyncette.dev")


@pytest.fixture
def start_operator(kube_cluster: Any, crd_installed: None, tmp_path: Path) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(
        *args: str, backend: str | None = None, env: dict[str, str] | None = None, name: str = "op"
    ) -> OperatorProcess:
        metrics_port, health_port = free_port(), free_port()
        log = tmp_path / f"{name}-{len(started)}.log"
        cmd = [
            str(OPERATOR_BIN),
            "run",
            "--backend",
            backend or f"sqlite:///{tmp_path / (name + '.db')}",
            "--metrics-port",
            str(metrics_port),
            "--liveness",
            f"http://127.0.0.1:{health_port}/healthz",
            *args,
        ]
        full_env = {
            **os.environ,
            "KUBECONFIG": str(kube_cluster.kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
            "PYNCETTE_SWEEP_INTERVAL": "5",
            "PYNCETTE_POLL_INTERVAL": "0.5",
            "PYNCETTE_EVENTS_QPS": "50",
            "POD_NAME": f"{name}-{len(started)}",
            **(env or {}),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=tmp_path)
        op = OperatorProcess(proc, log, metrics_port, health_port, cmd)
        started.append(op)
        wait_until(
            lambda: op.healthy() or (not op.alive() and pytest.fail(f"operator exited:\n{op.log_text()[-3000:]}")),
            timeout=60,
            what="the operator's liveness endpoint",
        )
        return op

    yield start
    for op in started:
        op.stop()


class Kubectl:
    """kubectl as a user types it, scoped to one namespace."""

    def __init__(self, cluster: Any, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.cluster.kubectl(
            "-n", self.namespace, *args, input=input, check=check
        )
        return result

    def apply(self, manifest: dict[str, Any], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self("apply", "-f", "-", input=json.dumps(manifest), check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self("get", *args, "-o", "json").stdout)

    def task(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.get("pyncettetask", name)
        return result

    def pods(self, task: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("pods", "-l", f"pyncette.dev/task={task}")["items"]
        return items

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.get("events", "--field-selector", f"involvedObject.name={name}")["items"]
        return [e for e in items if e.get("involvedObject", {}).get("kind") == "PyncetteTask"]

    def condition(self, name: str, type_: str) -> dict[str, Any] | None:
        for c in (self.task(name).get("status") or {}).get("conditions") or []:
            if c.get("type") == type_:
                return dict(c)
        return None


@pytest.fixture
def k(kube_cluster: Any, kube_namespace: str) -> Kubectl:
    return Kubectl(kube_cluster, kube_namespace)


def ptask(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "pyncette.dev/v1", "kind": "PyncetteTask", "metadata": {"name": name}, "spec": spec}


def pod_template(
    *, duration: str = "1s", outcome: str = "Succeeded", service_account: str | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "metadata": {"annotations": {SIM_DURATION: duration, SIM_OUTCOME: outcome}},
        "spec": on_kwok(spec),
    }


def replica_with_run_in_flight(replicas: list[OperatorProcess]) -> OperatorProcess | None:
    """The first replica with a run in flight, if any (for ``wait_until``)."""
    return next((op for op in replicas if op.has_run_in_flight()), None)


def rfc3339(value: str) -> datetime.datetime:
    """An RFC 3339 time as the operator writes it (``...Z``) to an aware datetime."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
