"""Exceptions raised by pyncette.

They keep the names and constructor shapes of pyncette 1.x, so code that catches them keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from croniter import CroniterBadCronError

if TYPE_CHECKING:
    import datetime

    from pyncette.task import Task


class PyncetteException(Exception):
    """Base class of every error pyncette raises on purpose."""


class LeaseLostException(PyncetteException):
    """The lease on a task instance expired or was taken over by another worker.

    Raised from ``context.heartbeat()``; the execution should stop, because another worker may
    already be running the same scheduled instance.
    """

    task: Task

    def __init__(self, task: Task) -> None:
        super().__init__(f"Lease on the task {task.canonical_name} was lost.")
        self.task = task


class TaskLockedException(PyncetteException):
    """A task instance is being executed, so it cannot be rescheduled without ``force=True``."""

    task: Task

    def __init__(self, task: Task, locked_until: datetime.datetime | None = None) -> None:
        until = f" until {locked_until.isoformat()}" if locked_until else ""
        super().__init__(
            f"Cannot update task {task.canonical_name} while it is locked{until}. Use force=True to override."
        )
        self.task = task
        self.locked_until = locked_until


class BackendConfigurationError(PyncetteException, ValueError):
    """A backend was configured wrongly (missing keyword, bad URL, unreachable server...).

    The message is one line naming the backend and the setting, e.g.
    ``postgres: postgres_url: cannot connect to 127.0.0.1:5432 (connection refused)``.
    """

    def __init__(self, backend: str, setting: str, problem: str) -> None:
        super().__init__(f"{backend}: {setting}: {problem}")
        self.backend = backend
        self.setting = setting
        self.problem = problem


class InvalidScheduleError(PyncetteException, ValueError):
    """A schedule or time zone whose next run time cannot be computed (raised at definition).

    The message is one line naming the task and the field, e.g.
    ``task 'nightly': timezone: unknown timezone 'Mars/Olympus'``.
    """


class InvalidCronError(InvalidScheduleError, CroniterBadCronError):
    """A cron expression that cannot be parsed, or that no time ever matches (30 February).

    It is an ``InvalidScheduleError``, a ``ValueError`` and croniter's ``CroniterBadCronError``, so code written for
    pyncette 1.x that catches either keeps working. The message names the task and the field, e.g.
    ``task 'report': schedule: invalid cron expression '0 0 30 2 *': no time matches it``.
    """
