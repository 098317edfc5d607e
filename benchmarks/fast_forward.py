"""Fast-forward benchmark: how long computing the next run takes after many missed cron slots.

A task with ``fast_forward=True`` that was down for a while skips the slots it missed. pyncette 1.x
(and this project until issue 10) stepped through them one by one, building a croniter per slot on
the event loop: about 0.8 s for one hour of a per-second cron, about 20 s per task after a day. Now
the next slot is computed directly from "now", so the cost does not depend on how many were missed.

    .venv/bin/python benchmarks/fast_forward.py [--repeat 20]

Prints, per scenario, the median and maximum time of one ``get_next_execution`` call. Target
(issue 10): skipping a day of a per-second cron < 50 ms. Nothing here asserts; it reports.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

from pyncette.model import Context
from pyncette.schedule import next_union_time
from pyncette.task import Task

START = datetime.datetime(2030, 3, 30, 12, tzinfo=datetime.UTC)

SCENARIOS = [
    ("per-second cron, 1 hour missed", "* * * * * *", None, datetime.timedelta(hours=1)),
    ("per-second cron, 1 day missed", "* * * * * *", None, datetime.timedelta(days=1)),
    ("per-second cron, 30 days missed", "* * * * * *", None, datetime.timedelta(days=30)),
    ("per-minute cron, 1 year missed", "* * * * *", None, datetime.timedelta(days=365)),
    (
        "per-second cron in Europe/Dublin over a DST change, 1 day",
        "* * * * * *",
        "Europe/Dublin",
        datetime.timedelta(days=1),
    ),
]


async def _body(context: Context) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{'scenario':60} {'median ms':>10} {'max ms':>10}")
    for label, schedule, timezone, missed in SCENARIOS:
        task = Task(name="ff", func=_body, schedule=schedule, timezone=timezone, fast_forward=True)
        timings = []
        for _ in range(args.repeat):
            began = time.perf_counter()
            following = task.get_next_execution(START + missed, START)
            timings.append((time.perf_counter() - began) * 1000)
            assert following is not None and following >= START + missed
        print(f"{label:60} {statistics.median(timings):10.3f} {max(timings):10.3f}")
    # For comparison, once: the old way, one next-time computation per missed slot (an hour only).
    began = time.perf_counter()
    current, now = START, START + datetime.timedelta(hours=1)
    while current < now:
        following = next_union_time(("* * * * * *",), current, None)
        assert following is not None
        current = following
    stepping = (time.perf_counter() - began) * 1000
    print(f"{'stepping slot by slot (before issue 10), 1 hour missed':60} {stepping:10.1f} {stepping:10.1f}")


if __name__ == "__main__":
    main()
