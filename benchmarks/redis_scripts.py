"""The Redis server's cost of draining one-offs through our Lua scripts, per entry, in isolation.

During a drain (``throughput.py``) the Redis server spends about as much CPU per execution as a
worker does, nearly all of it inside EVALSHA. This script measures that part alone: it stores N due
one-off instances (through the library, as the benchmarks do), then drains them from one
synchronous client with the very calls a worker makes (``lease.lua`` for the first batch,
``commit_lease.lua`` for every later one, ``commit.lua`` for the last) and no task bodies, and
reads the server's own accounting (``INFO commandstats``, reset before the drain):

* **EVALSHA**: the server's time inside the scripts, per drained entry;
* **commands**: of that, the time in the Redis commands the scripts call (HMGET, HSET, ZADD ...);
* **overhead**: the rest, i.e. the Lua interpreter, converting arguments and replies between Lua
  and Redis, and feeding the AOF.

Times swing with the machine (up to 1.6x between runs on a shared 2-core VM), so to judge a change
to the scripts, ``--compare DIR`` runs the package's scripts and those in DIR (a copy of
``operator/pyncette/redis`` with your edits) in alternating rounds, each first in every other round,
and prints the median of each and their ratio: drift hits both alike. The drain leaves nothing
behind; it resets the server's command statistics (``CONFIG RESETSTAT``), so run it against the
development service only.

    python benchmarks/redis_scripts.py                                 # needs make services-up
    python benchmarks/redis_scripts.py -n 20000 --compare /tmp/my-scripts --rounds 5

Numbers only, no assertions.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import statistics
import string
import sys
import tempfile
import time
import uuid
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cost import populate  # noqa: E402
from throughput import backend_config  # noqa: E402
from throughput import drop_run_data  # noqa: E402
from throughput import redis_client  # noqa: E402
from throughput import settle_server  # noqa: E402

from pyncette.redis import commit_lease_source  # noqa: E402

PACKAGE_SCRIPTS = HERE.parent / "operator" / "pyncette" / "redis"
TEMPLATE = "drain"  # the dynamic task cost.populate stores its instances under
LEASE_MICROSECONDS = 60_000_000


class Scripts:
    """lease.lua, commit.lua and commit_lease.lua from one directory, registered on ``client``
    (commit_lease.lua put together by ``pyncette.redis``'s own ``commit_lease_source``)."""

    def __init__(self, client: Any, directory: pathlib.Path) -> None:
        def source(name: str) -> str:
            return (directory / f"{name}.lua").read_text("utf-8")

        self.lease = client.register_script(source("lease"))
        self.commit = client.register_script(source("commit"))
        self.commit_lease = client.register_script(commit_lease_source(source))


def drain(client: Any, scripts: Scripts, namespace: str, batch_size: int) -> int:
    """Leases and commits every stored entry, a batch per call; the number of entries committed."""
    prefix = f"pyncette:{namespace}:"
    index = f"{prefix}i:{TEMPLATE}"
    now = int(time.time() * 1_000_000)
    held: list[tuple[str, str]] = []  # (entry name, lease token) of the batch leased last
    committed = 0
    while True:
        token = uuid.uuid4().hex
        lease_args: list[Any] = [prefix, now, batch_size, token, "", "", LEASE_MICROSECONDS]
        if held:
            items = json.dumps([[1, name, lease, ""] for name, lease in held])
            header, _, flags = scripts.commit_lease(
                keys=[index, index], args=[1, len(lease_args), *lease_args, prefix, items]
            )
            committed += _count_committed(flags, len(held))
        else:
            header, _ = scripts.lease(keys=[index], args=lease_args)
        rows = json.loads(header)[3]
        if not rows:
            return committed
        held = [(row[1], token) for row in rows]


def _count_committed(flags: bytes, expected: int) -> int:
    text = flags.decode()
    if len(text) != expected or set(text) != {"1"}:
        raise SystemExit(f"commit.lua did not commit every leased entry: {text!r}")
    return expected


def measure(directory: pathlib.Path, n: int, batch_size: int, workdir: pathlib.Path) -> dict[str, float]:
    """One round: store ``n`` due one-offs, drain them with the scripts in ``directory``, read the stats."""
    run_id = "".join(random.choices(string.ascii_lowercase, k=10))
    config = backend_config("redis", workdir, run_id)
    populate("redis", config, n, batch_size)
    settle_server(config)  # the snapshot populating triggers is not the drain's cost
    client = redis_client(config)
    try:
        scripts = Scripts(client, directory)
        client.config_resetstat()
        drained = drain(client, scripts, config["redis_namespace"], batch_size)
        stats = client.info("commandstats")
    finally:
        client.close()
        drop_run_data(config)
    if drained != n:
        raise SystemExit(f"drained {drained} entries, expected {n} (is something else using this namespace?)")
    inside = sum(v["usec"] for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_config|resetstat"))
    evalsha = stats.get("cmdstat_evalsha", {}).get("usec", 0)
    return {"evalsha": evalsha / n, "commands": inside / n, "overhead": (evalsha - inside) / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--instances", type=int, default=10_000, help="N: due one-offs drained per round")
    parser.add_argument("--batch-size", type=int, default=100, help="entries per lease (the app's batch_size)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per set of scripts (default 3)")
    parser.add_argument(
        "--compare", type=pathlib.Path, metavar="DIR", help="also run the scripts in DIR, alternating rounds"
    )
    options = parser.parse_args()
    if options.instances < 1 or options.rounds < 1:
        parser.error("-n and --rounds must be at least 1")
    contenders = {"package": PACKAGE_SCRIPTS}
    if options.compare is not None:
        missing = [f for f in ("lease.lua", "commit.lua", "commit_lease.lua") if not (options.compare / f).is_file()]
        if missing:
            parser.error(f"--compare {options.compare}: no {', '.join(missing)} there")
        contenders["compare"] = options.compare
    results: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    print(f"{'round':>5}  {'scripts':<8}  {'EVALSHA':>8}  {'commands':>8}  {'overhead':>8}   (us per entry)")
    with tempfile.TemporaryDirectory(prefix="pyncette-bench-") as tmp:
        for round_number in range(1, options.rounds + 1):
            # ABBA: the one measured second in a round came out ~5 % faster (same scripts both times).
            order = list(contenders.items())
            for name, directory in order if round_number % 2 else order[::-1]:
                figures = measure(directory, options.instances, options.batch_size, pathlib.Path(tmp))
                results[name].append(figures)
                print(
                    f"{round_number:>5}  {name:<8}  {figures['evalsha']:8.2f}  {figures['commands']:8.2f}"
                    f"  {figures['overhead']:8.2f}",
                    flush=True,
                )
    medians = {
        name: {k: statistics.median(r[k] for r in rounds) for k in rounds[0]} for name, rounds in results.items()
    }
    for name, median in medians.items():
        print(
            f"{'median':>5}  {name:<8}  {median['evalsha']:8.2f}  {median['commands']:8.2f}  {median['overhead']:8.2f}"
        )
    if "compare" in medians:
        ratio = medians["compare"]["evalsha"] / medians["package"]["evalsha"]
        print(f"EVALSHA per entry, compare / package: {ratio:.3f} (medians of {options.rounds} alternating rounds)")


if __name__ == "__main__":
    main()
