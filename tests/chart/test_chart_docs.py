"""docs/helm.md's values table is the schema's, and the schema describes values.yaml as it is."""

from __future__ import annotations

from typing import Any

import yaml

from chart.chartkit import CHART_DIR
from chart.values_doc import DOC_PATH
from chart.values_doc import load_schema
from chart.values_doc import render_table
from chart.values_doc import rows
from chart.values_doc import table_in_doc


def _leaves(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """values.yaml flattened the way the table is: into objects the schema lists properties of."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        node = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in node and "default" not in node:
            out.update(_leaves(value, node, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_docs_table_matches_the_schema() -> None:
    documented = table_in_doc(DOC_PATH.read_text())
    assert documented == render_table(load_schema()), (
        "docs/helm.md's values table is stale: run `.venv/bin/python tests/chart/values_doc.py`"
    )


def test_every_value_is_documented_with_its_real_default() -> None:
    schema = load_schema()
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    leaves = _leaves(values, schema)
    documented = _schema_defaults(schema)
    assert set(leaves) == set(documented) - {"global"}
    for key, value in leaves.items():
        assert documented[key] == value, (
            f"{key}: values.yaml has {value!r}, the schema's default says {documented[key]!r}"
        )
    assert {r[0] for r in rows(schema)} == set(documented)


def _schema_defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, node in schema.get("properties", {}).items():
        if node.get("type") == "object" and "properties" in node and "default" not in node:
            out.update(_schema_defaults(node, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = node.get("default")
    return out
