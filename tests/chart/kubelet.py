"""Run the chart's operator container as a local process, the way a kubelet would start it.

The local control plane's node is simulated (kwok): the Deployment's Pods look Running but nothing
executes. To prove the chart really works, tests take the Deployment the chart installed and
start its container here: the image's ENTRYPOINT with the container's ``args`` and ``env``,
authenticated with a token of the chart's ServiceAccount (TokenRequest, as a projected token
would be) instead of admin credentials. What the kubelet resolves itself is resolved here the
same way: ``secretKeyRef`` (read with admin rights, as the kubelet reads Secrets, never by the
operator), ``fieldRef`` for the Pod's name and namespace, and each emptyDir mount becomes a
temporary directory. Ports are moved to free local ports so that several replicas fit on one host.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from testkit import WaitTimeout
from testkit import free_port
from testkit import wait_until

#: The image's ENTRYPOINT (the Dockerfile test checks that it is this).
ENTRYPOINT = "pyncette-operator"


@dataclass
class OperatorProcess:
    """One operator replica started from the Deployment's container spec."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log: Path
    health_url: str
    metrics_port: int | None
    kubeconfig: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:  # noqa: S310 - http://127.0.0.1 only
                return bool(response.status == 200)
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics_text(self) -> str:
        assert self.metrics_port is not None, "metrics are disabled in this release"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def wait_healthy(self, timeout: float = 60) -> None:
        def check() -> bool:
            if not self.alive():
                raise WaitTimeout(f"{self.name} exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            return self.healthy()

        wait_until(check, timeout=timeout, what=f"{self.name}'s health endpoint {self.health_url}")

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _secret_value(kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str, ref: dict[str, Any]) -> str:
    secret = json.loads(kubectl("get", "secret", ref["name"], "-n", namespace, "-o", "json").stdout)
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def start_from_deployment(
    deployment: dict[str, Any],
    *,
    kubeconfig: Path,
    admin_kubectl: Callable[..., subprocess.CompletedProcess[str]],
    workdir: Path,
    replica: int = 0,
    bin_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> OperatorProcess:
    """Starts replica ``replica`` of the Deployment's (only) container; does not wait for it."""
    namespace = deployment["metadata"]["namespace"]
    pod_spec = deployment["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    pod_name = f"{deployment['metadata']['name']}-local-{replica}"
    root = workdir / pod_name
    root.mkdir(parents=True, exist_ok=True)

    # emptyDir volumes become directories of this replica.
    empty_dirs = {v["name"] for v in pod_spec.get("volumes", []) if "emptyDir" in v}
    mounts = {
        m["mountPath"]: root / "volumes" / m["name"]
        for m in container.get("volumeMounts", [])
        if m["name"] in empty_dirs
    }
    for path in mounts.values():
        path.mkdir(parents=True, exist_ok=True)

    def local_path(value: str) -> str:
        for mount, local in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(local) + value[len(mount) :]
            # sqlite:////abs/path URLs name a mounted file too
            prefix = "sqlite:///"
            if value.startswith(prefix + mount.rstrip("/") + "/"):
                return prefix + str(local) + value[len(prefix) + len(mount) :]
        return value

    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = local_path(str(item["value"]))
        elif "secretKeyRef" in item.get("valueFrom", {}):
            env[item["name"]] = local_path(_secret_value(admin_kubectl, namespace, item["valueFrom"]["secretKeyRef"]))
        elif "fieldRef" in item.get("valueFrom", {}):
            field_path = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "metadata.namespace": namespace}[field_path]
        else:
            raise AssertionError(f"env {item['name']}: {item} is not resolved by this kubelet stand-in")

    health_port = free_port()
    metrics_port: int | None = None
    args: list[str] = []
    health_url = ""
    for arg in container.get("args", []):
        if arg.startswith("--liveness="):
            match = re.fullmatch(r"--liveness=http://[^:/]+:(\d+)(/.*)", arg)
            assert match, arg
            health_url = f"http://127.0.0.1:{health_port}{match.group(2)}"
            arg = f"--liveness={health_url}"
        elif arg.startswith("--metrics-port="):
            metrics_port = free_port()
            arg = f"--metrics-port={metrics_port}"
        args.append(arg)
    assert health_url, "the container has no --liveness endpoint for its probes"
    probe = container["livenessProbe"]["httpGet"]
    assert health_url.endswith(probe["path"]), (health_url, probe)

    binary = (bin_dir or Path(sys.executable).parent) / ENTRYPOINT
    full_env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("KUBERNETES_", "PYNCETTE_")) and key not in ("VIRTUAL_ENV",)
    }
    full_env.update(env)
    full_env.update(extra_env or {})
    full_env["KUBECONFIG"] = str(kubeconfig)
    log = root / "operator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary), *args], stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=root, start_new_session=True
        )
    return OperatorProcess(
        name=pod_name,
        argv=[str(binary), *args],
        proc=proc,
        log=log,
        health_url=health_url,
        metrics_port=metrics_port,
        kubeconfig=kubeconfig,
        env=env,
    )
