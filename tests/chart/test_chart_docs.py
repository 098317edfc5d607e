"""docs/helm.md's values table is the schema's, and the schema describes values.yaml as it is."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart.chartkit import CHART_DIR
from chart.chartkit import REPO
from chart.kubelet import free_port
from chart.values_doc import DOC_PATH
from chart.values_doc import DOC_PATHS
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


@pytest.mark.parametrize("doc", DOC_PATHS, ids=lambda path: path.name)
def test_docs_table_matches_the_schema(doc: Path) -> None:
    documented = table_in_doc(doc.read_text())
    assert documented == render_table(load_schema()), (
        f"{doc.name}'s values table is stale: run `.venv/bin/python tests/chart/values_doc.py`"
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


WALK_START = "<!-- walkthrough:start -->"
WALK_END = "<!-- walkthrough:end -->"


def walkthrough_script() -> str:
    text = DOC_PATH.read_text()
    block = text[text.index(WALK_START) + len(WALK_START) : text.index(WALK_END)].strip()
    assert block.startswith("```bash\n") and block.endswith("```"), "the walkthrough must be one bash block"
    return block.removeprefix("```bash\n").removesuffix("```")


@pytest.mark.cluster
def test_local_walkthrough_works_as_written(kube_cluster: Any, tmp_path: Path) -> None:
    """docs/helm.md's local control plane walkthrough, run verbatim but for its namespace and port."""
    if not kube_cluster.local:
        pytest.skip("the walkthrough is written for the local control plane (make cluster-up)")
    namespace = f"walkthrough-{secrets.token_hex(3)}"
    tenant = f"{namespace}-tenant"
    script = walkthrough_script().replace("pyncette-system", namespace).replace("team-a", tenant)
    script = script.replace("18080", str(free_port()))
    # A user's shell: none of the suite's PYNCETTE_ settings, but the same machine: where the caches
    # are and which ports the local servers use (without them `make cluster-up` would find the running
    # cluster built from other binaries and restart it under the tests running beside this one).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYNCETTE_") or k.endswith(("_DIR", "_PORT"))}
    env["TMPDIR"] = str(tmp_path)
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the walkthrough did not finish:\n{output[-5000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the operator it started in the background, if still there
        for name in (namespace, tenant):
            kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    assert proc.returncode == 0, output[-5000:]
    assert "no Secrets: as it should be" in output
    # `kubectl get ptask hello` printed the task with its columns, and its runs were listed.
    assert re.search(r"^hello\s", output, re.MULTILINE), output[-3000:]
    assert re.search(r"^hello-\S+\s", output, re.MULTILINE), output[-3000:]
