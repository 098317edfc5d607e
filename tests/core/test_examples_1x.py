"""pyncette 1.1.0's own examples run unchanged on this package, and so do ours.

Each example is started as a real process (all at once, to keep the suite fast), watched until it
prints what shows it works (or a generous deadline passes), probed over HTTP where it serves, and
then stopped with SIGINT, which must shut it down gracefully.

The 1.1.0 examples come from its source distribution: ``$PYNCETTE_1X_EXAMPLES``, else
``/tmp/pyn/pyncette-1.1.0/examples``, else a copy fetched once with ``pip download`` into
``~/.cache/pyncette``. The test is skipped when none is available (offline machine).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator

import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
OURS = REPO / "examples"
CACHE = pathlib.Path.home() / ".cache" / "pyncette"
DEADLINE_SECONDS = 30  # a safety net for hung examples, not a timing assertion
STOP_DEADLINE_SECONDS = 20


def examples_1x() -> pathlib.Path | None:
    candidates = [os.environ.get("PYNCETTE_1X_EXAMPLES"), "/tmp/pyn/pyncette-1.1.0/examples"]  # noqa: S108
    for candidate in candidates:
        if candidate and (pathlib.Path(candidate) / "basic.py").is_file():
            return pathlib.Path(candidate)
    target = CACHE / "pyncette-1.1.0" / "examples"
    if (target / "basic.py").is_file():
        return target
    download = CACHE / "sdist"
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                download,
                "pyncette==1.1.0",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with tarfile.open(next(download.glob("pyncette-1.1.0.tar.gz"))) as sdist:
            members = [m for m in sdist.getmembers() if m.name.startswith("pyncette-1.1.0/examples/")]
            sdist.extractall(CACHE, members=members, filter="data")
    except (subprocess.SubprocessError, StopIteration, OSError, tarfile.TarError):
        return None
    return target if (target / "basic.py").is_file() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclasses.dataclass
class Example:
    """How to run one example and what proves that it works."""

    id: str
    script: pathlib.Path
    expect: list[str]  # regexes that must all appear in its output
    http: tuple[int, str, str] | None = None  # (port, path, text the response must contain)
    file: tuple[str, str] | None = None  # (file in the working directory, text it must contain)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    graceful: bool = True  # exits with status 0 on SIGINT (app.main())
    process: subprocess.Popen[bytes] | None = None
    cwd: pathlib.Path | None = None
    output: str = ""
    http_ok: bool = False

    def satisfied(self) -> bool:
        assert self.cwd is not None
        text = self.output
        if not all(re.search(pattern, text) for pattern in self.expect):
            return False
        if self.file is not None:
            path = self.cwd / self.file[0]
            if not path.is_file() or self.file[1] not in path.read_text():
                return False
        if self.http is not None and not self.http_ok:
            port, path, needle = self.http
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                    self.http_ok = needle in response.read().decode()
            except urllib.error.HTTPError as e:  # the health check may answer 500 while a task stalls it
                self.http_ok = needle in e.read().decode()
            except OSError:
                return False
        return self.http is None or self.http_ok


def specs(old: pathlib.Path | None) -> list[Example]:
    found: list[Example] = []
    if old is not None:
        found += [
            Example("1x-basic", old / "basic.py", [r"Hello world!"]),
            Example("1x-persistence", old / "persistence.py", [r"Hello, world!"]),
            Example("1x-dynamic_tasks", old / "dynamic_tasks.py", [r"Hello from \w+"], graceful=False),
            Example("1x-delay_queue", old / "delay_queue.py", [r"I am \w+\. If I fail", r"I am \w+\. I will never"]),
            Example(
                "1x-fixtures_and_middlewares",
                old / "fixtures_and_middlewares.py",
                [r"Using log file"],
                file=("logfile.txt", "Task fast_task took"),
            ),
            Example("1x-healthcheck", old / "healthcheck.py", [r"Hello, world!"], http=(8080, "/health", "OK")),
            Example("1x-heartbeat", old / "heartbeat.py", [r"Goodbye, world!", r"LeaseLostException"]),
            Example(
                "1x-prometheus_metrics",
                old / "prometheus_metrics.py",
                [r"Hello, world!"],
                http=(9699, "/metrics", "pyncette_tasks_total"),
            ),
        ]
    health_port, metrics_port = free_port(), free_port()
    found += [
        Example("hello_sqlite", OURS / "hello_sqlite.py", [r"tick", r"hello, Ada", r"one-off reminder"]),
        Example("basic", OURS / "basic.py", [r"Hello world!"]),
        Example("persistence", OURS / "persistence.py", [r"Hello, world!"]),
        Example("dynamic_tasks", OURS / "dynamic_tasks.py", [r"Hello from \w+"], graceful=False),
        Example("delay_queue", OURS / "delay_queue.py", [r"Reliable job", r"Best-effort job"]),
        Example(
            "fixtures_and_middlewares",
            OURS / "fixtures_and_middlewares.py",
            [r"Writing task durations"],
            file=("task-durations.log", "fast_task took"),
        ),
        Example(
            "healthcheck",
            OURS / "healthcheck.py",
            [r"Done at"],
            http=(health_port, "/health", "OK"),
            env={"PORT": str(health_port)},
        ),
        Example(
            "heartbeat", OURS / "heartbeat.py", [r"cooperative: finished", r"LeaseLostException", r"automatic: fin"]
        ),
        Example(
            "prometheus_metrics",
            OURS / "prometheus_metrics.py",
            [r"one-off"],
            http=(metrics_port, "/metrics", "pyncette_tasks_total"),
            env={"PORT": str(metrics_port)},
        ),
    ]
    return found


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Example]]:
    # The 1.x examples listen on fixed ports (8080, 9699). When a -k selection splits this module
    # across xdist workers, each worker runs this fixture: they take turns (the lock file is in the
    # run's shared temporary directory), instead of failing with "Address already in use".
    with (tmp_path_factory.getbasetemp().parent / "examples-1x.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        examples = run_examples(tmp_path_factory)
    yield {example.id: example for example in examples}


def run_examples(tmp_path_factory: pytest.TempPathFactory) -> list[Example]:
    """Starts every example at once, waits until each printed what it should (or exited), and
    stops them with SIGINT."""
    old = examples_1x()
    examples = specs(old)
    env = {**os.environ, "LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO / "operator")}
    for example in examples:
        example.cwd = tmp_path_factory.mktemp(example.id)
        example.process = subprocess.Popen(
            [sys.executable, str(example.script)],
            cwd=example.cwd,
            env={**env, **example.env, "PYNCETTE_DB": str(example.cwd / "hello.db")},
            stdout=(example.cwd / "output.txt").open("wb"),
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        pending = list(examples)
        while pending and time.monotonic() < deadline:
            for example in list(pending):
                assert example.cwd is not None and example.process is not None
                example.output = (example.cwd / "output.txt").read_text(errors="replace")
                if example.satisfied() or example.process.poll() is not None:
                    pending.remove(example)
            time.sleep(0.2)
    finally:
        for example in examples:
            assert example.process is not None
            if example.process.poll() is None:
                example.process.send_signal(signal.SIGINT)
        for example in examples:
            assert example.process is not None and example.cwd is not None
            try:
                example.process.wait(STOP_DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                example.process.kill()
                example.process.wait()
            example.output = (example.cwd / "output.txt").read_text(errors="replace")
    return examples


IDS_1X = [
    "1x-basic",
    "1x-persistence",
    "1x-dynamic_tasks",
    "1x-delay_queue",
    "1x-fixtures_and_middlewares",
    "1x-healthcheck",
    "1x-heartbeat",
    "1x-prometheus_metrics",
]
IDS_OURS = [
    "hello_sqlite",
    "basic",
    "persistence",
    "dynamic_tasks",
    "delay_queue",
    "fixtures_and_middlewares",
    "healthcheck",
    "heartbeat",
    "prometheus_metrics",
]


@pytest.mark.parametrize("example_id", IDS_1X + IDS_OURS)
def test_example_runs_and_stops_gracefully(ran: dict[str, Example], example_id: str) -> None:
    if example_id not in ran:
        pytest.skip("pyncette 1.1.0's examples are not available on this machine")
    example = ran[example_id]
    assert example.process is not None
    assert example.satisfied(), (
        f"{example.id} did not show {example.expect} / {example.http} / {example.file}:\n{example.output[-3000:]}"
    )
    if example.graceful:
        assert example.process.returncode == 0, (
            f"{example.id} exited with {example.process.returncode}:\n{example.output[-3000:]}"
        )


def test_1x_benchmark_example_builds_its_app() -> None:
    old = examples_1x()
    if old is None:
        pytest.skip("pyncette 1.1.0's examples are not available on this machine")
    # It needs a Redis server on the default port to run; building the app and parsing arguments
    # exercises the API it uses (redis_repository, batch_size, partitioned_task).
    result = subprocess.run(
        [sys.executable, str(old / "benchmark.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator")},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "populate" in result.stdout
