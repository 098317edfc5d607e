"""pyncette: a reliable distributed scheduler for async Python.

The whole public API is importable from here; backends live in their own modules
(``pyncette.sqlite``, ``pyncette.redis``, ...), imported only when used.
"""

from pyncette.clock import Clock
from pyncette.clock import FakeClock
from pyncette.clock import SystemClock
from pyncette.errors import LeaseLostException
from pyncette.errors import PyncetteException
from pyncette.errors import TaskLockedException
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.model import ListTasksResponse
from pyncette.model import TaskState
from pyncette.pyncette import Pyncette
from pyncette.pyncette import PyncetteContext
from pyncette.task import PartitionedTask
from pyncette.task import Task

__version__ = "2.0.0.dev0"

__all__ = [
    "Clock",
    "Context",
    "ExecutionMode",
    "FailureMode",
    "FakeClock",
    "LeaseLostException",
    "ListTasksResponse",
    "PartitionedTask",
    "Pyncette",
    "PyncetteContext",
    "PyncetteException",
    "SystemClock",
    "Task",
    "TaskLockedException",
    "TaskState",
]
