"""Render the Helm chart and look at what comes out.

``Chart.render(values)`` runs ``helm template`` with a values file and returns the objects;
``Chart.render_error(values)`` expects helm to refuse the values and returns its message. Values
are passed as a file, not ``--set``, so that nested values and lists mean exactly what they say.

The chart refuses to install without being told which namespaces to serve; values that say
nothing about ``watch`` get ``watch.namespaces: [team-a]`` (``TENANTS``) unless the Chart is made
with ``tenants=None`` (to test exactly that refusal).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "pyncette-operator"
RELEASE = "pt"
NAMESPACE = "pyncette-system"

Obj = dict[str, Any]
TENANTS = ("team-a",)


def find_helm() -> Path | None:
    """helm from the local control plane (.cluster/bin, then the build cache), else PATH."""
    candidates = [REPO / ".cluster" / "bin" / "helm"]
    cache = Path(os.environ.get("PYNCETTE_CACHE_DIR") or Path.home() / ".cache" / "pyncette") / "cluster"
    candidates += sorted(cache.glob("helm-v*/helm"), reverse=True)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which("helm")
    return Path(found) if found else None


@dataclass(frozen=True)
class Chart:
    helm: Path
    path: Path = CHART_DIR
    tenants: tuple[str, ...] | None = TENANTS

    def _template(
        self, values: Obj | None, extra: Iterable[str], *, tests: bool = False
    ) -> subprocess.CompletedProcess[str]:
        if self.tenants and "watch" not in (values or {}) and not any("watch." in arg for arg in extra):
            values = {**(values or {}), "watch": {"namespaces": list(self.tenants)}}
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump(values or {}, f)  # JSON is YAML
            values_file = f.name
        try:
            # The release's own objects; the `helm test` hook only for render_tests().
            skip = [] if tests else ["--skip-tests"]
            cmd = [str(self.helm), "template", RELEASE, str(self.path), "--namespace", NAMESPACE, "-f", values_file]
            cmd += skip
            return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120, check=False)
        finally:
            os.unlink(values_file)

    def render(self, values: Obj | None = None, *extra: str) -> list[Obj]:
        proc = self._template(values, extra)
        assert proc.returncode == 0, f"helm template failed for {values}:\n{proc.stderr}"
        return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]

    def render_tests(self, values: Obj | None = None) -> list[Obj]:
        """The objects of the `helm test` hook (annotated helm.sh/hook: test)."""
        proc = self._template(values, (), tests=True)
        assert proc.returncode == 0, f"helm template failed for {values}:\n{proc.stderr}"
        docs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
        return [d for d in docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]

    def render_text(self, values: Obj | None = None, *extra: str) -> str:
        proc = self._template(values, extra)
        assert proc.returncode == 0, f"helm template failed for {values}:\n{proc.stderr}"
        return proc.stdout

    def render_error(self, values: Obj | None = None, *extra: str) -> str:
        proc = self._template(values, extra)
        assert proc.returncode != 0, f"helm accepted values it should refuse: {values}"
        return proc.stderr

    def lint(self, values: Obj | None = None) -> subprocess.CompletedProcess[str]:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            json.dump(values or {}, f)
            values_file = f.name
        try:
            cmd = [str(self.helm), "lint", "--strict", str(self.path), "-f", values_file]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        finally:
            os.unlink(values_file)


def find(objs: list[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs: list[Obj], kind: str) -> Obj:
    matches = find(objs, kind)
    assert len(matches) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def container(objs: list[Obj]) -> Obj:
    containers = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: Obj = containers[0]
    return result


def env_of(objs: list[Obj]) -> dict[str, Obj]:
    return {e["name"]: e for e in container(objs).get("env", [])}


def rules_of(obj: Obj) -> list[Obj]:
    rules: list[Obj] = obj.get("rules") or []
    return rules


def grants(rules: list[Obj]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the rules allow, expanded."""
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


#: What the operator does in each watched namespace, as (apiGroup, resource, verb): kopf's watches
#: of PyncetteTasks and of its Pods (low-level event handlers only, so kopf patches nothing, and
#: cluster scanning is off), and operator/pyncette_operator/kube.py's calls: task get and list,
#: status server-side apply, Pod get/create/delete, Event create. The cluster tests prove it is
#: enough by running the operator under the chart's ServiceAccount.
NAMESPACED_NEEDS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("pyncette.dev", "pyncettetasks", "get"),
        ("pyncette.dev", "pyncettetasks", "list"),
        ("pyncette.dev", "pyncettetasks", "watch"),
        ("pyncette.dev", "pyncettetasks/status", "patch"),
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods", "watch"),
        ("", "pods", "create"),
        ("", "pods", "delete"),
        ("", "events", "create"),
    }
)
