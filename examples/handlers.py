"""Handlers for examples/ptask-handler.yaml: ``pyncette-operator run --handlers handlers``.

A handler is an async function registered under the name that PyncetteTasks use in
``spec.handler.name``. It receives the task's ``spec.handler.args`` in ``context.args`` and runs
inside the operator replica that leased the run; raising fails the run (``failureMode`` decides
what happens next). Long handlers call ``await context.heartbeat()`` to keep their lease.
"""

from __future__ import annotations

import logging

import pyncette_operator
from pyncette.model import Context

logger = logging.getLogger("examples.handlers")


# Every handler declares the namespaces whose PyncetteTasks may call it ("*": every namespace the
# operator watches). Its args come from those tasks: untrusted input, checked before use.
@pyncette_operator.handler("nightly-report", namespaces="*")
async def nightly_report(context: Context) -> None:
    recipients = ", ".join(r for r in context.args.get("recipients", []) if isinstance(r, str))
    logger.info(
        "Report (%s) for the run scheduled at %s would go to %s",
        context.args.get("format", "txt"),
        context.scheduled_at.isoformat(),
        recipients or "nobody",
    )
