"""skaffold.yaml is valid against skaffold's own JSON schema for its apiVersion.

The schemas ship inside skaffold's Go module (docs-v2/content/en/schemas/<apiVersion>.json), which
the Go module proxy serves; ``go mod download`` keeps it in Go's module cache, so only the first
run on a machine downloads it (about 45 MB).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from chart.chartkit import REPO

# The skaffold release whose schemas we check against; v2.16 reads skaffold/v4beta13.
SKAFFOLD_MODULE = "github.com/GoogleContainerTools/skaffold/v2@v2.16.1"


@pytest.fixture(scope="module")
def skaffold_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((REPO / "skaffold.yaml").read_text())
    return config


@pytest.fixture(scope="module")
def validator(skaffold_config: dict[str, Any]) -> jsonschema.protocols.Validator:
    with tempfile.TemporaryDirectory() as scratch:  # outside any go.mod, so no module is edited
        result = subprocess.run(
            ["go", "mod", "download", "-json", SKAFFOLD_MODULE],
            capture_output=True,
            text=True,
            cwd=scratch,
            env={**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"},
            timeout=600,
            check=False,
        )
    assert result.returncode == 0, f"go mod download {SKAFFOLD_MODULE} failed: {result.stdout}{result.stderr}"
    module_dir = Path(json.loads(result.stdout)["Dir"])
    version = skaffold_config["apiVersion"].removeprefix("skaffold/")
    schema_path = module_dir / "docs-v2" / "content" / "en" / "schemas" / f"{version}.json"
    assert schema_path.is_file(), f"{SKAFFOLD_MODULE} has no schema for {skaffold_config['apiVersion']}"
    schema = json.loads(schema_path.read_text())
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def test_skaffold_yaml_matches_skaffolds_schema(
    skaffold_config: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(skaffold_config)]
    assert errors == []


def test_the_schema_check_catches_a_misspelt_field(
    skaffold_config: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    broken = copy.deepcopy(skaffold_config)
    broken["build"]["artifacts"][0]["dockerFile"] = "Dockerfile"  # skaffold spells it docker.dockerfile
    assert list(validator.iter_errors(broken)), "the schema accepted an unknown field"
