"""Operator scale benchmark: N PyncetteTasks every 10 s on an in-process handler, one replica.

For each N (default 1,000 and 10,000) this creates N tasks in a fresh namespace of the cluster
that KUBECONFIG names (default: the local control plane, .cluster/kubeconfig), starts one
``pyncette-operator`` on embedded SQLite (or ``--backend``), lets it warm up until every task has
run, then measures a window:

* start skew (actual start - scheduled time) p50 / p99 / max, from every run in the window;
* apiserver requests/s sent by the operator (its own counter; kopf's two watch streams are
  long-lived and not counted) and status writes/s;
* operator RSS (max over the window).

    .venv/bin/python benchmarks/operator_scale.py [--tasks 1000 --tasks 10000] [--window 60]

Targets from issue 5: 10k tasks, p99 skew < 1 s, RSS < 300 MiB. Nothing here asserts; it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio import config

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPERATOR = pathlib.Path(sys.executable).parent / "pyncette-operator"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            name = key.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def create_tasks(api: client.CustomObjectsApi, namespace: str, count: int, interval: str) -> float:
    started = time.monotonic()
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        body = {
            "apiVersion": "pyncette.dev/v1",
            "kind": "PyncetteTask",
            "metadata": {"name": f"bench-{i:05d}"},
            "spec": {"interval": interval, "handler": {"name": "bench-noop", "args": {"i": i}}},
        }
        async with semaphore:
            await api.create_namespaced_custom_object("pyncette.dev", "v1", namespace, "pyncettetasks", body)

    await asyncio.gather(*(one(i) for i in range(count)))
    return time.monotonic() - started


async def run_one(
    count: int, *, interval: str, window: float, backend: str | None, workdir: pathlib.Path
) -> dict[str, Any]:
    await config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    async with client.ApiClient() as api_client:
        core = client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        namespace = f"bench-{count}-{os.getpid()}"
        await core.create_namespace({"metadata": {"name": namespace}})
        try:
            create_seconds = await create_tasks(custom, namespace, count, interval)
            print(f"  created {count} tasks in {create_seconds:.1f}s", flush=True)
            skew_file = workdir / f"skew-{count}.txt"
            skew_file.unlink(missing_ok=True)
            port = free_port()
            env = {
                **os.environ,
                "BENCH_SKEW_FILE": str(skew_file),
                "PYTHONPATH": os.pathsep.join([str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH", "")]),
                "PYNCETTE_DATA_DIR": str(workdir),
                "LOG_LEVEL": "WARNING",
            }
            db = workdir / f"bench-{count}.db"
            db.unlink(missing_ok=True)
            cmd = [
                str(OPERATOR),
                "run",
                "--namespace",
                namespace,
                "--handlers",
                "operator_scale_handlers",
                "--metrics-port",
                str(port),
                "--backend",
                backend or f"sqlite:///{db}",
                "--log-level",
                "WARNING",
            ]
            log = (workdir / f"operator-{count}.log").open("wb")
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)  # noqa: ASYNC220
            try:
                # Warm-up: every task registered and run at least once.
                started = time.monotonic()
                while True:
                    await asyncio.sleep(1)
                    if proc.poll() is not None:
                        raise RuntimeError(f"operator exited with {proc.returncode}; see {log.name}")
                    try:
                        m = metrics(port)
                    except OSError:
                        continue
                    if m.get("pyncette_operator_runs_finished_total", 0) >= count:
                        break
                    if time.monotonic() - started > 600:
                        raise RuntimeError("warm-up took more than 10 minutes")
                warmup = time.monotonic() - started
                print(f"  warm-up (all {count} tasks ran once) took {warmup:.1f}s", flush=True)
                m0, t0 = metrics(port), time.time()
                rss_max = 0.0
                while time.time() - t0 < window:
                    await asyncio.sleep(1)
                    rss_max = max(rss_max, rss_mib(proc.pid))
                m1, t1 = metrics(port), time.time()
            finally:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                log.close()
            skews = []
            for line in skew_file.read_text().splitlines():
                skew, scheduled = line.split()
                if t0 <= float(scheduled) <= t1 - 2:
                    skews.append(float(skew))
            elapsed = t1 - t0
            return {
                "tasks": count,
                "interval": interval,
                "window_s": round(elapsed, 1),
                "runs": len(skews),
                "runs_per_s": round(len(skews) / elapsed, 1),
                "skew_p50_ms": round(percentile(skews, 0.5) * 1000, 1),
                "skew_p99_ms": round(percentile(skews, 0.99) * 1000, 1),
                "skew_max_ms": round(max(skews) * 1000, 1) if skews else None,
                "skew_mean_ms": round(statistics.fmean(skews) * 1000, 1) if skews else None,
                "apiserver_requests_per_s": round(
                    (
                        m1.get("pyncette_operator_apiserver_requests_total", 0)
                        - m0.get("pyncette_operator_apiserver_requests_total", 0)
                    )
                    / elapsed,
                    2,
                ),
                "status_writes_per_s": round(
                    (
                        m1.get("pyncette_operator_status_writes_total", 0)
                        - m0.get("pyncette_operator_status_writes_total", 0)
                    )
                    / elapsed,
                    2,
                ),
                "rss_mib_max": round(rss_max, 1),
                "warmup_s": round(warmup, 1),
            }
        finally:
            await core.delete_namespace(namespace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, action="append", help="task counts (repeatable; default 1000 and 10000)")
    parser.add_argument("--interval", default="10s")
    parser.add_argument("--window", type=float, default=60.0, help="measurement window, seconds")
    parser.add_argument("--backend", default=None, help="backend URL (default: embedded SQLite)")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("KUBECONFIG", str(ROOT / ".cluster" / "kubeconfig"))
    workdir = ROOT / ".bench" / "operator"
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for count in args.tasks or [1000, 10000]:
        print(f"{count} tasks, every {args.interval}:", flush=True)
        result = asyncio.run(
            run_one(count, interval=args.interval, window=args.window, backend=args.backend, workdir=workdir)
        )
        print("  " + json.dumps(result), flush=True)
        results.append(result)
    print()
    header = ("tasks", "runs/s", "p50 ms", "p99 ms", "max ms", "req/s", "status/s", "RSS MiB")
    print(" ".join(f"{h:>8}" for h in header))
    for r in results:
        keys = ("tasks", "runs_per_s", "skew_p50_ms", "skew_p99_ms", "skew_max_ms")
        keys += ("apiserver_requests_per_s", "status_writes_per_s", "rss_mib_max")
        print(" ".join(f"{r[k]!s:>8}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
