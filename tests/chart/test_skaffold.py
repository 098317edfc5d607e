"""skaffold.yaml builds the image the chart deploys, from this repository's Dockerfile and chart.

test_skaffold_schema.py checks the file against skaffold's own JSON schema; this checks what that
schema cannot know: the profiles as applied, the chart path and release, the image name, and that
every value it sets is a value the chart's schema knows.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from chart.chartkit import CHART_DIR
from chart.chartkit import REPO
from chart.chartkit import Chart
from chart.dockerfile import parse

SKAFFOLD = REPO / "skaffold.yaml"
IMAGE = "pyncette-operator"
TEMPLATE_IMAGE = IMAGE.replace("-", "_")


def _config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(SKAFFOLD.read_text())
    return config


def _effective(profile: str | None) -> dict[str, Any]:
    """The config with one profile applied (patches and replaced sections), as skaffold does."""
    config = _config()
    base = {k: v for k, v in config.items() if k != "profiles"}
    if profile is None:
        return base
    (prof,) = [p for p in config["profiles"] if p["name"] == profile]
    result = copy.deepcopy(base)
    for section in ("build", "deploy", "manifests", "test"):
        if section in prof:
            result[section] = prof[section]
    for patch in prof.get("patches", []):
        _apply(result, patch)
    return result


def _apply(doc: dict[str, Any], patch: dict[str, Any]) -> None:
    """The add/replace/remove operations of RFC 6902 that skaffold profiles use here."""
    assert patch["op"] in ("add", "replace", "remove"), patch
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in patch["path"].lstrip("/").split("/")]
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if patch["op"] == "remove":
        assert last in node, f"remove of a missing path {patch['path']}"
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = patch["value"]
    else:
        assert patch["op"] == "add" or last in node, f"replace of a missing path {patch['path']}"
        node[last] = patch["value"]


def _schema_has(path: str) -> bool:
    node: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
    for part in path.split("."):
        props = node.get("properties", {})
        if part not in props:
            return False
        node = props[part]
    return True


def test_header() -> None:
    config = _config()
    assert config["apiVersion"] == "skaffold/v4beta13"
    assert config["kind"] == "Config"
    assert {p["name"] for p in config["profiles"]} == {"dev", "ci", "local-node"}


@pytest.mark.parametrize("profile", [None, "dev", "ci", "local-node"])
def test_builds_the_dockerfile_and_deploys_the_chart(profile: str | None) -> None:
    config = _effective(profile)
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == IMAGE
    if "custom" in artifact:
        # The local node's profile: podman through `make image`'s script, on the same Dockerfile.
        assert "docker" not in artifact
        command = artifact["custom"]["buildCommand"].split()
        assert command[:3] == ["bash", "hack/images/image.sh", "--skaffold"]
        assert (REPO / command[1]).is_file()
        # Every input the Dockerfile copies is a dependency skaffold watches and hashes.
        paths = artifact["custom"]["dependencies"]["paths"]
        copied = {
            src for stage in parse() if stage.name == "build" for args in stage.all("COPY") for src in args.split()[:-1]
        }
        assert copied <= set(paths), paths
        dockerfile = "Dockerfile"
        assert dockerfile in paths
    else:
        dockerfile = artifact["docker"]["dockerfile"]
    assert (REPO / artifact.get("context", ".") / dockerfile).resolve() == REPO / "Dockerfile"
    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART_DIR
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == f"{{{{.IMAGE_REPO_{TEMPLATE_IMAGE}}}}}"
    assert templates["image.tag"].startswith(f"{{{{.IMAGE_TAG_{TEMPLATE_IMAGE}}}}}")
    for key in [*templates, *release.get("setValues", {})]:
        assert _schema_has(key), f"skaffold.yaml sets {key}, which the chart does not have"


def test_chart_default_image_is_what_skaffold_builds() -> None:
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["image"]["repository"] == IMAGE


@pytest.mark.parametrize("profile", [None, "dev", "ci", "local-node"])
def test_the_values_skaffold_sets_render(chart: Chart, profile: str | None) -> None:
    (release,) = _effective(profile)["deploy"]["helm"]["releases"]
    args = ["--set", "image.repository=registry.example/pyncette-operator", "--set", "image.tag=abc123"]
    for key, value in release.get("setValues", {}).items():
        args += ["--set", f"{key}={value}"]
    assert chart.render(None, *args)
