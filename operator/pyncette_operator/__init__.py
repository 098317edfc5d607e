"""pyncette_operator: a Kubernetes operator that runs PyncetteTask resources with pyncette.

The public surface for users is small: ``handler`` registers an in-process handler that
PyncetteTasks name in ``spec.handler.name`` (``--handlers my.module`` imports the module)::

    import pyncette_operator

    @pyncette_operator.handler("nightly-report", namespaces=["reports"])
    async def nightly_report(context):
        print(context.args["recipients"], context.scheduled_at)   # args: untrusted input

``HandlerError`` fails a run with a message shown to the task's owner.

Everything else is run with the ``pyncette-operator run`` command.
"""

from pyncette_operator.runs.handlers import HandlerError
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.handlers import handler

__all__ = ["HandlerError", "HandlerRegistry", "handler"]
