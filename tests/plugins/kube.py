"""Pytest plugin: a real Kubernetes control plane for the tests.

Loaded from tests/conftest.py with ``pytest_plugins = ["plugins.kube", ...]``.

Fixtures:

* ``kube_cluster`` (session): a :class:`KubeCluster`. With ``KUBECONFIG`` set (to anything
  but ``.cluster/kubeconfig``), that cluster is used as it is (kubectl and helm from
  ``.cluster/bin`` if present, else from ``PATH``). Otherwise ``hack/cluster/up.sh``
  (idempotent; builds the binaries on first use) starts the local control plane and
  ``.cluster/kubeconfig`` is used. ``KUBECONFIG`` is exported for the session. A cluster that
  cannot come up fails the tests that need it, with the log tail. The local cluster keeps
  running after the session (``make cluster-down`` stops it).
* ``kube_namespace`` (function): a fresh namespace ``<test name>-<random>``, whose ``default``
  ServiceAccount exists; deleted afterwards without waiting.

When the selected tests need ``kube_cluster`` and no ``KUBECONFIG`` is set, up.sh runs once
before the first test, so that a cold build (tens of minutes) does not count against any
test's timeout. ``PYNCETTE_CLUSTER_UP_TIMEOUT`` bounds it (seconds, default 3600).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / ".cluster"
UP_SCRIPT = REPO_ROOT / "hack" / "cluster" / "up.sh"
LOCAL_KUBECONFIG = CLUSTER_DIR / "kubeconfig"
LOCAL_BIN_DIR = CLUSTER_DIR / "bin"
LOG_DIR = CLUSTER_DIR / "logs"

UP_TIMEOUT = float(os.environ.get("PYNCETTE_CLUSTER_UP_TIMEOUT", "3600"))
#: Default bound on one kubectl/helm call; commands that wait pass their own --timeout too.
COMMAND_TIMEOUT = 300.0

NODE_NAME = "kwok-node-0"
#: Pod annotations understood by the fake node (hack/cluster/kwok/stages.yaml).
SIM_DURATION = "sim.pyncette.dev/duration"
SIM_OUTCOME = "sim.pyncette.dev/outcome"
#: The taint kwok's node carries while the real node (hack/node/up.sh) is up, keeping ordinary
#: Pods off it.
SIM_TAINT_KEY = "pyncette.dev/simulated"
#: Pod spec fields that put a Pod on kwok's node whether the real node is up or not.
ON_KWOK: dict[str, Any] = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": SIM_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
}


def on_kwok(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """``pod_spec`` with :data:`ON_KWOK` added: its Pods are simulated by kwok, never run."""
    return {**pod_spec, **json.loads(json.dumps(ON_KWOK))}


class CommandError(subprocess.CalledProcessError):
    """A failed kubectl/helm call; its message carries the command's output."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd)
        return f"`{cmd}` exited with {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


@dataclass(frozen=True)
class KubeCluster:
    """A cluster the tests can use, and the clients to reach it."""

    kubeconfig: Path
    #: Where kubectl and helm are (.cluster/bin for the local cluster).
    bin_dir: Path
    #: True when this session started (or reused) the local control plane of hack/cluster.
    local: bool = False

    def _run(
        self,
        tool: str,
        args: tuple[str, ...],
        *,
        input: str | None,
        check: bool,
        kubeconfig: Path | None,
        timeout: float | None,
    ) -> subprocess.CompletedProcess[str]:
        binary = self.bin_dir / tool
        if not binary.exists():
            found = shutil.which(tool)
            if found is None:
                pytest.fail(f"{tool} is neither in {self.bin_dir} nor on PATH", pytrace=False)
            binary = Path(found)
        cmd = [str(binary), "--kubeconfig", str(kubeconfig or self.kubeconfig), *args]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig or self.kubeconfig)}
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if check and proc.returncode != 0:
            raise CommandError(proc.returncode, cmd, proc.stdout, proc.stderr)
        return proc

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float | None = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster (or against ``kubeconfig``); output is text."""
        return self._run("kubectl", args, input=input, check=check, kubeconfig=kubeconfig, timeout=timeout)

    def helm(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
        timeout: float | None = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run helm against this cluster (or against ``kubeconfig``); output is text."""
        return self._run("helm", args, input=input, check=check, kubeconfig=kubeconfig, timeout=timeout)

    def get_json(self, *args: str, kubeconfig: Path | None = None) -> Any:
        """``kubectl get ARGS -o json``, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json", kubeconfig=kubeconfig).stdout)

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path, *, duration: str = "1h") -> Path:
        """Write a kubeconfig at ``path`` that authenticates as a ServiceAccount.

        The token comes from the TokenRequest API (``kubectl create token``); server and CA
        are this cluster's.
        """
        token = self.kubectl(
            "create", "token", service_account, "--namespace", namespace, "--duration", duration
        ).stdout.strip()
        admin = json.loads(self.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
        cluster = admin["clusters"][0]["cluster"]
        user = f"system:serviceaccount:{namespace}:{service_account}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": user, "namespace": namespace}}],
            "current-context": "sa",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path


# ----------------------------------------------------------------------------- bringing it up


@dataclass
class _UpResult:
    ok: bool
    output: str


_up_result: _UpResult | None = None


def _log_tails(lines: int = 25) -> str:
    if not LOG_DIR.is_dir():
        return ""
    parts = []
    for log in sorted(LOG_DIR.glob("*.log"), key=lambda p: p.stat().st_mtime, reverse=True)[:4]:
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


def _run_up() -> _UpResult:
    """Run hack/cluster/up.sh once per session; remember how it went."""
    global _up_result
    if _up_result is None:
        try:
            proc = subprocess.run(
                ["bash", str(UP_SCRIPT)],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=UP_TIMEOUT,
                check=False,
            )
            output = proc.stdout + proc.stderr
            ok = proc.returncode == 0 and LOCAL_KUBECONFIG.is_file()
            if not ok:
                output = f"{UP_SCRIPT} exited with {proc.returncode}\n{output[-6000:]}\n{_log_tails()}"
        except subprocess.TimeoutExpired as exc:
            ok, output = False, f"{UP_SCRIPT} timed out after {UP_TIMEOUT:.0f}s\n{exc.stderr!s:.6000}\n{_log_tails()}"
        _up_result = _UpResult(ok, output)
    return _up_result


def _tool_dir(tool: str) -> Path:
    if (LOCAL_BIN_DIR / tool).exists():
        return LOCAL_BIN_DIR
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"KUBECONFIG is set but {tool} is neither in {LOCAL_BIN_DIR} nor on PATH", pytrace=False)
    return Path(found).parent


def _external_kubeconfig() -> Path | None:
    """The kubeconfig KUBECONFIG names, unless it is unset or the local cluster's own."""
    value = os.environ.get("KUBECONFIG")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0]).expanduser()
    if path.resolve() == LOCAL_KUBECONFIG.resolve():
        return None
    return path


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the local cluster before the first test if any selected test needs it."""
    if _external_kubeconfig() is not None or session.config.option.collectonly:
        return
    if any("kube_cluster" in getattr(item, "fixturenames", ()) for item in session.items):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"starting the local Kubernetes control plane ({UP_SCRIPT.relative_to(REPO_ROOT)}; "
                f"the first run builds it, logs in {LOG_DIR.relative_to(REPO_ROOT)}/)"
            )
        _run_up()


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    saved = os.environ.get("KUBECONFIG")
    kubeconfig = _external_kubeconfig()
    if kubeconfig is not None:
        # helm, if it is not beside kubectl, is looked up on PATH when first used.
        cluster = KubeCluster(kubeconfig=kubeconfig, bin_dir=_tool_dir("kubectl"), local=False)
    else:
        result = _run_up()
        if not result.ok:
            pytest.fail(f"the local Kubernetes control plane did not come up:\n{result.output}", pytrace=False)
        cluster = KubeCluster(kubeconfig=LOCAL_KUBECONFIG, bin_dir=LOCAL_BIN_DIR, local=True)
    probe = cluster.kubectl("version", "-o", "json", check=False, timeout=60)
    if probe.returncode != 0:
        pytest.fail(
            f"cannot reach the cluster of {cluster.kubeconfig}:\n{probe.stdout}{probe.stderr}\n{_log_tails()}",
            pytrace=False,
        )
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = saved


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:48].strip("-") or "test"
    name = f"{base}-{secrets.token_hex(3)}"
    kube_cluster.kubectl("create", "namespace", name)
    kube_cluster.kubectl("label", "namespace", name, "pyncette.dev/test=true")
    # Pods are refused until the namespace's default ServiceAccount exists.
    kube_cluster.kubectl(
        "wait", "--for=create", "serviceaccount/default", "--namespace", name, "--timeout=60s", timeout=90
    )
    try:
        yield name
    finally:
        kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
