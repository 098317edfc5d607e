"""Operator chaos run: three replicas, random kill -9 / SIGTERM / restarts, apiserver restarts and cut
watches, then a count of what went wrong per scheduled slot. Bounded and self-stopping.

For each backend (PostgreSQL and Redis by default) this creates a fresh namespace on the cluster
that KUBECONFIG names (default: the local control plane), with

* Pod tasks on the kwok node: ``* * * * * */10`` with Forbid, Allow and Replace, Pods running 1-3 s,
  and one whose Pods run for an hour but have ``activeDeadlineSeconds: 6``;
* handler tasks (``interval: 10s``, the ``record`` handler of tests/operator/ptask_test_handlers.py,
  which appends every call to a file);

starts three ``pyncette-operator`` replicas that reach the apiserver through a Toxiproxy proxy, and
runs ``--cycles`` chaos cycles: each picks a random replica and kill -9s it, SIGTERMs it, or
restarts it (never leaving fewer than one replica up), then waits 1-4 s. Spread over the cycles
come ``--apiserver-restarts`` restarts of the real kube-apiserver (the shared one: its process is
stopped and started again with the same command line) and ``--watch-cuts`` forced watch expiries
(every connection of every replica to the apiserver is closed for 2 s; kopf re-lists).

Then every replica is started again, the tasks are suspended, the run settles, and it reports per
task and in total:

* **duplicate slots**: scheduled times with two Pods of the same attempt, or two successful Pods
  (Pod tasks), or two handler calls (handler tasks);
* **lost slots**: scheduled times between the first and the last run that have no run and that
  the operator never accounted for. Not lost, and counted apart: a slot whose run the operator
  started (a ``RunStarted`` Event) and whose Pod was deleted since (Replace, activeDeadlineSeconds);
  a slot inside a ``MissedSchedules`` Event's range (CronJob's catch-up rule: a dead replica's
  lease, or a Forbid run that outlasted the period, skips to the latest time); and a Pod task's
  slot during an apiserver restart (no Pod can be created);
* **Pods left Running** and **tasks stuck Running=True** once the runs have settled (the run waits
  up to ``--settle-timeout`` for the simulated node, which lags behind an apiserver restart).

Target: 0 of each. Nothing asserts (the short CI version in tests/operator/test_cluster_chaos.py
does); it prints a table and writes ``--json``.

    .venv/bin/python benchmarks/operator_chaos.py [--backend postgres --backend redis] [--cycles 100]
        [--apiserver-restarts 10] [--watch-cuts 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from dataclasses import field
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from faultkit import Proxy  # noqa: E402
from faultkit import create_proxy  # noqa: E402

OPERATOR = pathlib.Path(sys.executable).parent / "pyncette-operator"
CLUSTER = ROOT / ".cluster"
PERIOD = 10
SIM_TAINT = {"key": "pyncette.dev/simulated", "operator": "Exists", "effect": "NoSchedule"}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(CLUSTER / "kubeconfig")


def kubectl(*args: str, input: str | None = None, check: bool = True, config: str | None = None) -> str:
    binary = CLUSTER / "bin" / "kubectl"
    command = [str(binary if binary.exists() else "kubectl"), "--kubeconfig", config or kubeconfig(), *args]
    for attempt in range(30):
        result = subprocess.run(command, input=input, capture_output=True, text=True, check=False)
        if result.returncode == 0 or not check:
            return result.stdout
        if "connection refused" not in result.stderr and "EOF" not in result.stderr:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        time.sleep(1 + attempt % 3)  # the apiserver is restarting
    raise RuntimeError(f"kubectl {' '.join(args)}: the apiserver did not come back")


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


# ---------------------------------------------------------------------------------------- faults


class Apiserver:
    """Restarts the local control plane's kube-apiserver with its own command line."""

    def __init__(self) -> None:
        self.pidfile = CLUSTER / "kube-apiserver.pid"
        if not self.pidfile.exists():
            raise SystemExit("apiserver restarts need the local control plane (.cluster/kube-apiserver.pid)")

    def restart(self) -> float:
        pid = int(self.pidfile.read_text().strip())
        argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        environ = dict(
            item.split(b"=", 1)
            for item in pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        started = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            if not pathlib.Path(f"/proc/{pid}").exists() or b"zombie" in _state(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        with (CLUSTER / "logs" / "kube-apiserver.log").open("ab") as out:
            proc = subprocess.Popen(
                [a.decode() for a in argv],
                env={k.decode(): v.decode() for k, v in environ.items()},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid}\n")
        while time.monotonic() - started < 120:
            if kubectl("get", "--raw", "/readyz", check=False).strip() == "ok":
                return time.monotonic() - started
            time.sleep(0.3)
        raise RuntimeError("kube-apiserver did not become ready again within 120 s")


def _state(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/status").read_bytes()
    except OSError:
        return b"zombie"


# ---------------------------------------------------------------------------------------- replicas


@dataclass
class Replica:
    name: str
    backend: str
    config: str
    namespace: str
    workdir: pathlib.Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": self.config,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "operator"), os.environ.get("PYTHONPATH", "")]),
            "PYNCETTE_SWEEP_INTERVAL": "10",
            "PYNCETTE_POLL_INTERVAL": "0.5",
            "POD_NAME": self.name,
        }
        command = [
            str(OPERATOR),
            "run",
            "--backend",
            self.backend,
            "--namespace",
            self.namespace,
            "--handlers",
            "ptask_test_handlers",
            "--status-interval",
            "2",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
        ]
        out = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started_at = time.monotonic()

    started_at: float = 0.0

    def up_for(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def term(self) -> None:
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.exits.append(self.proc.wait(timeout=30))
            except subprocess.TimeoutExpired:
                self.exits.append(-999)  # did not stop within the chart's grace period
                self.kill()


# ---------------------------------------------------------------------------------------- tasks


def pod_template(duration: str) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {"sim.pyncette.dev/duration": duration}},
        "spec": {
            "containers": [{"name": "main", "image": "busybox"}],
            "nodeSelector": {"type": "kwok"},
            "tolerations": [SIM_TAINT],
        },
    }


def tasks(calls: pathlib.Path, *, pod_tasks: int, handler_tasks: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    policies = ["Forbid", "Allow", "Replace"]
    for i in range(pod_tasks):
        spec: dict[str, Any] = {
            "schedule": f"* * * * * */{PERIOD}",
            "concurrencyPolicy": policies[i % 3],
            "leaseDuration": "4s",
            "backoffLimit": 2,
            "successfulRunsHistoryLimit": 10_000,
            "failedRunsHistoryLimit": 10_000,
            "podTemplate": pod_template(f"{1 + i % 3}s"),
        }
        name = f"pods-{i}"
        if i % 4 == 3:  # Pods that never end by themselves: the operator must stop them
            spec["podTemplate"] = pod_template("1h")
            spec["activeDeadlineSeconds"] = 6
            spec["backoffLimit"] = 0
            spec["concurrencyPolicy"] = "Forbid"
            name = f"deadline-{i}"  # its Pods are deleted at 6 s: no history to count lost slots by
        out.append({"name": name, "spec": spec})
    for i in range(handler_tasks):
        spec = {
            "interval": f"{PERIOD}s",
            "leaseDuration": "4s",
            "handler": {"name": "record", "args": {"path": str(calls), "task": f"handler-{i}"}},
        }
        out.append({"name": f"handler-{i}", "spec": spec})
    return out


# ---------------------------------------------------------------------------------------- counting


def parse_time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(datetime.UTC)


def expected_slots(times: list[datetime.datetime]) -> list[datetime.datetime]:
    """Every PERIOD-second slot from the first to the last run seen (inclusive)."""
    if not times:
        return []
    first, last = min(times), max(times)
    out = []
    t = first
    while t <= last:
        out.append(t)
        t += datetime.timedelta(seconds=PERIOD)
    return out


@dataclass
class Figures:
    slots: int = 0
    duplicate: int = 0
    lost: int = 0
    reported_missed: int = 0
    replaced: int = 0
    during_outage: int = 0
    nobody_up: int = 0
    left_running: int = 0
    stuck_running: int = 0
    details: list[str] = field(default_factory=list)


def count(
    namespace: str,
    calls: pathlib.Path,
    names: list[str],
    until: datetime.datetime,
    outages: list[tuple[datetime.datetime, datetime.datetime]],
    nobody_up: list[tuple[datetime.datetime, datetime.datetime]],
) -> Figures:
    """Counts per scheduled slot. A Pod task's slot during an apiserver outage (no Pod can be created
    until the next slot) is not lost but ``during_outage``: it is skipped by design, as for a CronJob."""
    period = datetime.timedelta(seconds=PERIOD)

    def in_outage(slot: datetime.datetime) -> bool:
        return any(began - period <= slot <= ended for began, ended in outages)

    figures = Figures()
    started, missed = operator_reports(namespace)
    logged_started, logged_missed = operator_log_reports(calls.parent)
    for name, times in logged_started.items():
        started[name] |= times
    for name, ranges in logged_missed.items():
        missed[name].extend(ranges)
    pods = get_json("pods", "-n", namespace, "-l", "pyncette.dev/task")["items"]
    by_task: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for pod in pods:
        by_task[pod["metadata"]["labels"]["pyncette.dev/task"]].append(pod)
        if (pod.get("status") or {}).get("phase") in ("Running", "Pending") and not pod["metadata"].get(
            "deletionTimestamp"
        ):
            figures.left_running += 1
            figures.details.append(f"left running: {pod['metadata']['name']}")
    handler_calls: dict[str, list[datetime.datetime]] = collections.defaultdict(list)
    if calls.exists():
        for line in calls.read_text().splitlines():
            record = json.loads(line)
            handler_calls[record["args"]["task"]].append(parse_time(record["scheduled_at"]))
    for name in names:
        if name.startswith(("pods-", "deadline-")):
            per_slot: dict[datetime.datetime, list[dict[str, Any]]] = collections.defaultdict(list)
            for pod in by_task.get(name, []):
                per_slot[parse_time(pod["metadata"]["annotations"]["pyncette.dev/scheduled-at"])].append(pod)
            for slot, group in per_slot.items():
                attempts = collections.Counter(p["metadata"]["annotations"].get("pyncette.dev/attempt") for p in group)
                succeeded = sum(1 for p in group if (p.get("status") or {}).get("phase") == "Succeeded")
                if max(attempts.values()) > 1 or succeeded > 1:
                    figures.duplicate += 1
                    figures.details.append(
                        f"duplicate: {name} {slot:%H:%M:%S} {[p['metadata']['name'] for p in group]}"
                    )
            times = [t for t in per_slot if t <= until]
        else:
            seen = collections.Counter(t for t in handler_calls.get(name, []))
            for slot, n in seen.items():
                if n > 1:
                    figures.duplicate += 1
                    figures.details.append(f"duplicate: {name} {slot:%H:%M:%S} x{n}")
            times = [t for t in seen if t <= until]
        if name.startswith("deadline-"):
            continue
        expected = expected_slots(times)
        figures.slots += len(expected)
        present = set(times)
        for slot in expected:
            if slot in present:
                continue
            if slot in started.get(name, set()):
                figures.replaced += 1  # started, and its Pod deleted since (Replace, activeDeadlineSeconds)
                continue
            if any(after < slot < before for after, before in missed.get(name, [])):
                figures.reported_missed += 1  # skipped by the catch-up rule and said so (Forbid, a dead lease)
                continue
            if name.startswith("pods-") and in_outage(slot):
                figures.during_outage += 1
                continue
            if any(began - period <= slot <= ended for began, ended in nobody_up):
                figures.nobody_up += 1  # no replica could start (an outage): missed, as by a CronJob
                continue
            figures.lost += 1
            figures.details.append(f"lost: {name} {slot:%H:%M:%S}")
    for task in get_json("pyncettetasks", "-n", namespace)["items"]:
        for condition in (task.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Running" and condition.get("status") == "True":
                figures.stuck_running += 1
                figures.details.append(f"stuck Running=True: {task['metadata']['name']}: {condition.get('message')}")
    return figures


_STARTED = re.compile(r"^started .* for (\S+?)(?: \(|,|$)")
_MISSED = re.compile(r"scheduled run\(s\) between (\S+) and (\S+) were missed")


def operator_reports(
    namespace: str,
) -> tuple[dict[str, set[datetime.datetime]], dict[str, list[tuple[datetime.datetime, datetime.datetime]]]]:
    """What the operator said in Events: the slots it started a run for (``RunStarted``), and the
    ranges of slots it skipped by the catch-up rule (``MissedSchedules``: only the latest of the
    times missed while no run could start, or while a Forbid run outlasted the period, runs)."""
    started: dict[str, set[datetime.datetime]] = collections.defaultdict(set)
    missed: dict[str, list[tuple[datetime.datetime, datetime.datetime]]] = collections.defaultdict(list)
    for event in get_json("events", "-n", namespace)["items"]:
        name = event["involvedObject"]["name"]
        message = event.get("message") or ""
        if event.get("reason") == "RunStarted" and (m := _STARTED.match(message)):
            started[name].add(parse_time(m.group(1)))
        elif event.get("reason") == "MissedSchedules" and (m := _MISSED.search(message)):
            missed[name].append((parse_time(m.group(1)), parse_time(m.group(2))))
    return started, missed


_REPLACED = re.compile(r"Replacing run Pod \S+/(\S+)-(\d{10})-[0-9a-f]{5} of \S+$")
_MISSED_LOG = re.compile(r"PyncetteTask \S+?/(\S+): (?:more than )?(\d+) scheduled run\(s\) missed before (\S+)$")


def operator_log_reports(
    workdir: pathlib.Path,
) -> tuple[dict[str, set[datetime.datetime]], dict[str, list[tuple[datetime.datetime, datetime.datetime]]]]:
    """The same from the replicas' logs, which nothing rate-limits (Events are best-effort: a task
    posts one per reason per status interval, and none while the apiserver is down): the slots of
    Pods that Replace deleted (their run started), and the N times before T each "N scheduled
    run(s) missed before T" line names (every PERIOD seconds here)."""
    started: dict[str, set[datetime.datetime]] = collections.defaultdict(set)
    missed: dict[str, list[tuple[datetime.datetime, datetime.datetime]]] = collections.defaultdict(list)
    for log_file in workdir.glob("*.log"):
        for line in log_file.read_text(errors="replace").splitlines():
            if (m := _REPLACED.search(line)) is not None:
                task, epoch = m.group(1), int(m.group(2))
                started[task].add(datetime.datetime.fromtimestamp(epoch, datetime.UTC))
            elif (m := _MISSED_LOG.search(line)) is not None:
                task, n, before = m.group(1), int(m.group(2)), parse_time(m.group(3))
                after = before - datetime.timedelta(seconds=PERIOD * (n + 1))
                missed[task].append((after, before))
    return started, missed


def settle(namespace: str, timeout: float) -> float:
    """Waits until no run Pod is Pending or Running and no task reports Running=True (the simulated
    node can lag minutes behind an apiserver restart); returns the seconds waited."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        pods = get_json("pods", "-n", namespace, "-l", "pyncette.dev/task")["items"]
        busy = [p for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running")]
        running = [
            t
            for t in get_json("pyncettetasks", "-n", namespace)["items"]
            for c in (t.get("status") or {}).get("conditions") or []
            if c.get("type") == "Running" and c.get("status") == "True"
        ]
        if not busy and not running:
            break
        time.sleep(2)
    return time.monotonic() - began


# ---------------------------------------------------------------------------------------- one run


def run_backend(kind: str, url: str, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    namespace = f"chaos-{kind}-{uuid.uuid4().hex[:6]}"
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"{namespace}-"))
    calls = workdir / "handler-calls.jsonl"
    backend = f"{url.split('?', 1)[0]}?{'namespace' if kind == 'redis' else 'table'}={namespace.replace('-', '_')}"
    kubectl("create", "namespace", namespace)
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json"))
    server = admin["clusters"][0]["cluster"]["server"]
    proxy: Proxy = create_proxy(server.replace("https://", "tcp://"), prefix="chaos")
    admin["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    config = workdir / "kubeconfig.json"
    config.write_text(json.dumps(admin))
    replicas = [Replica(f"{namespace}-r{i}", backend, str(config), namespace, workdir) for i in range(3)]
    stats: collections.Counter[str] = collections.Counter()
    restart_times: list[float] = []
    outages: list[tuple[datetime.datetime, datetime.datetime]] = []
    lock = threading.Lock()
    stop_reviving = threading.Event()
    nobody_up: list[tuple[datetime.datetime, datetime.datetime]] = []

    def revive() -> None:
        """The Deployment: a replica that exited (killed, or it could not start during an outage)
        is started again within a second; and the windows with no replica serving are recorded."""
        down_since: datetime.datetime | None = None
        while not stop_reviving.wait(0.5):
            with lock:
                serving = sum(1 for r in replicas if r.alive and r.up_for() > 5)
                for r in replicas:
                    if not r.alive:
                        r.start()
                        stats["revive"] += 1
            now = datetime.datetime.now(datetime.UTC)
            if serving == 0 and down_since is None:
                down_since = now
            elif serving > 0 and down_since is not None:
                nobody_up.append((down_since, now))
                down_since = None

    reviver = threading.Thread(target=revive, daemon=True)
    try:
        for replica in replicas:
            replica.start()
        reviver.start()
        specs = tasks(calls, pod_tasks=args.pod_tasks, handler_tasks=args.handler_tasks)
        for item in specs:
            manifest = {"apiVersion": "pyncette.dev/v1", "kind": "PyncetteTask", "metadata": {"name": item["name"]}}
            kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({**manifest, "spec": item["spec"]}))
        log(f"{kind}: {len(specs)} tasks in {namespace}, 3 replicas; warming up {PERIOD * 2}s")
        time.sleep(PERIOD * 2)
        apiserver = Apiserver() if args.apiserver_restarts else None
        restarts_at = set(rng.sample(range(args.cycles), min(args.apiserver_restarts, args.cycles)))
        cuts_at = set(rng.sample(range(args.cycles), min(args.watch_cuts, args.cycles)))
        outages_at = set(rng.sample(range(args.cycles), min(args.outages, args.cycles)))
        for cycle in range(args.cycles):
            replica = rng.choice(replicas)
            alive = [r for r in replicas if r.alive]
            action = rng.choice(["kill", "term", "restart"])
            with lock:
                if len(alive) < 2:
                    pass  # keep one replica up
                elif action in ("kill", "term"):
                    replica.kill() if action == "kill" else replica.term()
                    stats[action] += 1
                else:
                    replica.term()
                    replica.start()
                    stats["restart"] += 1
            if cycle in cuts_at:
                began = datetime.datetime.now(datetime.UTC)
                proxy.set_enabled(False)
                time.sleep(2)
                proxy.set_enabled(True)
                outages.append((began, datetime.datetime.now(datetime.UTC)))
                stats["watch_cut"] += 1
            if cycle in outages_at:
                began = datetime.datetime.now(datetime.UTC)
                proxy.set_enabled(False)
                time.sleep(rng.uniform(20, 40))
                proxy.set_enabled(True)
                outages.append((began, datetime.datetime.now(datetime.UTC)))
                stats["apiserver_outage"] += 1
            if cycle in restarts_at and apiserver is not None:
                began = datetime.datetime.now(datetime.UTC)
                restart_times.append(apiserver.restart())
                outages.append((began, datetime.datetime.now(datetime.UTC)))
                stats["apiserver_restart"] += 1
            time.sleep(rng.uniform(1, 4))
            if cycle % 20 == 19:
                log(f"{kind}: cycle {cycle + 1}/{args.cycles} {dict(stats)}")
        end = datetime.datetime.now(datetime.UTC)
        log(f"{kind}: chaos over; letting the runs of the last slots finish")
        time.sleep(PERIOD * 1.5)
        for item in specs:
            kubectl(
                "patch",
                "-n",
                namespace,
                "pyncettetask",
                item["name"],
                "--type=merge",
                "-p",
                '{"spec":{"suspend":true}}',
            )
        time.sleep(PERIOD * 2.5)  # Pods end (the longest: activeDeadlineSeconds 6), status settles
        settled_after = settle(namespace, timeout=args.settle_timeout)
        figures = count(
            namespace, calls, [item["name"] for item in specs], until=end, outages=outages, nobody_up=nobody_up
        )
        stop_reviving.set()
        reviver.join()
        for replica in replicas:
            replica.term()
        term_exits = collections.Counter(e for r in replicas for e in r.exits)
    finally:
        stop_reviving.set()
        for replica in replicas:
            replica.kill()
        proxy.delete()
        if not args.keep:
            kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    return {
        "backend": kind,
        "namespace": namespace,
        "cycles": args.cycles,
        "faults": dict(stats),
        "apiserver_restart_seconds": [round(t, 1) for t in restart_times],
        "sigterm_exit_codes": dict(term_exits),
        "slots": figures.slots,
        "duplicate_slots": figures.duplicate,
        "lost_slots": figures.lost,
        "slots_missed_and_reported": figures.reported_missed,
        "slots_started_then_pod_deleted": figures.replaced,
        "seconds_to_settle": round(settled_after, 1),
        "pod_slots_skipped_during_apiserver_outages": figures.during_outage,
        "slots_skipped_with_no_replica_up": figures.nobody_up,
        "seconds_with_no_replica_up": round(sum((b - a).total_seconds() for a, b in nobody_up), 1),
        "apiserver_outages": [[a.isoformat(), b.isoformat()] for a, b in outages],
        "pods_left_running": figures.left_running,
        "tasks_stuck_running": figures.stuck_running,
        "details": sorted(figures.details, key=lambda line: line.startswith("lost"))[:60],
        "logs": str(workdir),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", action="append", choices=["postgres", "redis"])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--apiserver-restarts", type=int, default=10)
    parser.add_argument("--watch-cuts", type=int, default=10)
    parser.add_argument(
        "--outages",
        type=int,
        default=0,
        help="apiserver outages as the replicas see them: their connections cut for 20-40 s (Toxiproxy)",
    )
    parser.add_argument("--pod-tasks", type=int, default=8)
    parser.add_argument("--handler-tasks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep", action="store_true", help="keep the namespaces and the work directories (logs) for inspection"
    )
    parser.add_argument("--json", type=pathlib.Path, default=None)
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=180.0,
        help="at the end, wait at most this long for run Pods to end and Running=True to clear",
    )
    args = parser.parse_args(argv)
    urls = {
        "redis": os.environ.get("PYNCETTE_REDIS_URL", "redis://127.0.0.1:16379/0"),
        "postgres": os.environ.get("PYNCETTE_POSTGRES_URL", "postgresql://postgres:postgres@127.0.0.1:15432/pyncette"),
    }
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    # The CRD as a user installs it (a freshly started local control plane has none).
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "pyncettetask.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/pyncettetasks.pyncette.dev", "--timeout=60s")
    results = [run_backend(kind, urls[kind], args, rng) for kind in (args.backend or ["postgres", "redis"])]
    print(f"\nseed {seed}")
    print(
        "| backend | cycles | faults | slots | duplicate | lost | missed, reported | started, Pod deleted |"
        " skipped in apiserver outages | Pods left Running | stuck Running=True |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(r["faults"].items()))
        print(
            f"| {r['backend']} | {r['cycles']} | {faults} | {r['slots']} | {r['duplicate_slots']} | {r['lost_slots']} |"
            f" {r['slots_missed_and_reported']} | {r['slots_started_then_pod_deleted']} |"
            f" {r['pod_slots_skipped_during_apiserver_outages']} | {r['pods_left_running']} |"
            f" {r['tasks_stuck_running']} |"
        )
        print(
            f"    {r['backend']}: {r['slots_skipped_with_no_replica_up']} slots skipped while no replica was up"
            f" ({r['seconds_with_no_replica_up']} s); SIGTERM exit codes {r['sigterm_exit_codes']};"
            f" apiserver restarts took {r['apiserver_restart_seconds']} s; settled {r['seconds_to_settle']} s after"
        )
        for line in r["details"]:
            print(f"    {line}")
    if args.json:
        args.json.write_text(json.dumps({"seed": seed, "results": results}, indent=2))
    bad = 0
    for r in results:
        failed = r["duplicate_slots"] + r["lost_slots"] + r["pods_left_running"] + r["tasks_stuck_running"]
        bad += failed
        # A passing run's work directory (replica logs, an admin kubeconfig) is removed: each run
        # would otherwise leave one behind. A failing one is kept for the post-mortem.
        if failed or args.keep:
            print(f"    {r['backend']}: logs kept in {r['logs']}")
        else:
            shutil.rmtree(r["logs"], ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
