"""The CRD file: names, structural schema for the contract, CEL rules, printer columns, status fields."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

CRD = pathlib.Path(__file__).resolve().parents[2] / "crds" / "pyncettetask.yaml"


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CRD.read_text())
    return data


def test_names() -> None:
    crd = load()
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    spec = crd["spec"]
    assert spec["group"] == "pyncette.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "PyncetteTask"
    assert spec["names"]["plural"] == "pyncettetasks"
    assert "ptask" in spec["names"]["shortNames"]
    [version] = spec["versions"]
    assert version["name"] == "v1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Schedule", "Suspend", "Last Run", "Next Run", "Ready", "Age"]


def test_schema_covers_the_contract() -> None:
    schema = load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = schema["properties"]["spec"]["properties"]
    for field in (
        "schedule",
        "interval",
        "executeAt",
        "timezone",
        "suspend",
        "executionMode",
        "failureMode",
        "leaseDuration",
        "podTemplate",
        "handler",
        "successfulRunsHistoryLimit",
        "failedRunsHistoryLimit",
        "concurrencyPolicy",
    ):
        assert field in spec, field
    assert spec["executionMode"]["enum"] == ["AtLeastOnce", "AtMostOnce"]
    assert spec["failureMode"]["enum"] == ["None", "Unlock", "Commit"]
    assert spec["concurrencyPolicy"]["enum"] == ["Allow", "Forbid", "Replace"]
    assert spec["executeAt"]["format"] == "date-time"
    status = schema["properties"]["status"]["properties"]
    for field in (
        "observedGeneration",
        "conditions",
        "nextRunTime",
        "lastScheduleTime",
        "lastSuccessfulTime",
        "lastFailureTime",
        "active",
    ):
        assert field in status, field
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    rules = [v["message"] for v in schema["properties"]["spec"]["x-kubernetes-validations"]]
    assert any("exactly one of spec.schedule" in m for m in rules)
    assert any("exactly one of spec.podTemplate" in m for m in rules)
    assert any("timezone" in m for m in rules)


def test_schema_is_structural() -> None:
    """Every object node declares properties, is a map, or preserves unknown fields (else the apiserver prunes)."""
    schema = load()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict[str, Any], path: str) -> None:
        assert "type" in node, path
        if node["type"] == "object" and path != "$.metadata":
            kinds = ("properties", "additionalProperties", "x-kubernetes-preserve-unknown-fields")
            assert any(node.get(kind) for kind in kinds), path
        for name, child in (node.get("properties") or {}).items():
            walk(child, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "$")
