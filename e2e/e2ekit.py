"""Shared pieces of the end-to-end suite: the E2E handle the tests get and how the chart is set up."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from chart.kubelet import OperatorProcess

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@dataclass
class E2E:
    """What the tests get: where to apply tasks, and the operator replicas if they run locally."""

    cluster: Any
    namespace: str
    release: str
    installed_here: bool
    operators: list[OperatorProcess] = field(default_factory=list)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def operator_logs(self) -> str:
        return "\n".join(f"--- {op.name}\n{op.log_text()[-3000:]}" for op in self.operators)


def fake_nodes(cluster: Any) -> bool:
    nodes = cluster.get_json("nodes")["items"]
    return bool(nodes) and all(
        (n["metadata"].get("annotations") or {}).get("kwok.x-k8s.io/node") == "fake" for n in nodes
    )


def chart_values(handler_modules: list[str]) -> dict[str, Any]:
    # The suite creates its tasks in the release's own (throwaway) namespace, so it asks for it to
    # be served; a real install keeps tenants out of the operator's namespace.
    values: dict[str, Any] = {"statusInterval": 1, "watch": {"releaseNamespace": True}}
    backend = os.environ.get("PYNCETTE_E2E_BACKEND_URL")
    if backend:
        values["backend"] = {"url": backend}
    values["replicaCount"] = int(os.environ.get("PYNCETTE_E2E_REPLICAS", "1"))
    image = os.environ.get("PYNCETTE_E2E_IMAGE")
    if image:
        repository, _, tag = image.rpartition(":")
        values["image"] = {"repository": repository, "tag": tag}
    if handler_modules:
        values["handlers"] = handler_modules
    return values
