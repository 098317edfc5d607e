"""Two OS processes sharing one SQLite file run every due instance exactly once between them."""

from __future__ import annotations

import asyncio
import datetime
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyncette.model import Context
from pyncette.sqlite import sqlite_repository
from pyncette.task import Task

WORKER = Path(__file__).with_name("sqlite_worker.py")
INSTANCES = 300
DEADLINE_SECONDS = 120


async def _noop(context: Context) -> None:
    pass


def _executed(outputs: list[Path]) -> list[str]:
    lines: list[str] = []
    for output in outputs:
        if output.exists():
            lines.extend(line for line in output.read_text(encoding="utf-8").splitlines() if line)
    return lines


def _all_ready(outputs: list[Path]) -> bool:
    return all(Path(f"{output}.ready").exists() for output in outputs)


@pytest.mark.slow
async def test_two_processes_run_every_due_instance_exactly_once(tmp_path: Path) -> None:
    database = str(tmp_path / "shared.sqlite3")
    template = Task(name="job", func=_noop, dynamic=True)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    expected = {f"i{i:03}" for i in range(INSTANCES)}
    outputs = [tmp_path / f"worker{n}.txt" for n in range(2)]
    workers = [
        subprocess.Popen(  # noqa: ASYNC220 - short-lived fork, the waits below are asynchronous
            [sys.executable, str(WORKER), database, str(output)], stderr=subprocess.PIPE, text=True
        )
        for output in outputs
    ]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_SECONDS
        # Both workers are polling before anything is due, so they compete for the same instances.
        while not _all_ready(outputs) and loop.time() < deadline:
            assert all(w.poll() is None for w in workers), "a worker exited early"
            await asyncio.sleep(0.05)
        async with sqlite_repository(sqlite_database=database) as repo:
            await repo.register_tasks(past, [template.instantiate(name, execute_at=past) for name in sorted(expected)])
        while set(_executed(outputs)) != expected and loop.time() < deadline:
            assert all(w.poll() is None for w in workers), "a worker exited early"
            await asyncio.sleep(0.1)  # polling a condition with a deadline, not synchronising on time
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        errors = []
        for worker in workers:
            try:
                _, stderr = worker.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                _, stderr = worker.communicate()
            errors.append(stderr[-2000:])

    executed = _executed(outputs)
    assert set(executed) == expected, f"missing: {sorted(expected - set(executed))[:10]}; stderr: {errors}"
    duplicates = sorted({name for name in executed if executed.count(name) > 1})
    assert duplicates == [], f"ran more than once: {duplicates[:10]}"
    assert all("Traceback" not in stderr for stderr in errors), errors
