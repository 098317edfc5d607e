"""Read the Dockerfile, and replay its build stage on this machine.

The real image is built with podman by `make image` (hack/images/image.sh) and run on the local
node by the e2e suite, on a base built from Debian packages. This module is the quick check that
needs no container engine: it runs the very RUN lines of the build stage, in order, against a
fresh directory standing in for the image's filesystem: COPY copies from the build context
(filtered by .dockerignore), WORKDIR and the virtualenv path are mapped into that directory, ENV is
applied, secret mounts are dropped (pip here uses this machine's own settings). The result is the
virtualenv the image would ship, and its `pyncette-operator` is the image's ENTRYPOINT.

What it cannot reproduce: the base image itself (the replay uses a Python of the image's minor
version when this machine has one, else the test run's own) and the build's network and platform.

Kept deliberately small: it supports the instructions our Dockerfile uses and fails loudly on
any other, so a Dockerfile change that it cannot replay faithfully is noticed.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str | None = None) -> list[Stage]:
    """Stages with their instructions (keyword upper-cased, continuation lines joined).

    ARGs before the first FROM are global: FROM ${NAME} takes their default values, as a build
    without --build-arg does.
    """
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = args.strip().partition("=")
            global_args[name] = default
            continue
        if keyword == "FROM":
            parts = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], args).split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def env_pairs(args: str) -> dict[str, str]:
    """ENV KEY=VALUE ... (the only ENV form we use)."""
    pairs = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        assert sep, f"ENV {args!r}: use the KEY=VALUE form"
        pairs[key] = value
    return pairs


def _matches(rel: str, pattern: str) -> bool:
    """Whether ``pattern`` matches ``rel`` or one of its parent directories."""
    parts = rel.split("/")
    if pattern.startswith("**/"):
        sub = pattern[3:]
        spans = ("/".join(parts[j : i + 1]) for i in range(len(parts)) for j in range(i + 1))
        return any(fnmatch.fnmatchcase(span, sub) for span in spans)
    return any(fnmatch.fnmatchcase("/".join(parts[: i + 1]), pattern) for i in range(len(parts)))


def ignored(rel: str, patterns: list[str]) -> bool:
    """.dockerignore semantics for the patterns we use: the last matching pattern wins, `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if _matches(rel, pattern.removeprefix("!").rstrip("/")):
            result = not negate
    return result


def dockerignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]


def _copy(sources: list[str], dest: Path, patterns: list[str], context: Path) -> None:
    for source in sources:
        assert not ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
        src = context / source
        assert src.exists(), f"COPY {source}: not in the build context {context}"
        target = dest / src.name if dest.is_dir() or len(sources) > 1 else dest
        if src.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            continue
        for path in src.rglob("*"):
            rel = path.relative_to(context).as_posix()
            if path.is_file() and not ignored(rel, patterns):
                out = target / path.relative_to(src)
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, out)


@dataclass
class Replay:
    root: Path
    venv: Path
    log: str


def replay_build_stage(
    root: Path, *, context: Path = REPO, dockerfile: str | None = None, timeout: float = 900
) -> Replay:
    """Run the build stage into ``root``; returns where its virtualenv ended up.

    pip's ``--no-cache-dir`` is dropped so that the replay reuses this machine's warm cache; every
    other argument is run as written.
    """
    (build,) = [s for s in parse(dockerfile) if s.name == "build"]
    patterns = dockerignore_patterns()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PIP_REQUIRE_VIRTUALENV")}
    # `python` is a plain interpreter (no virtualenv), as in the base image.
    shim = root / "shim-bin"
    shim.mkdir(parents=True)
    (shim / "python").symlink_to(interpreter_for(build.base))
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    mapping: dict[str, Path] = {}

    def host(path: str) -> Path:
        for container, local in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            if path == container or path.startswith(container.rstrip("/") + "/"):
                return local / path[len(container) :].lstrip("/")
        raise AssertionError(f"container path {path} has no place in the replay (map it via ENV/WORKDIR)")

    workdir = root / "fs"
    workdir.mkdir()
    log: list[str] = []
    for keyword, args in build.instructions:
        if keyword == "ENV":
            for key, value in env_pairs(args).items():
                if value.startswith("/"):
                    mapping[value] = root / "fs" / value.strip("/").replace("/", "_")
                    value = str(mapping[value])
                env[key] = value
        elif keyword == "WORKDIR":
            assert args.startswith("/"), "WORKDIR must be absolute"
            mapping.setdefault(args, root / "fs" / args.strip("/").replace("/", "_"))
            workdir = mapping[args]
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            parts = shlex.split(args)
            assert not any(p.startswith("--") for p in parts), f"COPY {args}: flags are not replayed in the build stage"
            *sources, dest = parts
            target = host(dest) if dest.startswith("/") else workdir / dest
            if dest.endswith("/") or len(sources) > 1:
                target.mkdir(parents=True, exist_ok=True)
            _copy(sources, target, patterns, context)
        elif keyword == "RUN":
            command = args
            while command.startswith("--"):
                flag, _, command = command.partition(" ")
                assert flag.startswith("--mount=type=secret,"), f"RUN {flag}: only secret mounts are replayed"
                command = command.lstrip()
            command = command.replace("--no-cache-dir", "")
            assert "/opt/" not in command and "/usr/" not in command, f"RUN {args}: use ${{VIRTUAL_ENV}}, not a path"
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", command],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            log.append(f"$ {command}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
            assert proc.returncode == 0, (
                f"RUN {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        elif keyword in ("ARG", "LABEL"):
            continue
        else:
            raise AssertionError(f"{keyword} in the build stage is not replayed; extend tests/chart/dockerfile.py")
    return Replay(root=root, venv=Path(env["VIRTUAL_ENV"]), log="\n".join(log))


def interpreter_for(base: str) -> Path:
    """A Python of the base image's minor version (python:3.12.x-... -> 3.12) if this machine has one.

    Tried in order: ``python3.X`` on PATH, pyenv's versions; else the interpreter running the tests.
    """
    match = re.match(r"python:(\d+\.\d+)", base)
    candidates: list[Path] = []
    if match:
        minor = match.group(1)
        found = shutil.which(f"python{minor}")
        if found:
            candidates.append(Path(found))
        pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
        candidates += sorted(pyenv_root.glob(f"versions/{minor}.*/bin/python{minor}"), reverse=True)
    for candidate in candidates:
        probe = subprocess.run([str(candidate), "-c", "import venv"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return candidate
    return Path(getattr(sys, "_base_executable", sys.executable))


def entrypoint() -> tuple[list[str], list[str]]:
    """ENTRYPOINT and CMD of the final stage (exec form)."""
    final = parse()[-1]
    (entry,) = final.all("ENTRYPOINT")
    (cmd,) = final.all("CMD")
    return json.loads(entry), json.loads(cmd)
