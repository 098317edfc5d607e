"""Handlers the integration tests load with ``--handlers ptask_test_handlers``."""

from __future__ import annotations

import json
import pathlib

import pyncette_operator
from pyncette.model import Context


@pyncette_operator.handler("record")
async def record(context: Context) -> None:
    """Appends one JSON line (args and scheduled time) to ``args["path"]``."""
    line = {"args": context.args, "scheduled_at": context.scheduled_at.isoformat()}
    with pathlib.Path(context.args["path"]).open("a") as out:  # noqa: ASYNC230 - a test helper, tiny write
        out.write(json.dumps(line) + "\n")


@pyncette_operator.handler("explode")
async def explode(context: Context) -> None:
    raise RuntimeError(f"boom for {context.args.get('who', 'nobody')}")
