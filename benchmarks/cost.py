"""The worker's cost per execution, measured in ways that do not depend on the machine's load.

``throughput.py`` measures executions per second, which swing with whatever else the machine runs.
This script measures what one worker spends per execution while draining N due one-off instances
(populated beforehand by another process, so only the drain is counted):

* **CPU**: the worker process's CPU time (``time.process_time``) over the drain, divided by N.
  Steadier than wall time, though still somewhat inflated by a busy machine (shared caches).
* **Redis server CPU** (Redis only): the server's CPU time (``INFO cpu``, main thread and children)
  over the drain, divided by N. The server is shared, so anything else talking to it is counted too.
* **instructions** (``--callgrind``, needs valgrind): the worker runs under
  ``valgrind --tool=callgrind`` twice, draining N and 5 * N instances; the difference in
  instructions executed divided by 4 * N cancels start-up and shutdown, leaving the
  instructions per execution. Independent of load; use it to compare changes.

    python benchmarks/cost.py --backend redis -n 4000              # CPU only
    python benchmarks/cost.py --backend redis -n 1000 --callgrind  # and instructions (a minute or two)

Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import random
import re
import string
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import backend_config  # noqa: E402
from throughput import drop_run_data  # noqa: E402
from throughput import make_app  # noqa: E402
from throughput import redis_client  # noqa: E402
from throughput import settle_server  # noqa: E402


def populate(backend: str, config: dict[str, Any], n: int, batch_size: int) -> None:
    """Stores ``n`` one-off instances that are already due (in this process, not the measured one)."""

    async def main() -> None:
        import datetime

        app = make_app(backend, config, batch_size)

        @app.dynamic_task(name="drain")
        async def drain(context: Any) -> None:
            del context

        past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
        async with app.create() as ctx:
            for start in range(0, n, 100):
                await asyncio.gather(
                    *(ctx.schedule_task(drain, str(i), execute_at=past) for i in range(start, min(n, start + 100)))
                )

    asyncio.run(main())


def drain(backend: str, config: dict[str, Any], n: int, batch_size: int) -> dict[str, Any]:
    """Runs one worker until ``n`` executions happened; the drain's CPU time and wall time."""
    result: dict[str, Any] = {}

    async def main() -> None:
        app = make_app(backend, config, batch_size)
        executed = 0
        done = asyncio.Event()

        @app.dynamic_task(name="drain")
        async def drain(context: Any) -> None:
            nonlocal executed
            del context
            executed += 1
            if executed >= n:
                done.set()

        async with app.create() as ctx:
            cpu, wall = time.process_time(), time.perf_counter()
            loop = asyncio.create_task(ctx.run())
            await done.wait()
            result["cpu_s"] = time.process_time() - cpu
            result["wall_s"] = time.perf_counter() - wall
            ctx.shutdown()
            await loop
        result["executed"] = executed

    asyncio.run(main())
    return result


def redis_cpu_seconds(config: dict[str, Any]) -> float | None:
    """The Redis server's CPU time so far (user + system), or None for other backends."""
    client = redis_client(config)
    if client is None:
        return None
    try:
        info = client.info("cpu")
    finally:
        client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def run_worker(argv: list[str], *, callgrind: pathlib.Path | None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent / "operator")}
    prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={callgrind}"] if callgrind else []
    done = subprocess.run(
        [*prefix, sys.executable, str(pathlib.Path(__file__).resolve()), *argv],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if callgrind is not None:
        totals = re.search(r"^(?:summary|totals): (\d+)", callgrind.read_text(), re.MULTILINE)
        parsed["instructions"] = int(totals.group(1)) if totals else None
    return parsed


def measure(
    backend: str,
    n: int,
    batch_size: int,
    *,
    callgrind: pathlib.Path | None,
    workdir: pathlib.Path,
    extra: dict[str, Any],
) -> Any:
    run_id = "".join(random.choices(string.ascii_lowercase, k=10))
    config = {**backend_config(backend, workdir, run_id), **extra}
    populate(backend, config, n, batch_size)
    settle_server(config)  # the snapshot populating triggers is not the drain's cost
    argv = ["--child", "--backend", backend, "-n", str(n), "--batch-size", str(batch_size), "--config"]
    try:
        server_before = redis_cpu_seconds(config)
        result = run_worker([*argv, json.dumps(config)], callgrind=callgrind)
        server_after = redis_cpu_seconds(config)
    finally:
        drop_run_data(config)
    if server_before is not None and server_after is not None:
        result["server_cpu_s"] = server_after - server_before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="redis", help="a backend of throughput.py, not memory (default redis)")
    parser.add_argument("-n", "--instances", type=int, default=4000, help="N: due one-offs drained per run")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--concurrency-limit", type=int, help="the app's concurrency_limit (default: the app's, 100)")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions per execution (valgrind)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.backend == "memory":
        raise SystemExit("memory: the state lives in the worker, there is nothing to populate beforehand")

    if options.child:
        config = json.loads(options.config)
        print(json.dumps(drain(options.backend, config, options.instances, options.batch_size)))
        return

    n = options.instances
    extra = {"concurrency_limit": options.concurrency_limit} if options.concurrency_limit else {}
    with tempfile.TemporaryDirectory(prefix="pyncette-cost-") as tmp:
        workdir = pathlib.Path(tmp)
        plain = measure(options.backend, n, options.batch_size, callgrind=None, workdir=workdir, extra=extra)
        report = {
            "backend": options.backend,
            "n": n,
            "cpu_us_per_execution": round(plain["cpu_s"] / n * 1e6, 1),
            "wall_exec_per_s": round(n / plain["wall_s"]),
        }
        if "server_cpu_s" in plain:
            # Includes the worker's start-up and shutdown calls: a few round trips, small beside N.
            report["server_cpu_us_per_execution"] = round(plain["server_cpu_s"] / n * 1e6, 1)
        if options.callgrind:
            small = measure(
                options.backend, n, options.batch_size, callgrind=workdir / "small.out", workdir=workdir, extra=extra
            )
            large = measure(
                options.backend,
                5 * n,
                options.batch_size,
                callgrind=workdir / "large.out",
                workdir=workdir,
                extra=extra,
            )
            if small["instructions"] and large["instructions"]:
                report["instructions_per_execution"] = round((large["instructions"] - small["instructions"]) / (4 * n))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
