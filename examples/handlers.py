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


@pyncette_operator.handler("nightly-report")
async def nightly_report(context: Context) -> None:
    recipients = ", ".join(context.args.get("recipients", []))
    logger.info(
        "Report (%s) for the run scheduled at %s would go to %s",
        context.args.get("format", "txt"),
        context.scheduled_at.isoformat(),
        recipients or "nobody",
    )
