"""A process killed with SIGKILL while holding a lease: its instance runs again on another process.

At-least-once: nobody commits or unlocks the killed process's lease, so the entry becomes due
again when the lease expires, and a surviving process runs it.
"""

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
DEADLINE_SECONDS = 60


async def _noop(context: Context) -> None:
    pass


def _lines(output: Path) -> list[str]:
    return output.read_text(encoding="utf-8").splitlines() if output.exists() else []


async def _wait_for_line(output: Path, line: str, worker: subprocess.Popen[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while line not in _lines(output):
        assert worker.poll() is None, f"worker exited early: {worker.communicate()[1][-2000:]}"
        assert loop.time() < deadline, f"{line!r} never appeared in {output.name}"
        await asyncio.sleep(0.05)  # polling a condition with a deadline, not synchronising on time


def _start(database: str, output: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), database, str(output), *extra], stderr=subprocess.PIPE, text=True
    )


@pytest.mark.slow
async def test_a_killed_workers_lease_expires_and_another_process_runs_the_instance(tmp_path: Path) -> None:
    database = str(tmp_path / "shared.sqlite3")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    template = Task(name="job", func=_noop, dynamic=True)
    async with sqlite_repository(sqlite_database=database) as repo:
        await repo.register_task(
            past, template.instantiate("stuck", execute_at=past, lease_duration=datetime.timedelta(seconds=1))
        )

    first_output, second_output = tmp_path / "first.txt", tmp_path / "second.txt"
    first = _start(database, first_output, "hang")
    second: subprocess.Popen[str] | None = None
    try:
        await _wait_for_line(first_output, "stuck", first)
        first.kill()
        first.communicate()
        second = _start(database, second_output)
        await _wait_for_line(second_output, "stuck", second)
        second.send_signal(signal.SIGTERM)  # graceful: the survivor flushes its commit before exiting
        second.communicate(timeout=30)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.communicate()
    async with sqlite_repository(sqlite_database=database) as repo:
        assert await repo.get_task_state(past, template.instantiate("stuck", execute_at=past)) is None, (
            "the survivor committed the one-off instance"
        )
