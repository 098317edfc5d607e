"""Helpers for the real-node tests: running the node scripts and finding what the node left behind."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from plugins.kube import LOG_DIR
from plugins.kube import REPO_ROOT

#: The real node's name and machine-wide paths (hack/node/lib.sh).
NODE_NAME = "pyncette-node"
NODE_RUN = "/run/pyncette-node"
NODE_VAR = "/var/lib/pyncette-node"
NODE_DIR = str(REPO_ROOT / ".cluster" / "node")
CNI_BRIDGE = "pyncette0"
CNI_NETWORK = "pyncette-node"
NODE_UP_TIMEOUT = float(os.environ.get("PYNCETTE_NODE_UP_TIMEOUT", "900"))
NODE_BINARIES = {"containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "runc"}


def run_script(*args: str, timeout: float = NODE_UP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run one of the repository's shell scripts from the repository root, output captured."""
    return subprocess.run(["bash", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def node_log_tails(lines: int = 30) -> str:
    tails = []
    for name in ("containerd", "kubelet", "kube-proxy"):
        path = LOG_DIR / f"{name}.log"
        if path.exists():
            tails.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails)


def bring_up() -> None:
    """``hack/node/up.sh`` (idempotent; it also starts the registry and pushes the images); fails the
    test with the script's output and the node's log tails if the node does not come up in time.

    The script's own output goes to .cluster/logs/node-up-test.log as it runs, so a run that hangs
    still shows how far it got (pytest-timeout would otherwise end it without a word)."""
    log = LOG_DIR / "node-up-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # Inside the test's own timeout (pytest's `timeout`, 300 s), so the failure below is reported.
    timeout = min(NODE_UP_TIMEOUT, 270.0)
    with log.open("w") as out:
        try:
            returncode = subprocess.run(
                ["bash", "hack/node/up.sh"], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            returncode = None
    if returncode != 0:
        what = f"did not finish in {timeout:.0f}s" if returncode is None else f"failed ({returncode})"
        pytest.fail(
            f"bash hack/node/up.sh {what}:\n{log.read_text(errors='replace')[-4000:]}\n{node_log_tails()}",
            pytrace=False,
        )


def _processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(proc / "exe")).removesuffix(" (deleted)")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if exe in NODE_BINARIES and _names_the_node(cmdline):
            found.append(f"{proc.name} {cmdline.strip()}")
    return found


#: The lock files the hack scripts serialise on (hack/*/lib.sh), by name.
SCRIPT_LOCKS = re.compile(r"/\.(?:node-)?lock(?:-[\w.-]+)?$|/\.lock$")


def daemons_holding_script_locks() -> list[str]:
    """``pid exe -> lock path`` for every process but the scripts themselves (bash, flock) that has
    one of the scripts' lock files open: a daemon that does keeps that lock taken for its lifetime."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(proc / "exe"))
            targets = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if exe in ("bash", "flock"):
            continue
        found += [f"{proc.name} {exe} -> {t}" for t in targets if SCRIPT_LOCKS.search(t)]
    return found


def _names_the_node(cmdline: str) -> bool:
    """The command line names the node's paths (any checkout's path to the shared .cluster/)."""
    if NODE_RUN in cmdline or NODE_VAR in cmdline:
        return True
    real = os.path.realpath(NODE_DIR)
    return any(os.path.realpath(m) == real for m in re.findall(r"/[^ =]*/\.cluster/node", cmdline))


def _mounts() -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith((NODE_RUN, NODE_VAR, "/run/netns/cni-"))]


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if re.search(rf"\b{CNI_BRIDGE}\b", line)]


def _iptables() -> list[str]:
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool) is None:
            continue
        out = subprocess.run([tool], capture_output=True, text=True, check=False).stdout
        found += [
            f"{tool}: {line}"
            for line in out.splitlines()
            if "KUBE-" in line or f'name: \\"{CNI_NETWORK}\\"' in line or "10.245.0." in line
        ]
    if shutil.which("nft"):
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
        found += [f"nft: {t}" for t in tables.splitlines() if "kube" in t]
    return found


def _cgroups() -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob("*/kubepods")]


def leftovers() -> dict[str, list[str]]:
    """What of the node exists on this machine: processes, mounts, the bridge, iptables/nftables
    rules and chains, cgroups. Empty categories are left out, so ``{}`` means nothing at all."""
    found = {
        "processes": _processes(),
        "mounts": _mounts(),
        "links": _links(),
        "iptables": _iptables(),
        "cgroups": _cgroups(),
    }
    return {k: v for k, v in found.items() if v}
