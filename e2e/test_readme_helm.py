"""The README's "Installing with Helm" path on the local cluster, run as a new user would run it.

The fenced block after the README's `<!-- tested by e2e/test_readme_helm.py -->` marker is run line
by line: its `make` line (which prints the image last), its `IMAGE=` line with what that printed,
the `helm install` and `kubectl apply` lines as written; the two `kubectl get`/`kubectl logs` lines
are polled until they show what the comments promise (Ready, a Last Run, the container's output).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from realnode import require_real_node

from plugins.kube import REPO_ROOT
from plugins.kube import KubeCluster
from testkit import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(1200)]

MARKER = "<!-- tested by e2e/test_readme_helm.py -->"


def readme_block() -> list[str]:
    """The marked block's logical lines (continuations joined), comments dropped."""
    text = (REPO_ROOT / "README.md").read_text()
    after = text.split(MARKER, 1)[1]
    match = re.search(r"```bash\n(.*?)```", after, flags=re.DOTALL)
    assert match, f"no ```bash block after {MARKER} in README.md"
    lines: list[str] = []
    current = ""
    for raw in match.group(1).splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        line = (current + line.strip()).strip()
        current = ""
        if line:
            lines.append(re.sub(r"\s+#.*$", "", line))
    return lines


def _bash(script: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _columns(table: str) -> dict[str, str]:
    header, row = table.strip().splitlines()[:2]
    names = re.split(r"\s{2,}", header.strip())
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return {name: row[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}


@pytest.fixture
def cleanup(kube_cluster: KubeCluster) -> Iterator[None]:
    yield
    kube_cluster.kubectl("delete", "-f", str(REPO_ROOT / "examples" / "ptask-hello.yaml"), "-n", "default", check=False)
    kube_cluster.helm("uninstall", "pyncette", "-n", "pyncette-system", "--wait", check=False)


def test_readme_block_has_the_steps_a_user_needs() -> None:
    lines = readme_block()
    assert lines[0].startswith("make cluster-up node-up image")
    assert any(line.startswith("IMAGE=") for line in lines)
    assert any(line.startswith("helm install ") and "IMAGE" in line for line in lines)
    # A tag of digits only (a date, or a content hash that happens to have no letter) is a number to
    # --set, which the chart's schema refuses: the tag must go in with --set-string.
    assert any('--set-string image.tag="${IMAGE##*:}"' in line for line in lines)
    assert "kubectl apply -f examples/ptask-hello.yaml" in lines


def test_readme_helm_path_runs_hello_on_the_real_node(kube_cluster: KubeCluster, cleanup: None) -> None:
    require_real_node(kube_cluster)
    lines = readme_block()
    # A user's shell: no KUBECONFIG yet, and not inside another make (`make e2e-node` runs this test;
    # its MAKELEVEL would make the inner make print "Entering directory" after the image).
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    env["PWD"] = str(REPO_ROOT)
    make = _bash(lines[0], env, timeout=3600)
    assert make.returncode == 0, f"{lines[0]} failed:\n{make.stdout[-3000:]}{make.stderr[-3000:]}"
    image = make.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"127\.0\.0\.1:\d+/pyncette-operator:[0-9a-f]{12}", image), make.stdout[-500:]

    # The set-up lines, as written (the IMAGE= line gets the printed image), in one shell.
    setup: list[str] = []
    observe: list[str] = []
    for line in lines[1:]:
        if line.startswith("IMAGE="):
            setup.append(f"IMAGE={image}")
        elif line.startswith(("kubectl get ", "kubectl logs ")):
            observe.append(line)
        else:
            setup.append(line)
    prelude = "\n".join(line for line in setup if line.startswith(("export ", "IMAGE=")))
    proc = _bash("\n".join(setup), env, timeout=600)
    assert proc.returncode == 0, f"the README's steps failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"

    (get_line,) = [line for line in observe if line.startswith("kubectl get ptask")]
    (logs_line,) = [line for line in observe if line.startswith("kubectl logs")]

    def ready_with_a_last_run() -> dict[str, str] | None:
        out = _bash(f"{prelude}\n{get_line}", env, timeout=60)
        assert out.returncode == 0, out.stderr
        columns = _columns(out.stdout)
        return columns if columns.get("READY") == "True" and columns.get("LAST RUN") not in ("", "<none>") else None

    # "Within a minute" of the apply, as the README promises.
    wait_until(ready_with_a_last_run, timeout=60, what=f"`{get_line}` showing READY True and a LAST RUN", period=1)

    def logs_show_the_output() -> str | None:
        out = _bash(f"{prelude}\n{logs_line}", env, timeout=60)
        return out.stdout if out.returncode == 0 and "hello from hello-" in out.stdout else None

    wait_until(logs_show_the_output, timeout=60, what=f"`{logs_line}` showing the container's output", period=1)
