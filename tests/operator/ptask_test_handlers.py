"""Handlers the integration tests load with ``--handlers ptask_test_handlers``."""

from __future__ import annotations

import json
import pathlib

import pyncette_operator
from pyncette.model import Context


@pyncette_operator.handler("record", namespaces="*")
async def record(context: Context) -> None:
    """Appends one JSON line (args and scheduled time) to ``args["path"]``."""
    line = {"args": context.args, "scheduled_at": context.scheduled_at.isoformat()}
    with pathlib.Path(context.args["path"]).open("a") as out:  # noqa: ASYNC230 - a test helper, tiny write
        out.write(json.dumps(line) + "\n")


@pyncette_operator.handler("explode", namespaces="*")
async def explode(context: Context) -> None:
    raise RuntimeError(f"boom for {context.args.get('who', 'nobody')}")


@pyncette_operator.handler("refuse", namespaces="*")
async def refuse(context: Context) -> None:
    """Fails with a message meant for the task's owner."""
    raise pyncette_operator.HandlerError(f"no report for {context.args.get('who', 'nobody')} today")


@pyncette_operator.handler("record-and-refuse", namespaces="*")
async def record_and_refuse(context: Context) -> None:
    """``record``, then fails: each attempt of a failing run leaves one line."""
    await record(context)
    raise pyncette_operator.HandlerError("refused after recording")


@pyncette_operator.handler("only-blue", namespaces=["blue-team"])
async def only_blue(context: Context) -> None:
    """Serves one namespace only (tests give theirs the name ``blue-team`` never)."""
