"""Throughput and start-lag benchmark, optionally side by side with pyncette 1.1.0.

Two workloads, each run in a fresh child process per backend:

* **drain**: N dynamic instances, each a one-off whose ``execute_at`` is already past, are drained by
  W worker processes. Reported: executions per second (from the moment every worker is ready to
  the last execution), duplicates (executions beyond the first of an instance) and misses
  (instances never executed before the deadline). Every worker counts executions per instance
  in shared memory, and its own total beside them: while the drain runs, the parent watches only
  the W totals and reads the N per-instance counts once they add up to N. (Scanning all N counts
  every 20 ms took about a third of a core, taken from the workers and the server on a 2-core
  machine.)
  Also reported: the share of the machine's CPU time the hypervisor gave to other guests during
  the drain (``steal`` in ``/proc/stat``); on a shared VM it explains many a slow run.
* **lag**: K recurring instances with intervals spread evenly over 5..15 s run in one process for
  a while; start lag = actual start - scheduled time, reported as p50 and p99.

``--compare`` runs the very same script under pyncette 1.1.0 from the package index, installed
once per Python version into ``~/.cache/pyncette/bench-venv-1.1.0-pyX.Y`` with pip as this machine
is configured (1.1.0 runs on the interpreter that runs this script, as ours does), and prints
both in one table with ratios. The script detects which pyncette it runs on; the workload only
uses the 1.x API, so both do identical work. pyncette 1.1.0 has no in-memory backend: its
default (SQLite ``:memory:``) stands in for "memory", and there a single worker drains.

Numbers only, no assertions: this measures, the tests judge behaviour.

    python benchmarks/throughput.py --compare                      # memory and sqlite
    python benchmarks/throughput.py --backend redis --workers 4    # needs make services-up
    python benchmarks/throughput.py --compare --backend redis --runs 5   # and the spread of five runs
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import os
import pathlib
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from typing import Any

BACKENDS = ["memory", "sqlite", "redis", "postgres", "mysql", "dynamodb"]
REPO = pathlib.Path(__file__).resolve().parents[1]
_PY = f"py{sys.version_info[0]}.{sys.version_info[1]}"
BENCH_VENV = pathlib.Path.home() / ".cache" / "pyncette" / f"bench-venv-1.1.0-{_PY}"  # per Python (see above)
V1_EXTRAS = {"redis": "redis", "postgres": "postgres", "mysql": "mysql", "dynamodb": "dynamodb"}
DRAIN_DEADLINE_SECONDS = 300.0
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# ---------------------------------------------------------------- backend settings


def service_urls() -> dict[str, str]:
    """The same environment overrides and defaults as tests/plugins/services.py."""

    def port(name: str, default: int) -> int:
        return int(os.environ.get(f"PYNCETTE_{name}_PORT", default))

    return {
        "redis": os.environ.get("PYNCETTE_TEST_REDIS_URL") or f"redis://127.0.0.1:{port('REDIS', 16379)}/0",
        "postgres": os.environ.get("PYNCETTE_TEST_POSTGRES_URL")
        or f"postgresql://postgres:postgres@127.0.0.1:{port('POSTGRES', 15432)}/pyncette",
        "mysql": os.environ.get("PYNCETTE_TEST_MYSQL_URL")
        or f"mysql://pyncette:pyncette@127.0.0.1:{port('MYSQL', 13306)}/pyncette",
        "dynamodb": os.environ.get("PYNCETTE_TEST_DYNAMODB_ENDPOINT") or f"http://127.0.0.1:{port('DYNAMODB', 18000)}",
    }


def backend_config(backend: str, workdir: pathlib.Path, run_id: str) -> dict[str, Any]:
    """Pyncette keyword arguments (minus the factory) for a fresh, empty store of ``backend``."""
    urls = service_urls()
    table = f"bench_{run_id}"
    if backend == "memory":
        return {}
    if backend == "sqlite":
        return {"sqlite_database": str(workdir / f"{table}.db")}
    if backend == "redis":
        return {"redis_url": urls["redis"], "redis_namespace": table}
    if backend == "postgres":
        return {"postgres_url": urls["postgres"], "postgres_table_name": table}
    if backend == "mysql":
        from urllib.parse import urlsplit

        parts = urlsplit(urls["mysql"])
        return {
            "mysql_host": parts.hostname or "127.0.0.1",
            "mysql_port": parts.port or 3306,
            "mysql_user": parts.username or "pyncette",
            "mysql_password": parts.password or "",
            "mysql_database": parts.path.lstrip("/") or "pyncette",
            "mysql_table_name": table,
        }
    if backend == "dynamodb":
        return {
            "dynamodb_endpoint": urls["dynamodb"],
            "dynamodb_region_name": "us-east-1",
            "dynamodb_table_name": table,
        }
    raise SystemExit(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def make_app(backend: str, config: dict[str, Any], batch_size: int) -> Any:
    """A Pyncette app on ``backend``, through the API both 1.x and this version understand."""
    from pyncette import Pyncette

    kwargs: dict[str, Any] = {**config, "batch_size": batch_size}
    if backend in V1_EXTRAS:
        import importlib

        module = importlib.import_module(f"pyncette.{backend}")
        kwargs["repository_factory"] = getattr(module, f"{backend}_repository")
    return Pyncette(**kwargs)


def pyncette_version() -> str:
    import pyncette

    return str(getattr(pyncette, "__version__", "?"))


# ---------------------------------------------------------------- drain workload


def _declare_drain(app: Any, counts: Any, done: Any, last: Any, slot: int, n: int) -> Any:
    @app.dynamic_task(name="drain")
    async def drain(context: Any) -> None:
        counts[slot * n + int(context.task.name)] += 1
        done[slot] += 1
        last[slot] = time.time()

    return drain


async def _populate(ctx: Any, task: Any, n: int) -> None:
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1)
    for start in range(0, n, 50):
        await asyncio.gather(
            *(ctx.schedule_task(task, str(i), execute_at=past) for i in range(start, min(n, start + 50)))
        )


def _drain_worker(
    args: dict[str, Any], slot: int, counts: Any, done: Any, first: Any, last: Any, ready: Any, stop: Any
) -> None:
    async def main() -> None:
        app = make_app(args["backend"], args["config"], args["batch_size"])
        task = _declare_drain(app, counts, done, last, slot, args["n"])
        async with app.create() as ctx:
            if args["populate_in_worker"]:
                await _populate(ctx, task, args["n"])
            ready.wait()
            first[slot] = time.time()  # each worker's own start: the parent may be scheduled late
            loop = asyncio.create_task(ctx.run())
            await asyncio.to_thread(stop.wait)
            ctx.shutdown()
            await loop

    profile_path = args.get("profile")
    if not profile_path or slot != 0:
        asyncio.run(main())
        return
    # Worker 0 under cProfile: the event loop thread only (the stop watcher thread is idle).
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(main())
    finally:
        profiler.disable()
        profiler.dump_stats(profile_path)
        with open(f"{profile_path}.txt", "w") as summary:
            stats = pstats.Stats(profiler, stream=summary).strip_dirs()
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(30)


def run_drain(backend: str, n: int, workers: int, batch_size: int, profile: str | None = None) -> dict[str, Any]:
    if backend == "memory":
        workers = 1  # in-process state: nothing to share between processes
    run_id = "".join(random.choices(string.ascii_lowercase, k=10))  # 1.x table names: letters and _ only
    with tempfile.TemporaryDirectory(prefix="pyncette-bench-") as tmp:
        config = backend_config(backend, pathlib.Path(tmp), run_id)
        args = {
            "backend": backend,
            "config": config,
            "batch_size": batch_size,
            "n": n,
            "populate_in_worker": False,
            "profile": profile,
        }
        if backend == "memory":
            args["populate_in_worker"] = True
        else:

            async def populate() -> None:
                app = make_app(backend, config, batch_size)
                task = _declare_drain(app, [0] * n, [0], [0.0], 0, n)
                async with app.create() as ctx:
                    await _populate(ctx, task, n)

            asyncio.run(populate())
            settle_server(config)

        try:
            return _timed_drain(args, n, workers)
        finally:
            drop_run_data(config)


def _cpu_ticks() -> list[int] | None:
    """The machine's CPU time counters (``/proc/stat``: user ... steal), or None off Linux."""
    try:
        with open("/proc/stat") as stat:
            return [int(value) for value in stat.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _steal_percent(before: list[int] | None, after: list[int] | None) -> float | None:
    """The share of CPU time the hypervisor gave to other guests in between (``steal``), in percent.
    On a shared VM a drain that loses time to its neighbours is slower for reasons outside the code."""
    if before is None or after is None:
        return None
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return 100.0 * spent[7] / total if total > 0 else None


def _timed_drain(args: dict[str, Any], n: int, workers: int) -> dict[str, Any]:
    """Starts W worker processes on the populated store and times them until all N ran once."""
    mp = multiprocessing.get_context("spawn")
    counts = mp.RawArray("i", workers * n)
    done = mp.RawArray("q", workers)  # executions per worker, duplicates included
    first = mp.RawArray("d", workers)
    last = mp.RawArray("d", workers)
    ready = mp.Barrier(workers + 1)
    stop = mp.Event()
    processes = [
        mp.Process(target=_drain_worker, args=(args, slot, counts, done, first, last, ready, stop))
        for slot in range(workers)
    ]
    for process in processes:
        process.start()
    ready.wait()
    ticks = _cpu_ticks()
    deadline = time.time() + DRAIN_DEADLINE_SECONDS
    while time.time() < deadline:
        alive = any(p.is_alive() for p in processes)
        # The full scan only once the totals say it can succeed (or when giving up on dead workers).
        if sum(done) >= n or not alive:
            executed = sum(1 for i in range(n) if any(counts[w * n + i] for w in range(workers)))
            if executed == n or not alive:
                break
        time.sleep(0.02)
    steal = _steal_percent(ticks, _cpu_ticks())
    time.sleep(0.2)  # let in-flight duplicates, if any, land
    stop.set()
    for process in processes:
        process.join(60)
        if process.is_alive():
            process.kill()
    totals = [sum(counts[w * n + i] for w in range(workers)) for i in range(n)]
    started = min(first)
    finished = max(last) if max(last) > 0 else time.time()
    elapsed = max(finished - started, 1e-9)
    executed = sum(1 for t in totals if t)
    return {
        "workers": workers,
        "exec_per_s": executed / elapsed,
        "seconds": elapsed,
        "duplicates": sum(t - 1 for t in totals if t > 1),
        "misses": sum(1 for t in totals if t == 0),
        "steal_pct": steal,
    }


# ---------------------------------------------------------------- lag workload


def run_lag(backend: str, k: int, seconds: float, batch_size: int) -> dict[str, Any]:
    run_id = "".join(random.choices(string.ascii_lowercase, k=10))  # 1.x table names: letters and _ only
    lags: list[float] = []

    async def main(config: dict[str, Any]) -> None:
        app = make_app(backend, config, batch_size)

        @app.dynamic_task(name="lag")
        async def lag(context: Any) -> None:
            lags.append(time.time() - context.scheduled_at.timestamp())

        async with app.create() as ctx:
            for start in range(0, k, 50):
                await asyncio.gather(
                    *(
                        ctx.schedule_task(lag, str(i), interval=datetime.timedelta(seconds=5 + 10 * i / k))
                        for i in range(start, min(k, start + 50))
                    )
                )
            ticks = _cpu_ticks()
            loop = asyncio.create_task(ctx.run())
            await asyncio.sleep(seconds)
            ctx.shutdown()
            await loop
            steal.append(_steal_percent(ticks, _cpu_ticks()))

    steal: list[float | None] = []
    with tempfile.TemporaryDirectory(prefix="pyncette-bench-") as tmp:
        config = backend_config(backend, pathlib.Path(tmp), run_id)
        try:
            asyncio.run(main(config))
        finally:
            drop_run_data(config)
    lag_steal = steal[0] if steal else None
    if not lags:
        return {"samples": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "lag_steal_pct": lag_steal}
    cuts = statistics.quantiles(lags, n=100) if len(lags) > 1 else [lags[0]] * 99
    return {
        "samples": len(lags),
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(lags) * 1000,
        "lag_steal_pct": lag_steal,
    }


# ---------------------------------------------------------------- the server around a measurement

SETTLE_DEADLINE_SECONDS = 120.0


def redis_client(config: dict[str, Any]) -> Any:
    """A synchronous client for the run's Redis, or None for other backends (redis-py is installed
    with either version's redis extra)."""
    url = config.get("redis_url")
    if not url:
        return None
    import redis

    return redis.Redis.from_url(url)


def _wait_for_background_saves(client: Any) -> None:
    deadline = time.monotonic() + SETTLE_DEADLINE_SECONDS
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not (info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress")) and not info.get(
            "aof_rewrite_scheduled"
        ):
            return
        time.sleep(0.05)
    raise SystemExit("redis: a background save did not finish within two minutes")


def settle_server(config: dict[str, Any]) -> None:
    """Redis: the background persistence that populating caused happens now, before the clock starts.

    The service instance persists (AOF and RDB snapshots, as production ones do). Populating N
    instances makes tens of thousands of changes, and the snapshot (``save 60 10000``) or AOF rewrite
    they trigger forks a process that writes the whole data set: on a 2-core machine it takes a core
    from whatever drain it overlaps, for either version, at random. So the AOF is rewritten and a
    snapshot taken here, and both awaited; the save rules then stay quiet for a minute and the AOF is
    small again. Both versions get the same settled server. Other backends: nothing.
    """
    client = redis_client(config)
    if client is None:
        return
    try:
        _wait_for_background_saves(client)
        if client.info("persistence").get("aof_enabled"):
            client.bgrewriteaof()
            _wait_for_background_saves(client)
        client.bgsave()
        _wait_for_background_saves(client)
    finally:
        client.close()


def drop_run_data(config: dict[str, Any]) -> None:
    """Deletes what the run stored, so that runs do not pile up data the server keeps working on:
    Redis snapshots write every key, and PostgreSQL's autovacuum goes through a drained table's
    10,000 dead rows while the next workload is being measured. Redis: the run's keys (both
    versions keep theirs under ``pyncette:<namespace>:``). PostgreSQL, MySQL and DynamoDB: the run's
    table. Other backends: nothing (SQLite's file goes with its temporary directory). Best effort: a
    failure is reported and the measurement kept."""
    try:
        _drop(config)
    except Exception as e:
        print(f"could not delete the run's data: {type(e).__name__}: {e}", file=sys.stderr)


def _drop(config: dict[str, Any]) -> None:
    client = redis_client(config)
    if client is not None:
        try:
            names = list(client.scan_iter(match=f"pyncette:{config['redis_namespace']}:*", count=1000))
            for first in range(0, len(names), 1000):
                client.unlink(*names[first : first + 1000])
        finally:
            client.close()
    elif "postgres_table_name" in config:
        import asyncpg

        async def drop() -> None:
            connection = await asyncpg.connect(config["postgres_url"])
            try:
                await connection.execute(f'DROP TABLE IF EXISTS "{config["postgres_table_name"]}"')
            finally:
                await connection.close()

        asyncio.run(drop())
    elif "mysql_table_name" in config:
        import pymysql

        connection = pymysql.connect(
            host=config["mysql_host"],
            port=config["mysql_port"],
            user=config["mysql_user"],
            password=config["mysql_password"],
            database=config["mysql_database"],
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE IF EXISTS `{config['mysql_table_name']}`")
            connection.commit()
        finally:
            connection.close()
    elif "dynamodb_table_name" in config:
        import aioboto3  # both versions' dynamodb extra installs it

        async def delete_table() -> None:
            session = aioboto3.Session()
            async with session.client(
                "dynamodb", endpoint_url=config["dynamodb_endpoint"], region_name=config["dynamodb_region_name"]
            ) as client:
                await client.delete_table(TableName=config["dynamodb_table_name"])

        asyncio.run(delete_table())


# ---------------------------------------------------------------- driver


def run_child(python: str, argv: list[str], *, ours: bool) -> dict[str, Any]:
    env = {**os.environ, **DUMMY_AWS}
    env.pop("PYTHONPATH", None)
    if ours:
        env["PYTHONPATH"] = str(REPO / "operator")
    result = subprocess.run(
        [python, str(pathlib.Path(__file__).resolve()), *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=DRAIN_DEADLINE_SECONDS + 120,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        return {"error": tail or f"exit status {result.returncode}"}
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def ensure_v1_venv(backends: list[str]) -> str:
    python = BENCH_VENV / "bin" / "python"
    extras = sorted({V1_EXTRAS[b] for b in backends if b in V1_EXTRAS})
    requirement = f"pyncette[{','.join(extras)}]==1.1.0" if extras else "pyncette==1.1.0"
    stamp = BENCH_VENV / f".installed-{'-'.join(extras) or 'base'}"
    if not python.exists():
        print(f"Creating {BENCH_VENV} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    if not stamp.exists():
        print(f"Installing {requirement} into it ...", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "-q", requirement], check=True)
        stamp.touch()
    return str(python)


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(ours: Any, theirs: Any, *, higher_is_better: bool) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not ours or not theirs:
        return "-"
    better = ours / theirs if higher_is_better else theirs / ours
    return f"{better:.1f}x"


def print_table(rows: list[dict[str, Any]], compare: bool) -> None:
    header = ["backend", "metric", "ours"] + (["1.1.0", "ours better by"] if compare else [])
    lines = [header]
    for row in rows:
        for metric, key, digits, higher in [
            ("drain exec/s", "exec_per_s", 0, True),
            ("drain duplicates", "duplicates", 0, None),
            ("drain misses", "misses", 0, None),
            ("drain steal % (VM)", "steal_pct", 1, None),
            ("start lag p50 (ms)", "p50_ms", 1, False),
            ("start lag p99 (ms)", "p99_ms", 1, False),
            ("start lag steal % (VM)", "lag_steal_pct", 1, None),
        ]:
            ours = row["ours"].get(key)
            line = [row["backend"], metric, fmt(ours, digits)]
            if compare:
                theirs = row["v1"].get(key)
                line += [
                    fmt(theirs, digits),
                    ratio(ours, theirs, higher_is_better=bool(higher)) if higher is not None else "",
                ]
            lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print(
            "  ".join(
                str(cell).ljust(widths[j]) if j < 2 else str(cell).rjust(widths[j]) for j, cell in enumerate(line)
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable; default: memory and sqlite")
    parser.add_argument("-n", "--instances", type=int, default=1000, help="N: due one-off instances to drain")
    parser.add_argument("-w", "--workers", type=int, default=2, help="W: worker processes draining (memory: always 1)")
    parser.add_argument("--lag-tasks", type=int, default=1000, help="K: recurring instances for the lag workload")
    parser.add_argument("--lag-seconds", type=float, default=15.0, help="how long the lag workload runs")
    parser.add_argument("--batch-size", type=int, default=100, help="batch_size given to both versions")
    parser.add_argument("--compare", action="store_true", help="also run pyncette 1.1.0 and print ratios")
    parser.add_argument(
        "--runs", type=int, default=1, help="repeat everything this many times and print the spread (default 1)"
    )
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    parser.add_argument(
        "--workload", action="append", choices=["drain", "lag"], help="repeatable; default: drain and lag"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile worker 0 of our drain with cProfile: DIR/drain-BACKEND.prof (snakeviz, pstats) and .prof.txt",
    )
    parser.add_argument("--child", choices=["drain", "lag"], help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.runs < 1:
        parser.error(f"--runs: must be at least 1, got {options.runs}")
    backends = options.backend or ["memory", "sqlite"]

    if options.child:
        backend = backends[0]
        if options.child == "drain":
            result = run_drain(backend, options.instances, options.workers, options.batch_size, options.profile)
        else:
            result = run_lag(backend, options.lag_tasks, options.lag_seconds, options.batch_size)
        print(json.dumps({"version": pyncette_version(), **result}))
        return

    v1_python = ensure_v1_venv(backends) if options.compare else None
    common = ["--instances", str(options.instances), "--workers", str(options.workers)]
    common += ["--lag-tasks", str(options.lag_tasks), "--lag-seconds", str(options.lag_seconds)]
    common += ["--batch-size", str(options.batch_size)]
    all_runs: list[list[dict[str, Any]]] = []
    for run in range(options.runs):
        if options.runs > 1:
            print(f"run {run + 1} of {options.runs}", file=sys.stderr, flush=True)
        all_runs.append(measure(options, backends, v1_python, common))
    rows = all_runs[-1]

    print()
    print(
        f"pyncette throughput benchmark: drain N={options.instances} due one-offs with W={options.workers} processes "
        f"(memory: 1); start lag of K={options.lag_tasks} interval instances over {options.lag_seconds:.0f}s; "
        f"batch_size={options.batch_size}, poll_interval=1s (both defaults)"
    )
    if options.runs > 1:
        print(f"the last of {options.runs} runs:")
    print_table(rows, bool(v1_python))
    if options.runs > 1:
        print()
        print_spread(all_runs, bool(v1_python))
    if options.json:
        print(json.dumps(all_runs if options.runs > 1 else rows, indent=2, default=str))


def measure(options: argparse.Namespace, backends: list[str], v1_python: str | None, common: list[str]) -> list[Any]:
    """One run: every backend, ours then 1.1.0 (with ``--compare``), each workload in a fresh process."""
    rows = []
    for backend in backends:
        row: dict[str, Any] = {"backend": backend, "ours": {}, "v1": {}}
        runs = [("ours", sys.executable, True)] + ([("v1", v1_python, False)] if v1_python else [])
        for label, python, ours in runs:
            assert python is not None
            for workload in options.workload or ["drain", "lag"]:
                print(f"[{backend}] {label}: {workload} ...", file=sys.stderr, flush=True)
                extra = []
                if options.profile and ours and workload == "drain":
                    pathlib.Path(options.profile).mkdir(parents=True, exist_ok=True)
                    target = pathlib.Path(options.profile).resolve() / f"drain-{backend}.prof"
                    extra = ["--profile", str(target)]
                    print(f"[{backend}] profile of worker 0: {target} (summary: {target}.txt)", file=sys.stderr)
                result = run_child(python, ["--child", workload, "--backend", backend, *common, *extra], ours=ours)
                if "error" in result:
                    print(f"[{backend}] {label} {workload} failed: {result['error']}", file=sys.stderr)
                row[label].update({f"{workload}_{k}" if k in ("error", "version") else k: v for k, v in result.items()})
        rows.append(row)
    return rows


def _dup_miss(result: dict[str, Any]) -> str:
    """``duplicates/misses`` of one drain, or ``-`` if it did not run."""
    if "duplicates" not in result:
        return "-"
    return f"{result['duplicates']}/{result['misses']}"


def print_spread(all_runs: list[list[dict[str, Any]]], compare: bool) -> None:
    """Drain exec/s and start lag p99 of every run, one line per run and backend, then min / median /
    max: on a shared machine one run says little."""
    header = ["run", "backend", "ours exec/s"] + (["1.1.0 exec/s", "ratio"] if compare else [])
    header += ["ours lag p99 ms", "dup/miss" + (" (ours, 1.1.0)" if compare else ""), "steal % (ours' drain, lag)"]
    lines: list[list[str]] = [header]
    per_backend: dict[str, list[tuple[float, float | None]]] = {}
    for number, rows in enumerate(all_runs, start=1):
        for row in rows:
            ours, theirs = row["ours"].get("exec_per_s"), row["v1"].get("exec_per_s")
            line = [str(number), row["backend"], fmt(ours)]
            if compare:
                line += [fmt(theirs), ratio(ours, theirs, higher_is_better=True)]
            checks = [_dup_miss(row["ours"])] + ([_dup_miss(row["v1"])] if compare else [])
            lines.append(
                [
                    *line,
                    fmt(row["ours"].get("p99_ms"), 1),
                    ", ".join(checks),
                    f"{fmt(row['ours'].get('steal_pct'), 1)}, {fmt(row['ours'].get('lag_steal_pct'), 1)}",
                ]
            )
            if isinstance(ours, int | float):
                both = ours / theirs if isinstance(theirs, int | float) and theirs else None
                per_backend.setdefault(row["backend"], []).append((ours, both))
    for backend, values in per_backend.items():
        rates = sorted(v for v, _ in values)
        ratios = sorted(r for _, r in values if r is not None)
        line = [
            "min/med/max",
            backend,
            f"{rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f}",
        ]
        if compare:
            spread = f"{ratios[0]:.1f} / {statistics.median(ratios):.1f} / {ratios[-1]:.1f}x" if ratios else "-"
            line += ["", spread]
        lines.append([*line, "", "", ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j]) for j, cell in enumerate(line)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
