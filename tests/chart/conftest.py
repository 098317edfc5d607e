"""Fixtures for the chart, image and skaffold tests: a helm binary and a chart renderer.

Most of these tests need no cluster: ``helm template`` and ``helm lint`` run offline. helm comes
from the local control plane's build (``.cluster/bin`` or the build cache), or ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from chart.chartkit import Chart
from chart.chartkit import find_helm
from chart.dockerfile import Replay
from chart.dockerfile import replay_build_stage


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    helm = find_helm()
    if helm is None:
        message = "helm not found: run `make cluster-up` (it builds helm) or put helm on PATH"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return helm


@pytest.fixture(scope="session")
def chart(helm_bin: Path) -> Chart:
    return Chart(helm=helm_bin)


@pytest.fixture(scope="session")
def hadolint_bin() -> Path:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: it comes with the dev extra (the hadolint-bin package)", pytrace=False)
    return Path(found)


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Replay:
    """The Dockerfile's build stage, replayed once per session (a minute with a warm pip cache)."""
    return replay_build_stage(tmp_path_factory.mktemp("image"))
