"""The chart ships the repository's CRD unchanged (helm installs what is in the chart's crds/)."""

from __future__ import annotations

import yaml

from chart.chartkit import CHART_DIR
from chart.chartkit import REPO


def test_chart_crd_is_byte_identical_to_the_repository_crd() -> None:
    source = REPO / "crds" / "pyncettetask.yaml"
    copy = CHART_DIR / "crds" / "pyncettetask.yaml"
    assert copy.read_bytes() == source.read_bytes(), f"run: cp {source.relative_to(REPO)} {copy.relative_to(REPO)}"


def test_chart_crds_folder_holds_only_that_crd() -> None:
    files = sorted(p.name for p in (CHART_DIR / "crds").iterdir())
    assert files == ["pyncettetask.yaml"]
    crd = yaml.safe_load((CHART_DIR / "crds" / "pyncettetask.yaml").read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "pyncettetasks.pyncette.dev"
