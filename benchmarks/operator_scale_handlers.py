"""The no-op handler of benchmarks/operator_scale.py: records each run's start skew.

Loaded into the operator with ``--handlers operator_scale_handlers``. Writes one line per run
(``<skew seconds> <scheduled unix time>``) to ``$BENCH_SKEW_FILE``, buffered, so that recording
costs the operator almost nothing.
"""

from __future__ import annotations

import os
import time

import pyncette_operator
from pyncette.model import Context

_out = open(os.environ["BENCH_SKEW_FILE"], "a", buffering=1 << 16)  # noqa: SIM115 - lives as long as the process


@pyncette_operator.handler("bench-noop", namespaces="*")
async def bench_noop(context: Context) -> None:
    scheduled = context.scheduled_at.timestamp()
    _out.write(f"{time.time() - scheduled:.6f} {scheduled:.3f}\n")
    if int(time.time()) % 2 == 0:
        _out.flush()
