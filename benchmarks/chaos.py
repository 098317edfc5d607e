"""Chaos soak: worker processes under random kill -9, database restarts and network faults.

For each backend (SQLite, Redis, PostgreSQL, MariaDB) this starts a private database server on its
own port and data directory (hack/services/lib.sh with overridden ports, so the shared test
servers are never touched), a Toxiproxy proxy in front of it (Toxiproxy from hack/services), and
``--workers`` worker processes running one app: ``--tasks`` AT_LEAST_ONCE and ``--tasks``
AT_MOST_ONCE interval tasks (every ``--interval`` seconds, short leases, ``backend_timeout`` 1 s).
A driver then runs ``--cycles`` fault cycles, each picked at random:

* ``kill``: kill -9 a random worker, start a replacement;
* ``restart``: stop and start the database server (same data directory);
* ``blackhole``: drop every byte between the workers and the server for 1-4 s (half-open
  connections: nothing is reset, calls in flight never get an answer);
* ``reset``: reset every connection for 1-3 s.

SQLite has no server or network: its cycles are all ``kill``.

Every run appends one line to the worker's record file with ``os.write`` (it survives kill -9):
AT_LEAST_ONCE runs when they finish, AT_MOST_ONCE runs when they start. At the end the driver heals
everything, waits until every AT_LEAST_ONCE task has caught up past the end of the faults, and
counts, per scheduled slot:

* **lost**: an AT_LEAST_ONCE slot (between the task's first run and the end) that never finished;
* **doubled**: an AT_MOST_ONCE slot that started more than once;
* **dead**: a worker that is not running or whose ``/livez`` does not answer 200.

The soak stops by itself: ``--cycles`` per backend, every wait bounded, ``--max-seconds`` per
backend overall; servers, proxies and workers are stopped on the way out. Exit status 1 if anything
was lost, doubled or dead (or a backend could not run).

    .venv/bin/python benchmarks/chaos.py                                   # 100 cycles on all four
    .venv/bin/python benchmarks/chaos.py --backends redis --cycles 10      # a quick look
    .venv/bin/python benchmarks/chaos.py --json results.json

Needs the Debian packages and Toxiproxy that ``make services-up`` installs and builds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import faultkit  # noqa: E402 - after the path above

SERVICES = REPO / "hack" / "services"
ALL_BACKENDS = ("sqlite", "redis", "postgres", "mariadb")
#: Private ports, away from the shared test servers (16379, 15432, 13306).
PORTS = {"redis": 26379, "postgres": 25432, "mariadb": 23306}
LEASE_SECONDS = 3.0
BACKEND_TIMEOUT = 1.0


# --------------------------------------------------------------------------------------------
# The worker: one app process


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="chaos.py worker")
    parser.add_argument("--config", required=True, help="JSON: backend keywords for Pyncette")
    parser.add_argument("--records", required=True)
    parser.add_argument("--health-port", type=int, required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--interval", type=float, required=True)
    args = parser.parse_args(argv)

    from pyncette import Context
    from pyncette import ExecutionMode
    from pyncette import Pyncette
    from pyncette.healthcheck import use_healthcheck_server

    config: dict[str, Any] = json.loads(args.config)
    factory_path = config.pop("repository_factory")
    module, _, name = factory_path.rpartition(".")
    factory = getattr(__import__(module, fromlist=[name]), name)
    records = os.open(args.records, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()

    def record(kind: str, context: Context) -> None:
        line = f"{kind} {context.task.name} {context.scheduled_at.timestamp():.6f} {pid}\n"
        os.write(records, line.encode())

    app = Pyncette(
        repository_factory=factory,
        poll_interval=datetime.timedelta(seconds=0.2),
        backend_timeout=BACKEND_TIMEOUT,
        **config,
    )
    interval = datetime.timedelta(seconds=args.interval)
    lease = datetime.timedelta(seconds=LEASE_SECONDS)
    rng = random.Random()

    for index in range(args.tasks):

        async def at_least_once(context: Context) -> None:
            await asyncio.sleep(rng.uniform(0, 0.2))
            record("ALO", context)

        async def at_most_once(context: Context) -> None:
            record("AMO", context)
            await asyncio.sleep(rng.uniform(0, 0.2))

        app.task(
            name=f"alo{index}", interval=interval, execution_mode=ExecutionMode.AT_LEAST_ONCE, lease_duration=lease
        )(at_least_once)
        app.task(
            name=f"amo{index}", interval=interval, execution_mode=ExecutionMode.AT_MOST_ONCE, lease_duration=lease
        )(at_most_once)

    use_healthcheck_server(app, port=args.health_port, bind_address="127.0.0.1")
    app.main()


# --------------------------------------------------------------------------------------------
# Private database servers (hack/services/lib.sh with our own directory and ports)


@dataclasses.dataclass
class Server:
    backend: str
    directory: Path
    port_offset: int = 0

    @property
    def port(self) -> int:
        return PORTS[self.backend] + self.port_offset

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYNCETTE_SERVICES_DIR"] = str(self.directory)
        env["PYNCETTE_REDIS_PORT"] = str(self.port)
        env["PYNCETTE_POSTGRES_PORT"] = str(self.port)
        env["PYNCETTE_MYSQL_PORT"] = str(self.port)
        return env

    def _script(self, script: str, timeout: float = 180) -> None:
        result = subprocess.run(
            ["bash", str(SERVICES / script), self.backend],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{script} {self.backend} failed: {(result.stdout + result.stderr)[-2000:]}")

    def up(self) -> None:
        self._script("up.sh")

    def restart(self) -> None:
        self._script("restart.sh")

    def down(self) -> None:
        with contextlib.suppress(Exception):
            self._script("down.sh", timeout=120)

    @property
    def url(self) -> str:
        port = self.port
        return {
            "redis": f"redis://127.0.0.1:{port}/0",
            "postgres": f"postgresql://postgres:postgres@127.0.0.1:{port}/pyncette",
            "mariadb": f"mysql://pyncette:pyncette@127.0.0.1:{port}/pyncette",
        }[self.backend]


def backend_config(backend: str, proxy: faultkit.Proxy | None, directory: Path, unique: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {
            "repository_factory": "pyncette.sqlite.sqlite_repository",
            "sqlite_database": str(directory / "chaos.db"),
        }
    assert proxy is not None
    if backend == "redis":
        return {
            "repository_factory": "pyncette.redis.redis_repository",
            "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
            "redis_namespace": unique,
        }
    if backend == "postgres":
        return {
            "repository_factory": "pyncette.postgres.postgres_repository",
            "postgres_url": f"postgresql://postgres:postgres@127.0.0.1:{proxy.port}/pyncette",
            "postgres_table_name": unique,
        }
    return {
        "repository_factory": "pyncette.mysql.mysql_repository",
        "mysql_host": "127.0.0.1",
        "mysql_port": proxy.port,
        "mysql_user": "pyncette",
        "mysql_password": "pyncette",
        "mysql_database": "pyncette",
        "mysql_table_name": unique,
    }


# --------------------------------------------------------------------------------------------
# The driver


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Worker:
    process: subprocess.Popen[bytes]
    health_port: int

    def alive(self) -> bool:
        return self.process.poll() is None

    def probe(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as r:
                return bool(r.status == 200)
        except OSError:
            return False


@dataclasses.dataclass
class Result:
    backend: str
    cycles: int = 0
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    alo_slots: int = 0
    amo_slots: int = 0
    lost: int = 0
    doubled: int = 0
    dead: int = 0
    seconds: float = 0.0
    error: str | None = None
    lost_examples: list[str] = dataclasses.field(default_factory=list)
    doubled_examples: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.lost == 0 and self.doubled == 0 and self.dead == 0


class Soak:
    def __init__(self, backend: str, args: argparse.Namespace, root: Path) -> None:
        self.backend = backend
        self.args = args
        self.root = root / backend
        self.root.mkdir(parents=True)
        self.records = self.root / "records"
        self.records.mkdir()
        self.server = Server(backend, self.root / "services", args.port_offset) if backend != "sqlite" else None
        self.proxy: faultkit.Proxy | None = None
        self.workers: list[Worker] = []
        self.spawned = 0
        self.result = Result(backend)
        self.rng = random.Random(args.seed)
        self.deadline = time.monotonic() + args.max_seconds
        self.config: dict[str, Any] = {}

    def log(self, message: str) -> None:
        print(f"[chaos {self.backend} {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def spawn_worker(self) -> Worker:
        port = free_port()
        self.spawned += 1
        log = (self.root / f"worker-{self.spawned}.log").open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "worker",
                "--config",
                json.dumps(self.config),
                "--records",
                str(self.records / f"worker-{self.spawned}.txt"),
                "--health-port",
                str(port),
                "--tasks",
                str(self.args.tasks),
                "--interval",
                str(self.args.interval),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )
        log.close()
        return Worker(process, port)

    def wait(self, condition: Any, what: str, bound: float) -> None:
        end = time.monotonic() + bound
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError(f"timed out after {bound:.0f}s waiting for {what}")
            time.sleep(0.1)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)  # the driver's own pacing between faults, not a test's synchronisation

    # ---- faults

    def fault(self) -> str:
        kinds = ["kill"] if self.backend == "sqlite" else ["kill", "restart", "blackhole", "reset"]
        kind = self.rng.choice(kinds)
        if kind == "kill":
            index = self.rng.randrange(len(self.workers))
            victim = self.workers[index]
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(timeout=30)
            self.pause(self.rng.uniform(0, 1.0))
            replacement = self.spawn_worker()
            self.workers[index] = replacement
            # A worker that cannot reach its backend at start-up exits with one line (a supervisor
            # restarts it): let the replacement get going before the next fault.
            self.wait(lambda: replacement.probe("/readyz"), "the replacement worker to be ready", 120)
        elif kind == "restart":
            assert self.server is not None
            self.server.restart()
        elif kind == "blackhole":
            assert self.proxy is not None
            self.proxy.blackhole()
            self.pause(self.rng.uniform(1.0, 4.0))
            self.proxy.heal()
        else:
            assert self.proxy is not None
            self.proxy.reset()
            self.pause(self.rng.uniform(1.0, 3.0))
            self.proxy.heal()
        return kind

    # ---- the run

    def run(self) -> Result:
        started = time.monotonic()
        try:
            self._run()
        except Exception as e:
            self.result.error = f"{type(e).__name__}: {e}"
            self.log(f"ERROR {self.result.error}")
        finally:
            self.result.seconds = time.monotonic() - started
            self.cleanup()
        return self.result

    def _run(self) -> None:
        unique = f"chaos_{os.getpid()}_{self.backend}"
        if self.server is not None:
            self.log(f"starting a private {self.backend} on port {self.server.port}")
            self.server.up()
            self.proxy = faultkit.create_proxy(self.server.url, prefix=f"chaos_{self.backend}")
        self.config = backend_config(self.backend, self.proxy, self.root, unique)
        self.workers = [self.spawn_worker() for _ in range(self.args.workers)]
        self.wait(lambda: all(w.probe("/readyz") for w in self.workers), "the workers to be ready", 120)
        self.wait(lambda: self.completed_alo(), "the first runs", 60)
        self.log(f"{len(self.workers)} workers ready; {self.args.cycles} fault cycles")
        for cycle in range(self.args.cycles):
            if time.monotonic() > self.deadline:
                self.log(f"--max-seconds reached after {cycle} cycles")
                break
            kind = self.fault()
            self.result.faults[kind] = self.result.faults.get(kind, 0) + 1
            self.result.cycles += 1
            for i, worker in enumerate(self.workers):
                if not worker.alive():
                    raise RuntimeError(f"worker {i} (pid {worker.process.pid}) died on its own after a {kind}")
            self.pause(self.rng.uniform(0.5, 1.5))
            if (cycle + 1) % 10 == 0:
                self.log(f"{cycle + 1} cycles: {dict(self.result.faults)}")
        if self.proxy is not None:
            self.proxy.heal()
        end = time.time()
        # Every AT_LEAST_ONCE task must catch up past the end of the faults (leases of killed workers
        # expire, missed slots run in turn).
        self.wait(
            lambda: (
                all(last >= end for last in self.completed_alo().values())
                and len(self.completed_alo()) == self.args.tasks
            ),
            "every at-least-once task to catch up",
            120,
        )
        self.count(end)
        self.result.dead = sum(1 for w in self.workers if not (w.alive() and w.probe("/livez")))
        self.wait(lambda: all(w.probe("/readyz") for w in self.workers), "every worker to be ready again", 60)

    def lines(self) -> list[tuple[str, str, float]]:
        out = []
        for path in self.records.glob("*.txt"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4:
                    out.append((parts[0], parts[1], float(parts[2])))
        return out

    def completed_alo(self) -> dict[str, float]:
        last: dict[str, float] = {}
        for kind, task, slot in self.lines():
            if kind == "ALO":
                last[task] = max(last.get(task, 0.0), slot)
        return last

    def count(self, end: float) -> None:
        alo: dict[str, set[float]] = collections.defaultdict(set)
        amo: collections.Counter[tuple[str, float]] = collections.Counter()
        for kind, task, slot in self.lines():
            if kind == "ALO":
                alo[task].add(round(slot, 3))
            else:
                amo[(task, round(slot, 3))] += 1
        step = self.args.interval
        for task, slots in sorted(alo.items()):
            first = min(slots)
            expected = [round(first + k * step, 3) for k in range(int((end - first) // step) + 1)]
            self.result.alo_slots += len(expected)
            missing = [s for s in expected if s not in slots]
            self.result.lost += len(missing)
            self.result.lost_examples += [f"{task}@{s}" for s in missing[:3]]
        self.result.amo_slots = len(amo)
        doubled = [key for key, n in amo.items() if n > 1]
        self.result.doubled = len(doubled)
        self.result.doubled_examples = [f"{t}@{s}" for t, s in doubled[:3]]

    def cleanup(self) -> None:
        for worker in self.workers:
            if worker.alive():
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.delete()
        if self.server is not None:
            self.server.down()


def table(results: list[Result]) -> str:
    rows = [
        "| backend | fault cycles (kill / restart / blackhole / reset) | at-least-once slots | lost "
        "| at-most-once slots | doubled | workers dead | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        f = r.faults
        mix = f"{r.cycles} ({f.get('kill', 0)} / {f.get('restart', 0)} / {f.get('blackhole', 0)} / {f.get('reset', 0)})"
        status = "" if r.error is None else f" **error: {r.error}**"
        rows.append(
            f"| {r.backend} | {mix} | {r.alo_slots} | {r.lost} | {r.amo_slots} | {r.doubled} | {r.dead} "
            f"| {r.seconds:.0f}{status} |"
        )
    return "\n".join(rows)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS), help="comma-separated (default: all four)")
    parser.add_argument("--cycles", type=int, default=100, help="fault cycles per backend (default 100)")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--tasks", type=int, default=2, help="tasks of each execution mode (default 2)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between a task's runs (default 0.5)")
    parser.add_argument("--max-seconds", type=float, default=1800, help="stop faulting after this, per backend")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--port-offset", type=int, default=0, help="added to the private servers' ports (26379, 25432, 23306)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, records)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for backend in backends:
        if backend not in ALL_BACKENDS:
            parser.error(f"--backends: unknown backend {backend!r} (expected some of {', '.join(ALL_BACKENDS)})")
    if any(b != "sqlite" for b in backends) and not faultkit.available():
        subprocess.run(["bash", str(SERVICES / "up.sh"), "toxiproxy"], check=True, timeout=900)

    # The postgres OS user must reach the private server's data directory.
    root = Path(tempfile.mkdtemp(prefix="pyncette-chaos-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103
    results = []
    try:
        for backend in backends:
            results.append(Soak(backend, args, root).run())
            print(table(results[-1:]), flush=True)
    finally:
        if args.keep or not all(r.ok for r in results):
            print(f"work directory kept: {root}")
        else:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    print()
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
