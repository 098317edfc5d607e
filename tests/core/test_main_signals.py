"""``app.main()`` as a real process: logging set-up and the two-step SIGINT/SIGTERM shutdown."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 30  # a safety net against hangs, not a timing assertion

APP = """
import asyncio
import datetime
from pyncette import Context, Pyncette

app = Pyncette(poll_interval=datetime.timedelta(seconds=0.2))
release = asyncio.Event()


@app.task(interval=datetime.timedelta(seconds=0.2))
async def {name}(context: Context) -> None:
    print("started", flush=True)
    {body}
    print("finished", flush=True)


if __name__ == "__main__":
    app.main()
"""


def start(tmp_path: pathlib.Path, *, body: str) -> tuple[subprocess.Popen[str], pathlib.Path]:
    script = tmp_path / "app.py"
    script.write_text(APP.format(name="work", body=body))
    log = tmp_path / "output.txt"
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "operator"), "LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"},
    )
    return process, log


def wait_for_output(log: pathlib.Path, text: str) -> str:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        output = log.read_text()
        if text in output:
            return output
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in:\n{log.read_text()[-2000:]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_lets_the_running_task_finish(tmp_path: pathlib.Path, signum: signal.Signals) -> None:
    process, log = start(tmp_path, body="await asyncio.sleep(1)")
    try:
        wait_for_output(log, "started")
        process.send_signal(signum)
        assert process.wait(DEADLINE_SECONDS) == 0
    finally:
        process.kill()
    output = log.read_text()
    # The execution that was running when the signal came completed, and nothing started after it.
    assert "finished" in output
    assert output.count("started") == output.count("finished")
    assert "Initiating graceful shutdown" in output


def test_second_signal_exits_at_once(tmp_path: pathlib.Path) -> None:
    process, log = start(tmp_path, body="await release.wait()")  # never finishes on its own
    try:
        wait_for_output(log, "started")
        process.send_signal(signal.SIGINT)
        wait_for_output(log, "finishing running tasks")
        process.send_signal(signal.SIGINT)
        assert process.wait(DEADLINE_SECONDS) == 1
    finally:
        process.kill()
    output = log.read_text()
    assert "exiting now" in output
    assert "finished" not in output
