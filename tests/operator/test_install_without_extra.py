"""``pip install pyncette`` without the ``operator`` extra: ``pyncette-operator`` says what to install.

A real virtualenv with the distribution installed from this checkout and no extras (so no kopf,
kubernetes-asyncio or prometheus_client), then the console script as a user runs it.
"""

from __future__ import annotations

import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_operator_without_its_extra_fails_in_one_line(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    probe = subprocess.run([str(python), "-c", "import kopf"], capture_output=True, text=True, timeout=60)
    assert probe.returncode != 0, "kopf is installed: the test would prove nothing"

    result = subprocess.run(
        [str(env_dir / "bin" / "pyncette-operator"), "run", "--namespace", "default"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "pyncette-operator: error: the operator's dependencies are not installed"
        " (kopf, kubernetes_asyncio, prometheus_client): pip install 'pyncette[operator]'"
    ], result.stderr
    # The scheduler library itself works without the extra.
    library = subprocess.run(
        [str(python), "-c", "import pyncette, pyncette_operator; print(pyncette.Pyncette.__name__)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert library.stdout.strip() == "Pyncette", library.stderr
