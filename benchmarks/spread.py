"""How evenly Jenkins-style ``H`` spreads hourly tasks over the hour.

Registers N dynamic instances with ``schedule="H * * * *"`` (named like the operator names its
backend instances: ``namespace/name``) in a Pyncette app on the in-memory backend, runs the app for
one hour of fake time, and counts the runs that start in each minute. Prints the busiest and the
quietest minute and the busiest minute's share of all runs (target: at most 3% for N = 1,000, where
a perfect spread gives 1.67%). Runs in a few seconds; no timing is measured.

``--trials K`` also resolves ``H`` for K other sets of N names (without running them) and prints
the distribution of the busiest minute over those sets: a hash that is independent per task
behaves like throwing N balls into 60 bins, so the busiest minute of 1,000 tasks is typically 27
(2.7%) and a few name sets in a hundred reach 31 or more. No per-task hash can do better without
knowing the other tasks, and knowing them would make a task's minute move when another is added.

    .venv/bin/python benchmarks/spread.py [--tasks 1000] [--namespaces 4] [--trials 300] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import json
import sys

from pyncette import Context
from pyncette import FakeClock
from pyncette import Pyncette
from pyncette.schedule import spread_cron

START = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def measure(tasks: int, namespaces: int) -> dict[str, float | int]:
    clock = FakeClock(START)
    app = Pyncette(clock=clock, poll_interval=datetime.timedelta(minutes=1), batch_size=1000)
    per_minute: collections.Counter[int] = collections.Counter()

    @app.dynamic_task()
    async def job(context: Context) -> None:
        per_minute[context.scheduled_at.minute] += 1

    async with app.create() as ctx:
        loop = asyncio.create_task(ctx.run())
        for n in range(tasks):
            await ctx.schedule_task(job, f"team-{n % namespaces}/job-{n}", schedule="H * * * *")
        await clock.set(START + datetime.timedelta(hours=1))
        await ctx.drain()
        ctx.shutdown()
        await loop
    runs = sum(per_minute.values())
    busiest = max(per_minute.values())
    return {
        "tasks": tasks,
        "runs": runs,
        "minutes_used": len(per_minute),
        "max_per_minute": busiest,
        "min_per_minute": min(per_minute[m] for m in range(60)),
        "max_share_percent": round(100 * busiest / runs, 2),
    }


def trials(tasks: int, count: int) -> dict[str, float | int]:
    """The busiest minute of ``count`` other name sets (resolved only, not run)."""
    busiest = []
    for trial in range(count):
        minutes = collections.Counter(spread_cron("H * * * *", f"ns{trial}/task-{n}") for n in range(tasks))
        busiest.append(max(minutes.values()))
    busiest.sort()
    return {
        "trials": count,
        "busiest_median": busiest[count // 2],
        "busiest_p95": busiest[min(count - 1, count * 95 // 100)],
        "busiest_max": busiest[-1],
        "share_over_3_percent": round(sum(b > tasks * 0.03 for b in busiest) / count, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=4)
    parser.add_argument("--trials", type=int, default=0, help="also resolve H for this many other name sets")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    result = asyncio.run(measure(args.tasks, args.namespaces))
    other = trials(args.tasks, args.trials) if args.trials > 0 else None
    if args.json:
        print(json.dumps({**result, **(other or {})}))
    else:
        print(
            f"{result['tasks']} tasks 'H * * * *', {result['runs']} runs in one hour over"
            f" {result['minutes_used']} minutes: busiest minute {result['max_per_minute']} runs"
            f" ({result['max_share_percent']}%), quietest {result['min_per_minute']}"
        )
        if other is not None:
            print(
                f"{other['trials']} other name sets: busiest minute median {other['busiest_median']},"
                f" 95th percentile {other['busiest_p95']}, max {other['busiest_max']};"
                f" {other['share_over_3_percent'] * 100:.1f}% of the sets have a minute over 3%"
            )
    return 0 if result["runs"] == args.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
