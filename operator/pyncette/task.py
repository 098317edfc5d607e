"""Tasks: what runs, when, and how it is leased.

A ``Task`` is either static (declared with ``@app.task``: one schedule, one stored state), a dynamic
template (``@app.dynamic_task``: instances are created at run time with ``schedule_task``), or a
concrete instance of a template. ``PartitionedTask`` spreads the instances of one template over
``partition_count`` independent partitions so that many workers can poll them without contention.

Instances are stored by the backends as a JSON *spec* (``as_spec``/``instantiate_from_spec``); the
spec also carries per-instance overrides of execution mode, failure mode and lease duration, which
pyncette 1.x only allowed on the template.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

from pyncette.errors import InvalidCronError
from pyncette.errors import InvalidScheduleError
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.model import PartitionSelector
from pyncette.model import TaskFunc
from pyncette.schedule import UTC
from pyncette.schedule import check_cron
from pyncette.schedule import latest_cron_time
from pyncette.schedule import next_union_time
from pyncette.schedule import resolve_timezone
from pyncette.schedule import spread_cron

# Keyword arguments of ``instantiate``/``schedule_task`` that configure the instance itself rather
# than landing in ``context.args``.
_INSTANCE_FIELDS = ("schedule", "interval", "execute_at", "timezone")
_OVERRIDE_FIELDS = ("fast_forward", "execution_mode", "failure_mode", "lease_duration", "catch_up_latest", "anchor")
# The finest time step of a schedule: "strictly after now - _RESOLUTION" means "not before now".
_RESOLUTION = datetime.timedelta(microseconds=1)
# How many rebuilt instances a template remembers (see ``instantiate_from_spec``).
_SPEC_CACHE_SIZE = 10_000
# One-off instances rebuilt per template from specs that differ only in name and time (see _one_off).
_SHAPE_CACHE_SIZE = 64
# Stored mode names (``ExecutionMode[name]`` is a Python-level call; a KeyError reads the same).
_EXECUTION_MODES = ExecutionMode.__members__
_FAILURE_MODES = FailureMode.__members__


class Task:
    """The base unit of execution."""

    name: str
    task_func: TaskFunc
    schedule: str | list[str] | None
    cron_expressions: tuple[str, ...]
    """The cron expressions as they run: ``H`` resolved from the name, duplicates dropped (empty without cron)."""
    interval: datetime.timedelta | None
    execute_at: datetime.datetime | None
    timezone: str | None
    fast_forward: bool
    failure_mode: FailureMode
    execution_mode: ExecutionMode
    lease_duration: datetime.timedelta
    catch_up_latest: bool
    anchor: datetime.datetime | None
    parent_task: Task | None
    dynamic: bool
    extra_args: dict[str, Any]
    _enabled: bool

    def __init__(
        self,
        *,
        name: str,
        func: TaskFunc,
        enabled: bool = True,
        dynamic: bool = False,
        parent_task: Task | None = None,
        schedule: str | Sequence[str] | None = None,
        interval: datetime.timedelta | None = None,
        execute_at: datetime.datetime | None = None,
        timezone: str | None = None,
        fast_forward: bool = False,
        failure_mode: FailureMode = FailureMode.NONE,
        execution_mode: ExecutionMode = ExecutionMode.AT_LEAST_ONCE,
        lease_duration: datetime.timedelta = datetime.timedelta(seconds=60),
        catch_up_latest: bool = False,
        anchor: datetime.datetime | None = None,
        **kwargs: Any,
    ) -> None:
        self._enabled = enabled
        self.name = name
        self.task_func = func
        self.dynamic = dynamic
        self.parent_task = parent_task
        self.schedule = list(schedule) if isinstance(schedule, Sequence) and not isinstance(schedule, str) else schedule
        self.cron_expressions = ()
        self.interval = interval
        self.execute_at = execute_at
        self.timezone = timezone
        self.fast_forward = fast_forward
        self.failure_mode = failure_mode
        self.execution_mode = execution_mode
        self.lease_duration = lease_duration
        self.catch_up_latest = catch_up_latest
        self.anchor = anchor
        self.extra_args = kwargs
        self._spec_cache: dict[str, tuple[dict[str, Any], Task]] = {}
        self._shapes: dict[str, Task] = {}
        self._canonical_name: str | None = None
        self._validate()

    def _fail(self, field: str, problem: str) -> ValueError:
        return ValueError(f"task {self.canonical_name!r}: {field}: {problem}")

    def _validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.execution_mode, ExecutionMode):
            raise self._fail("execution_mode", f"expected an ExecutionMode, got {self.execution_mode!r}")
        if not isinstance(self.failure_mode, FailureMode):
            raise self._fail("failure_mode", f"expected a FailureMode, got {self.failure_mode!r}")
        if self.execution_mode == ExecutionMode.AT_MOST_ONCE and self.failure_mode != FailureMode.NONE:
            raise self._fail("failure_mode", "not applicable when execution_mode is AT_MOST_ONCE")
        if not isinstance(self.lease_duration, datetime.timedelta) or self.lease_duration <= datetime.timedelta():
            raise self._fail("lease_duration", f"must be a positive timedelta, got {self.lease_duration!r}")

        specs = [n for n in _INSTANCE_FIELDS[:3] if getattr(self, n) is not None]
        if not self.dynamic:
            if len(specs) != 1:
                given = ", ".join(specs) or "none"
                raise self._fail(
                    "schedule", f"exactly one of schedule, interval, execute_at must be given (got {given})"
                )
        elif len(specs) > 1:
            raise self._fail(
                "schedule", f"at most one of schedule, interval, execute_at may be given (got {', '.join(specs)})"
            )

        if self.timezone is not None:
            if self.schedule is None and not (self.dynamic and self.interval is None and self.execute_at is None):
                raise self._fail("timezone", "may only be given with a cron schedule")
            try:
                resolve_timezone(self.timezone)
            except ValueError as e:
                raise InvalidScheduleError(f"task {self.canonical_name!r}: timezone: {e}") from None
        if self.schedule is not None:
            self.cron_expressions = self._resolve_cron(self.schedule)
        if self.interval is not None:
            if not isinstance(self.interval, datetime.timedelta):
                raise self._fail("interval", f"expected a timedelta, got {self.interval!r}")
            if self.interval <= datetime.timedelta():
                raise self._fail("interval", f"must be positive, got {self.interval}")
            try:  # computed like the schedule: the next run must be a representable time
                datetime.datetime.now(UTC) + self.interval
            except OverflowError:
                raise InvalidScheduleError(
                    f"task {self.canonical_name!r}: interval: {self.interval} is too long (no next run time)"
                ) from None
        if self.anchor is not None and (not isinstance(self.anchor, datetime.datetime) or self.anchor.tzinfo is None):
            raise self._fail("anchor", f"expected a timezone-aware datetime, got {self.anchor!r}")
        if self.execute_at is not None:
            if not isinstance(self.execute_at, datetime.datetime):
                raise self._fail("execute_at", f"expected a datetime, got {self.execute_at!r}")
            if self.parent_task is None:
                raise self._fail("execute_at", "only supported for dynamic task instances")
        try:
            json.dumps(self.extra_args)
        except (TypeError, ValueError) as e:
            raise self._fail("args", f"must be JSON serializable ({e})") from None

    def _resolve_cron(self, schedule: str | list[str]) -> tuple[str, ...]:
        if not isinstance(schedule, (str, list)):
            raise self._fail("schedule", f"expected a cron expression or a list of them, got {schedule!r}")
        expressions = [schedule] if isinstance(schedule, str) else schedule
        if not expressions:
            raise self._fail("schedule", "an empty list; give at least one cron expression")
        resolved: dict[str, None] = {}
        for index, expression in enumerate(expressions):
            where = "schedule" if isinstance(schedule, str) else f"schedule[{index}]"
            if not isinstance(expression, str):
                raise self._fail(where, f"expected a cron expression string, got {expression!r}")
            try:
                concrete = spread_cron(expression, self.name)
                check_cron(concrete, self.timezone)  # parses it and computes its next time
            except ValueError as e:
                raise InvalidCronError(f"task {self.canonical_name!r}: {where}: {e}") from None
            resolved[concrete] = None
        return tuple(resolved)

    def get_next_execution(
        self, utc_now: datetime.datetime, last_execution: datetime.datetime | None
    ) -> datetime.datetime | None:
        """When this task is due next, given the last scheduled time (None: never ran).

        Missed times (the next one after ``last_execution`` is already past) are all run in turn by
        default, skipped with ``fast_forward`` (the next time is the first one in the future), or,
        with ``catch_up_latest``, collapsed into the most recent one (CronJob's rule: after an
        outage only the latest missed time runs). A recurring instance that never ran counts from
        ``anchor`` when it has one (a time it is known to have last run), else from now.
        """
        if self.execute_at is not None:
            return self.execute_at.astimezone(UTC) if last_execution is None else None

        if last_execution is None and self.anchor is not None:
            last_execution = self.anchor.astimezone(UTC)
        current = last_execution if last_execution is not None else utc_now
        if self.interval is not None:
            if last_execution is None:
                return current + self.interval
            if self.catch_up_latest:
                passed = (utc_now - last_execution) // self.interval
                return last_execution + self.interval * max(1, passed)
            if not self.fast_forward:
                return current + self.interval
            missed = (utc_now - last_execution) // self.interval + 1
            return last_execution + self.interval * missed

        if self.cron_expressions:
            if self.catch_up_latest and last_execution is not None:
                following = next_union_time(self.cron_expressions, last_execution, self.timezone)
                if following is None or following > utc_now:
                    return following
                latest = max(
                    (t for t in (latest_cron_time(e, utc_now, self.timezone) for e in self.cron_expressions) if t),
                    default=None,
                )
                return latest if latest is not None and latest > following else following
            if self.fast_forward and last_execution is not None and utc_now - _RESOLUTION > current:
                # The first slot after the last run that is not in the past: computed directly from
                # now, O(1) however many slots were missed (a day of a per-second cron is 86,400).
                current = utc_now - _RESOLUTION
            return next_union_time(self.cron_expressions, current, self.timezone)

        raise AssertionError(f"task {self.canonical_name} has no schedule")

    def instantiate(self, name: str, **kwargs: Any) -> Task:
        """Creates a concrete instance of a dynamic task.

        ``schedule``/``interval``/``execute_at``/``timezone`` set the instance's schedule (defaulting
        to the template's); ``fast_forward``, ``execution_mode``, ``failure_mode`` and
        ``lease_duration`` override the template's; every other keyword goes to ``context.args``.
        """
        if not self.dynamic:
            raise ValueError(f"task {self.canonical_name!r}: cannot instantiate a non-dynamic task")

        own = {key: kwargs.pop(key) for key in _INSTANCE_FIELDS if key in kwargs}
        if not any(own.get(key) is not None for key in _INSTANCE_FIELDS[:3]):
            for key in _INSTANCE_FIELDS:
                own.setdefault(key, getattr(self, key))
        overrides = {key: kwargs.pop(key) for key in _OVERRIDE_FIELDS if key in kwargs}

        settings: dict[str, Any] = {
            "fast_forward": self.fast_forward,
            "failure_mode": self.failure_mode,
            "execution_mode": self.execution_mode,
            "lease_duration": self.lease_duration,
            "catch_up_latest": self.catch_up_latest,
            **overrides,
        }
        return Task(
            name=name,
            func=self.task_func,
            parent_task=self,
            **settings,
            **own,
            **{**self.extra_args, **kwargs},
        )

    @property
    def enabled(self) -> bool:
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._enabled = value

    @property
    def canonical_name(self) -> str:
        """A unique identifier for a task instance (``parent:instance``, colons doubled).

        Computed once: the backends ask for it several times per execution.
        """
        cached = self._canonical_name
        if cached is not None:
            return cached
        own = self.name.replace(":", "::") if isinstance(self.name, str) else repr(self.name)
        if self.parent_task is not None:
            own = f"{self.parent_task.canonical_name}:{own}"
        self._canonical_name = own
        return own

    def as_spec(self) -> dict[str, Any]:
        """Serializes an instance to the JSON-compatible spec the backends store.

        ``name`` and ``execute_at`` come first: in the stored text (``spec_text``) they are all that
        tells apart the one-off instances of a template scheduled with the same settings, which
        ``instantiate_from_spec`` uses to rebuild those without parsing the rest.
        """
        return {
            "name": self.name,
            "execute_at": self.execute_at.isoformat() if self.execute_at is not None else None,
            "schedule": self.schedule,
            "interval": self.interval.total_seconds() if self.interval is not None else None,
            "timezone": self.timezone,
            "fast_forward": self.fast_forward,
            "execution_mode": self.execution_mode.name,
            "failure_mode": self.failure_mode.name,
            "lease_duration": self.lease_duration.total_seconds(),
            "catch_up_latest": self.catch_up_latest,
            "anchor": self.anchor.isoformat() if self.anchor is not None else None,
            "extra_args": self.extra_args,
        }

    def instantiate_from_spec(self, task_spec: dict[str, Any] | str) -> Task:
        """Rebuilds an instance of this template from a stored spec (a dict, or its JSON text).

        1.x specs are accepted too. A stored spec was written from an instance that passed
        validation, so it is rebuilt on a trusted path (``_rebuild``): the shape of every field is
        checked, cron expressions are checked once per distinct expression and time zone, and the
        public constructor with its full validation is skipped (it was most of a worker's CPU per
        execution). A spec that does not have the right shape raises ValueError, which the
        backends turn into a quarantined row.

        The template remembers the recurring instances it rebuilt lately (bounded, per instance
        name) and hands the same Task back while the stored spec is unchanged. One-off instances
        (``execute_at``) run once and are not remembered. Instances are never mutated in use,
        which makes sharing them safe.
        """
        if not self.dynamic:  # instances have no caches of their own (two dicts fewer per execution)
            raise ValueError(f"task {self.canonical_name!r}: cannot instantiate a non-dynamic task")
        if isinstance(task_spec, str):
            one_off = self._one_off(task_spec)
            if one_off is not None:
                return one_off
        spec: dict[str, Any] = _parse_spec(task_spec) if isinstance(task_spec, str) else task_spec
        if spec.get("execute_at") is not None:
            return self._rebuild(spec)
        cache = self._spec_cache
        cached = cache.get(spec["name"])
        if cached is not None and cached[0] == spec:
            return cached[1]
        instance = self._rebuild(spec)
        if cached is None and len(cache) >= _SPEC_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[spec["name"]] = (spec, instance)
        return instance

    def _one_off(self, text: str) -> Task | None:
        """A one-off instance from spec text as ``spec_text`` writes it, or None (take the full path).

        Such a text is ``{"name":N,"execute_at":T`` followed by the rest of the spec, and one-offs
        scheduled in bulk share that rest. The first instance of each rest (a "shape", at most
        ``_SHAPE_CACHE_SIZE`` per template) is rebuilt and checked on the full path; later ones copy
        it with their own name and time, so only those two values are parsed. The rest is compared
        as text: same text, same fields, same checks passed.
        """
        if not text.startswith('{"name":"'):
            return None
        try:
            name, end = _SCAN_JSON(text, 8)
            if not text.startswith(',"execute_at":"', end):
                return None
            execute_at, end = _SCAN_JSON(text, end + 14)
        except (StopIteration, ValueError):
            return None
        rest = text[end:]
        shape = self._shapes.get(rest)
        if shape is None:
            spec = _parse_spec(text)
            instance = self._rebuild(spec)
            if spec["name"] == name and spec["execute_at"] == execute_at:  # no repeated keys in the rest
                shapes = self._shapes
                if len(shapes) >= _SHAPE_CACHE_SIZE:
                    del shapes[next(iter(shapes))]
                shapes[rest] = instance
            return instance
        if not name:
            return None  # the full path says what is wrong
        try:
            when = datetime.datetime.fromisoformat(execute_at)
        except ValueError:
            return None
        instance = Task.__new__(Task)
        fields = shape.__dict__.copy()  # a copy of the whole dict: twice as fast as filling an empty one
        fields["name"] = name
        fields["execute_at"] = when
        fields["_canonical_name"] = None
        if shape.extra_args:
            fields["extra_args"] = dict(shape.extra_args)
        instance.__dict__ = fields
        return instance

    def _rebuild(self, spec: dict[str, Any]) -> Task:
        """An instance of this template from a stored spec, without the public constructor (only
        ``instantiate_from_spec`` calls it, after checking that this task is dynamic)."""
        name = spec["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"task name must be a non-empty string, got {name!r}")
        extra_args = spec.get("extra_args") or {}
        if not isinstance(extra_args, dict):
            raise ValueError(f"task {name!r}: args: expected an object, got {extra_args!r}")
        instance = Task.__new__(Task)
        instance._enabled = True
        instance.name = name
        instance.task_func = self.task_func
        instance.dynamic = False
        instance.parent_task = self
        instance._canonical_name = None
        instance.extra_args = {**self.extra_args, **extra_args} if self.extra_args else extra_args

        fast_forward = spec.get("fast_forward")
        instance.fast_forward = self.fast_forward if fast_forward is None else bool(fast_forward)
        mode = spec.get("execution_mode")
        instance.execution_mode = _EXECUTION_MODES[mode] if mode else self.execution_mode
        failure = spec.get("failure_mode")
        instance.failure_mode = _FAILURE_MODES[failure] if failure else self.failure_mode
        lease = spec.get("lease_duration")
        if lease is None or (lease.__class__ is float and lease == self.lease_duration.total_seconds()):
            instance.lease_duration = self.lease_duration  # the usual case: no timedelta per instance
        else:
            instance.lease_duration = _positive_seconds(lease, "lease_duration")
        instance.catch_up_latest = bool(spec.get("catch_up_latest")) or self.catch_up_latest
        anchor = spec.get("anchor")
        instance.anchor = self.anchor if not anchor else _aware_datetime(anchor, "anchor", aware=True)

        schedule, interval, execute_at = spec.get("schedule"), spec.get("interval"), spec.get("execute_at")
        timezone = spec.get("timezone")
        if schedule is None and interval is None and execute_at is None:
            schedule, interval, execute_at, timezone = self.schedule, None, None, self.timezone
            interval_td = self.interval
            execute_at_dt = self.execute_at
        else:
            interval_td = None if interval is None else _positive_seconds(interval, "interval")
            execute_at_dt = None if execute_at is None else _aware_datetime(execute_at, "execute_at")
        if (schedule is not None) + (interval_td is not None) + (execute_at_dt is not None) != 1:
            raise ValueError(f"task {name!r}: schedule: exactly one of schedule, interval, execute_at must be given")
        if timezone is not None and not isinstance(timezone, str):
            raise ValueError(f"task {name!r}: timezone: expected a name, got {timezone!r}")
        instance.schedule = list(schedule) if isinstance(schedule, list) else schedule
        instance.interval = interval_td
        instance.execute_at = execute_at_dt
        instance.timezone = timezone
        instance.cron_expressions = () if schedule is None else instance._resolve_cron(schedule)
        return instance

    def __call__(self, context: Context) -> Awaitable[None]:
        return self.task_func(context)

    def __str__(self) -> str:
        return self.canonical_name

    def __repr__(self) -> str:
        return f"<Task {self.canonical_name}>"


# The JSON decoder's scanner: one C call for a spec as we write it, without json.loads' wrappers.
_SCAN_JSON: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def spec_text(task: Task) -> str:
    """The JSON text of ``task.as_spec()`` as the backends store it (compact, in as_spec's order)."""
    return json.dumps(task.as_spec(), separators=(",", ":"))


def _parse_spec(text: str) -> Any:
    """A stored spec's JSON text, parsed; anything unusual (whitespace, errors) goes through
    ``json.loads``, so a broken spec fails with json's own message."""
    try:
        value, end = _SCAN_JSON(text, 0)
    except (StopIteration, ValueError):
        end = -1
    if end != len(text):
        return json.loads(text)
    return value


def _positive_seconds(value: Any, field: str) -> datetime.timedelta:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{field}: expected a positive number of seconds, got {value!r}")
    return datetime.timedelta(seconds=value)


def _aware_datetime(value: Any, field: str, *, aware: bool = False) -> datetime.datetime:
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected an ISO 8601 time, got {value!r}")
    parsed = datetime.datetime.fromisoformat(value)
    if aware and parsed.tzinfo is None:
        raise ValueError(f"{field}: expected a time with a UTC offset, got {value!r}")
    return parsed


def _default_partition_selector(partition_count: int, task_id: str) -> int:
    digest = hashlib.sha1(task_id.encode("utf-8"), usedforsecurity=False).digest()
    return (int.from_bytes(digest, "big") * partition_count) >> (8 * len(digest))


class _TaskPartition(Task):
    """One partition of a PartitionedTask: polled independently, named ``template:partition``."""

    partition_id: int
    _parent: PartitionedTask

    def __init__(self, parent: PartitionedTask, partition_id: int, **kwargs: Any) -> None:
        self._parent = parent
        self.partition_id = partition_id
        super().__init__(dynamic=True, **kwargs)

    @property
    def enabled(self) -> bool:
        parts = self._parent.enabled_partitions
        return self._parent.enabled and (parts is None or self.partition_id in parts)

    @enabled.setter
    def enabled(self, value: bool) -> None:
        raise ValueError("Use enabled_partitions to disable polling a partition.")

    @property
    def canonical_name(self) -> str:
        return f"{self.name.replace(':', '::')}:{self.partition_id}"


class PartitionedTask(Task):
    """A dynamic task whose instances are spread over ``partition_count`` partitions by name."""

    _kwargs: dict[str, Any]
    partition_count: int
    partition_selector: PartitionSelector
    enabled_partitions: list[int] | None

    def __init__(
        self,
        *,
        partition_count: int,
        partition_selector: PartitionSelector = _default_partition_selector,
        enabled_partitions: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(partition_count, int) or partition_count < 1:
            raise ValueError(
                f"task {kwargs.get('name')!r}: partition_count: must be an integer >= 1, got {partition_count!r}"
            )
        super().__init__(dynamic=True, **kwargs)
        self.partition_count = partition_count
        self.partition_selector = partition_selector
        self.enabled_partitions = enabled_partitions
        self._kwargs = kwargs
        self._partitions = [_TaskPartition(self, partition_id=i, **kwargs) for i in range(partition_count)]

    def get_partitions(self) -> list[Task]:
        return list(self._partitions)

    def instantiate(self, name: str, **kwargs: Any) -> Task:
        partition_id = self.partition_selector(self.partition_count, name)
        return self._partitions[partition_id].instantiate(name, **kwargs)
