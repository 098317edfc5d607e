"""A PyncetteTask's spec → a validated ``TaskSpec``, or the reason it cannot run.

The API server already enforces the CRD schema and its CEL rules; this module re-checks the same
one-of rules (a CRD applied from an older version, or a schema bypassed, must not crash the
operator) and adds what only the operator can judge: cron syntax, time zone names, handler names
(and whether they serve the task's namespace), ServiceAccounts, schedules more frequent than
``--min-interval``, and the serialized size of ``podTemplate`` and handler args. A problem is an
``InvalidTask`` with a condition reason and a one-line message naming the field, so it can go
straight into ``Ready=False`` and a Warning Event.

Everything in a PyncetteTask is written by a tenant: the messages built here quote the tenant's own
values and the operator's policy, never anything about the backend or other namespaces.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import re
from collections.abc import Collection
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from croniter import croniter

from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.schedule import check_cron
from pyncette.schedule import resolve_timezone
from pyncette.schedule import spread_cron

GROUP = "pyncette.dev"
VERSION = "v1"
PLURAL = "pyncettetasks"
KIND = "PyncetteTask"
RUN_NOW_ANNOTATION = "pyncette.dev/run-now"
RESUME_ANNOTATION = "pyncette.dev/resume"
BACKFILL_ANNOTATION = "pyncette.dev/backfill"

_GROUP_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_EXECUTION_MODES = {"AtLeastOnce": ExecutionMode.AT_LEAST_ONCE, "AtMostOnce": ExecutionMode.AT_MOST_ONCE}
_FAILURE_MODES = {"None": FailureMode.NONE, "Unlock": FailureMode.UNLOCK, "Commit": FailureMode.COMMIT}
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")


class Reason:
    """Condition reasons for Ready=False that the operator decides (the API server rejects the rest)."""

    INVALID_SCHEDULE = "InvalidSchedule"
    UNKNOWN_TIMEZONE = "UnknownTimezone"
    UNKNOWN_HANDLER = "UnknownHandler"
    FORBIDDEN_SERVICE_ACCOUNT = "ForbiddenServiceAccount"
    SCHEDULE_TOO_FREQUENT = "ScheduleTooFrequent"
    SPEC_TOO_LARGE = "SpecTooLarge"
    NAMESPACE_NOT_SERVED = "NamespaceNotServed"
    INVALID_SPEC = "InvalidSpec"


MAX_POD_TEMPLATE_BYTES = 128 * 1024
"""The largest ``spec.podTemplate`` (as compact JSON) the operator runs. A Pod template is a few KiB;
the bound keeps one tenant from filling the operator's cache (every replica keeps each task's spec)
and the apiserver with huge Pods, one per run."""

MAX_HANDLER_ARGS_BYTES = 32 * 1024
"""The largest ``spec.handler.args`` (as compact JSON) the operator passes to a handler."""

RESTART_POLICIES = ("Never", "OnFailure")
"""``Always`` is refused: such a Pod never finishes, so its run never ends."""

_CRON_SAMPLE = 64
_CRON_SAMPLE_FROM = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class TaskPolicy:
    """What the operator's flags allow a PyncetteTask to do (the defaults are the CLI's)."""

    allowed_service_accounts: frozenset[str] | None = None
    """``--allowed-service-accounts``: ``name`` (in any namespace) or ``namespace:name`` entries;
    None allows any ServiceAccount of the task's namespace."""

    own_service_account: tuple[str, str] | None = None
    """(namespace, name) of the operator's own ServiceAccount: a podTemplate naming it is always
    refused, whatever ``allowed_service_accounts`` says (its token can create Pods everywhere the
    operator serves)."""

    min_interval: datetime.timedelta = datetime.timedelta(seconds=1)
    """``--min-interval``: an interval, or a cron schedule whose runs come closer together, is refused."""

    backfill_max_slots: int = 1000
    """``--backfill-max-slots``: a ``pyncette.dev/backfill`` request covering more slots is refused."""

    excluded_namespaces: frozenset[str] = frozenset()
    """``--exclude-namespace``: watched (all-namespaces mode) but not served, such as the operator's
    own namespace, whose Secrets and ServiceAccounts a task's Pod there could use."""


def service_account_allowed(allowed: Collection[str] | None, namespace: str, account: str) -> bool:
    """Whether ``--allowed-service-accounts`` entries (``name`` or ``namespace:name``) allow ``account``."""
    return allowed is None or account in allowed or f"{namespace}:{account}" in allowed


def json_size(value: Any) -> int:
    """The size in bytes of ``value`` as compact JSON (what the size limits measure)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


@functools.lru_cache(maxsize=1024)
def shortest_cron_gap(expression: str) -> datetime.timedelta:
    """The shortest time between two runs among the first runs of ``expression`` from a fixed date.

    Cron has no "interval"; ``0,1 0 * * *`` runs twice a minute apart once a day. The first
    ``_CRON_SAMPLE`` runs from 2030-01-01 show every pattern that repeats within a day or an hour.
    Cached by expression: tenants share a few expressions, and a start-up lists every task.
    """
    cron: Any = croniter(expression, start_time=_CRON_SAMPLE_FROM, ret_type=datetime.datetime)
    previous: datetime.datetime = cron.get_next()
    shortest = datetime.timedelta.max
    for _ in range(_CRON_SAMPLE):
        current: datetime.datetime = cron.get_next()
        shortest = min(shortest, current - previous)
        previous = current
    return shortest


@dataclass(frozen=True)
class InvalidTask:
    """Why a PyncetteTask cannot be scheduled: a condition reason and a one-line message."""

    reason: str
    message: str


def parse_duration(text: str) -> datetime.timedelta:
    """``30s``, ``5m``, ``1h30m``, ``1d``, ``500ms`` → timedelta; ValueError otherwise."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {text!r}")
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h, got {text!r}")
    return datetime.timedelta(seconds=total)


def format_duration(delta: datetime.timedelta) -> str:
    """The inverse of ``parse_duration`` for display (``90s`` → ``1m30s``)."""
    seconds = delta.total_seconds()
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            count = int(seconds // size)
            out.append(f"{count}{unit}")
            seconds -= count * size
    if seconds:
        out.append(f"{seconds:g}s")
    return "".join(out)


def parse_time(text: str) -> datetime.datetime:
    """An RFC 3339 time (``Z`` or an offset) → aware UTC datetime; ValueError otherwise."""
    value = datetime.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone offset")
    return value.astimezone(datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    """UTC RFC 3339 with a ``Z`` and whole seconds, as Kubernetes writes times."""
    return value.astimezone(datetime.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_key(namespace: str, name: str) -> str:
    """The backend instance name of a PyncetteTask: ``namespace/name`` (unique in a cluster)."""
    return f"{namespace}/{name}"


def run_now_key(namespace: str, name: str, value: str) -> str:
    """The one-off backend instance of a "run now" request: ``namespace/name@run-now:value``."""
    return f"{task_key(namespace, name)}@run-now:{value}"


RUN_NOW_DONE = "run-now-done"
BACKFILL_DONE = "backfill-done"


def run_now_done_key(namespace: str, name: str, value: str) -> str:
    """The backend marker of a "run now" whose run has ended: ``namespace/name@run-now-done:value``
    (see ``Mirror.mark_run_now_done``)."""
    return f"{task_key(namespace, name)}@{RUN_NOW_DONE}:{value}"


def backfill_done_key(namespace: str, name: str, value: str) -> str:
    """The backend marker of the handler slots of a backfill that have ended:
    ``namespace/name@backfill-done:value`` (see ``Mirror.mark_backfill_slot_done``)."""
    return f"{task_key(namespace, name)}@{BACKFILL_DONE}:{value}"


def is_done_marker(instance: str) -> bool:
    """True for the instance names of the two markers above (they never run anything)."""
    _, at, trigger = instance.partition("@")
    return bool(at) and trigger.startswith((f"{RUN_NOW_DONE}:", f"{BACKFILL_DONE}:"))


def backfill_key(namespace: str, name: str, value: str) -> str:
    """The backend instance of a backfill request: ``namespace/name@backfill:value``."""
    return f"{task_key(namespace, name)}@backfill:{value}"


def split_instance_name(instance: str) -> tuple[str, str, str | None]:
    """``ns/name[@run-now:value | @backfill:value]`` → (namespace, name, run-now value or None).

    Kubernetes names never contain ``@``, so everything after the first one is the trigger.
    """
    base, _, trigger = instance.partition("@")
    namespace, _, name = base.partition("/")
    kind, sep, value = trigger.partition(":")
    return namespace, name, (value if sep and kind == "run-now" else None)


def backfill_of(instance: str) -> str | None:
    """The backfill value of a backfill instance's name (``ns/name@backfill:value``), else None."""
    _, at, trigger = instance.partition("@")
    kind, sep, value = trigger.partition(":")
    return value if at and sep and kind == "backfill" else None


@dataclass(frozen=True)
class TaskSpec:
    """A validated PyncetteTask: everything the mirror and the runs need, and nothing else."""

    namespace: str
    name: str
    uid: str
    generation: int
    schedule: str | None = None
    schedules: tuple[str, ...] = ()
    """``spec.schedules`` as written (empty unless given): the task runs at their union."""
    interval: datetime.timedelta | None = None
    execute_at: datetime.datetime | None = None
    timezone: str | None = None
    suspend: bool = False
    execution_mode: ExecutionMode = ExecutionMode.AT_LEAST_ONCE
    failure_mode: FailureMode = FailureMode.NONE
    lease_duration: datetime.timedelta = datetime.timedelta(seconds=60)
    jitter: datetime.timedelta | None = None
    """``spec.jitter``: each scheduled run starts after a delay in [0, jitter) derived from uid and slot."""
    concurrency_policy: str = "Allow"
    pod_template: dict[str, Any] | None = None
    handler_name: str | None = None
    handler_args: dict[str, Any] = field(default_factory=dict)
    successful_runs_history_limit: int = 3
    failed_runs_history_limit: int = 1
    run_now: str | None = None
    suspend_after_failures: int | None = None
    """``spec.suspendAfterFailures``: the circuit breaker stops scheduling after this many
    consecutive failed scheduled runs (see ``pyncette_operator.breaker``). None: never."""
    concurrency_group: tuple[str, int] | None = None
    """``spec.concurrencyGroup`` as (name, maxActive): at most maxActive runs of the group's tasks
    in this namespace at once, across replicas (see ``runs.groups``)."""
    backfill: str | None = None
    """The ``pyncette.dev/backfill`` annotation's value (``<start>/<end>``), not yet validated."""
    max_success_age: datetime.timedelta | None = None
    """``spec.maxSuccessAge``: the ``Stale`` condition turns True when the last success is older."""
    resume: str = ""
    """The ``pyncette.dev/resume`` annotation's value ("" when absent): a new value resumes a task
    stopped by the circuit breaker."""
    starting_deadline: datetime.timedelta | None = None
    """``startingDeadlineSeconds``: a run that cannot start within this of its scheduled time is
    skipped (counted as missed). None: no deadline (as CronJob)."""
    backoff_limit: int = 6
    """``backoffLimit``: failed attempts of one scheduled run retried at most this many times
    (Job's default 6), with exponential backoff; then the run is recorded as failed."""
    active_deadline: datetime.timedelta | None = None
    """``activeDeadlineSeconds``: one attempt may run at most this long (its Pod is deleted, its
    handler cancelled, and the attempt counts as failed)."""

    @property
    def key(self) -> str:
        return task_key(self.namespace, self.name)

    @property
    def is_pod(self) -> bool:
        return self.pod_template is not None

    @property
    def cron_expressions(self) -> tuple[str, ...]:
        """The cron expressions as they run: ``H`` resolved from ``namespace/name`` (empty without cron)."""
        written = self.schedules or ((self.schedule,) if self.schedule is not None else ())
        return tuple(dict.fromkeys(spread_cron(expression, self.key) for expression in written))

    def schedule_kwargs(self) -> dict[str, Any]:
        """The ``schedule_task`` keywords for the recurring instance: when, and the per-task overrides.

        Missed scheduled times (operator down, a Forbid run longer than the period, a resume) are
        collapsed into the most recent one, whatever the concurrency policy (``catch_up_latest``,
        CronJob's rule): never a burst of catch-up runs.
        """
        when: dict[str, Any]
        if self.schedules:
            when = {"schedule": list(self.schedules), "timezone": self.timezone}
        elif self.schedule is not None:
            when = {"schedule": self.schedule, "timezone": self.timezone}
        elif self.interval is not None:
            when = {"interval": self.interval}
        else:
            when = {"execute_at": self.execute_at}
        return {
            **when,
            "execution_mode": self.execution_mode,
            "failure_mode": self.failure_mode,
            "lease_duration": self.lease_duration,
            "catch_up_latest": self.execute_at is None,
        }

    def describe_schedule(self) -> str:
        """The schedule in words for the printer column (``0 2 * * * (Europe/Dublin)``, ``every 30s``).

        Cron expressions are shown as they run, ``H`` resolved; several are joined with ``; ``.
        """
        if self.cron_expressions:
            text = "; ".join(self.cron_expressions)
            return f"{text} ({self.timezone})" if self.timezone else text
        if self.interval is not None:
            return f"every {format_duration(self.interval)}"
        assert self.execute_at is not None
        return f"at {format_time(self.execute_at)}"


def parse_task(
    body: Mapping[str, Any],
    *,
    handlers: Collection[str],
    policy: TaskPolicy = TaskPolicy(),
) -> TaskSpec | InvalidTask:
    """Validates a PyncetteTask object (as the API returns it) into a ``TaskSpec``.

    ``handlers`` are the handler names that serve the task's namespace (see
    ``HandlerRegistry.names``): a handler registered for other namespaces is unknown here.
    """
    meta = body.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    if namespace in policy.excluded_namespaces:
        return InvalidTask(
            Reason.NAMESPACE_NOT_SERVED,
            f"the operator does not run PyncetteTasks in namespace {namespace!r} (--exclude-namespace)",
        )
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return InvalidTask(Reason.INVALID_SPEC, "spec: missing or not an object")
    try:
        return _parse(meta, spec, handlers=handlers, policy=policy)
    except _Invalid as e:
        return InvalidTask(e.reason, e.message)


class _Invalid(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _parse(
    meta: Mapping[str, Any],
    spec: Mapping[str, Any],
    *,
    handlers: Collection[str],
    policy: TaskPolicy,
) -> TaskSpec:
    def bad(field_name: str, problem: str, reason: str = Reason.INVALID_SPEC) -> _Invalid:
        return _Invalid(reason, f"spec.{field_name}: {problem}")

    given = [k for k in ("schedule", "schedules", "interval", "executeAt") if spec.get(k) is not None]
    if len(given) != 1:
        raise _Invalid(
            Reason.INVALID_SPEC,
            "spec: exactly one of schedule, schedules, interval or executeAt must be set"
            f" (got {', '.join(given) or 'none'})",
        )
    if (spec.get("podTemplate") is None) == (spec.get("handler") is None):
        raise _Invalid(Reason.INVALID_SPEC, "spec: exactly one of podTemplate or handler must be set")

    schedule = spec.get("schedule")
    schedules = spec.get("schedules")
    timezone = spec.get("timezone")
    if timezone is not None and schedule is None and schedules is None:
        raise bad("timezone", "may only be set together with spec.schedule or spec.schedules")
    if timezone is not None:
        try:
            resolve_timezone(timezone if isinstance(timezone, str) else "")
        except ValueError:
            raise bad(
                "timezone",
                f"unknown time zone {timezone!r} (an IANA name such as Europe/Dublin, or UTC+N / UTC-N)",
                Reason.UNKNOWN_TIMEZONE,
            ) from None
    seed = task_key(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    written: list[tuple[str, Any]] = []
    if schedule is not None:
        written.append(("schedule", schedule))
    if schedules is not None:
        if not isinstance(schedules, list) or not schedules:
            raise bad("schedules", "expected a non-empty list of cron expressions", Reason.INVALID_SCHEDULE)
        written.extend((f"schedules[{index}]", expression) for index, expression in enumerate(schedules))
    resolved = tuple(_check_cron(expression, where, seed, timezone, bad) for where, expression in written)
    if resolved and policy.min_interval > datetime.timedelta(seconds=1):  # cron's own floor is one second
        gap = shortest_cron_gap(resolved[0]) if len(resolved) == 1 else _shortest_union_gap(resolved)
        if gap < policy.min_interval:
            raise bad(
                written[0][0] if len(written) == 1 else "schedules",
                f"runs {format_duration(gap)} apart, more often than the operator allows"
                f" (--min-interval {format_duration(policy.min_interval)})",
                Reason.SCHEDULE_TOO_FREQUENT,
            )

    interval = _duration(spec, "interval", bad)
    if interval is not None and interval <= datetime.timedelta():
        raise bad("interval", "must be positive")
    if interval is not None and interval < policy.min_interval:
        raise bad(
            "interval",
            f"{spec['interval']} is shorter than the operator allows (--min-interval"
            f" {format_duration(policy.min_interval)})",
            Reason.SCHEDULE_TOO_FREQUENT,
        )
    max_success_age = _duration(spec, "maxSuccessAge", bad)
    if max_success_age is not None and max_success_age <= datetime.timedelta():
        raise bad("maxSuccessAge", f"must be positive, got {spec.get('maxSuccessAge')!r}")
    jitter = _duration(spec, "jitter", bad)
    if jitter is not None:
        if jitter <= datetime.timedelta():
            raise bad("jitter", f"must be positive, got {spec.get('jitter')!r}")
        if interval is not None and jitter >= interval:
            shorter = f"must be shorter than spec.interval ({format_duration(interval)}) or runs would overlap"
            raise bad("jitter", shorter)
        if spec.get("executeAt") is not None:
            raise bad("jitter", "applies to recurring schedules, not to spec.executeAt")
    lease = _duration(spec, "leaseDuration", bad) or datetime.timedelta(seconds=60)
    if lease < datetime.timedelta(seconds=1):
        raise bad("leaseDuration", f"must be at least 1s, got {spec.get('leaseDuration')!r}")

    execute_at = None
    if spec.get("executeAt") is not None:
        try:
            execute_at = parse_time(str(spec["executeAt"]))
        except ValueError:
            raise bad("executeAt", f"expected an RFC 3339 time, got {spec['executeAt']!r}") from None

    execution_mode = _enum(spec, "executionMode", _EXECUTION_MODES, "AtLeastOnce", bad)
    failure_mode = _enum(spec, "failureMode", _FAILURE_MODES, "None", bad)
    if execution_mode == ExecutionMode.AT_MOST_ONCE and failure_mode != FailureMode.NONE:
        raise bad("failureMode", "must be None when executionMode is AtMostOnce")
    concurrency = spec.get("concurrencyPolicy") or "Allow"
    if concurrency not in CONCURRENCY_POLICIES:
        raise bad("concurrencyPolicy", f"expected one of {', '.join(CONCURRENCY_POLICIES)}, got {concurrency!r}")

    pod_template = spec.get("podTemplate")
    handler_name = None
    handler_args: dict[str, Any] = {}
    namespace = str(meta.get("namespace") or "")
    if pod_template is not None:
        pod_template = _check_pod_template(pod_template, namespace, policy, bad)
    else:
        handler = spec["handler"]
        if not isinstance(handler, Mapping) or not isinstance(handler.get("name"), str) or not handler["name"]:
            raise bad("handler.name", "missing")
        handler_name = handler["name"]
        if handler_name not in handlers:
            known = ", ".join(sorted(handlers)) or "none"
            raise bad(
                "handler.name",
                f"no handler named {handler_name!r} serves namespace {namespace!r} (available here: {known})",
                Reason.UNKNOWN_HANDLER,
            )
        args = handler.get("args") or {}
        if not isinstance(args, Mapping):
            raise bad("handler.args", "expected an object")
        size = json_size(args)
        if size > MAX_HANDLER_ARGS_BYTES:
            raise bad(
                "handler.args",
                f"{size} bytes as JSON, more than the limit of {MAX_HANDLER_ARGS_BYTES}",
                Reason.SPEC_TOO_LARGE,
            )
        handler_args = dict(args)

    annotations = meta.get("annotations") or {}
    run_now = annotations.get(RUN_NOW_ANNOTATION) or None
    return TaskSpec(
        namespace=namespace,
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        schedule=schedule,
        schedules=tuple(schedules or ()),
        interval=interval,
        execute_at=execute_at,
        timezone=timezone,
        suspend=bool(spec.get("suspend", False)),
        execution_mode=execution_mode,
        failure_mode=failure_mode,
        lease_duration=lease,
        jitter=jitter,
        concurrency_policy=concurrency,
        pod_template=pod_template,
        handler_name=handler_name,
        handler_args=handler_args,
        successful_runs_history_limit=_limit(spec, "successfulRunsHistoryLimit", 3, bad),
        failed_runs_history_limit=_limit(spec, "failedRunsHistoryLimit", 1, bad),
        run_now=str(run_now) if run_now is not None else None,
        suspend_after_failures=_optional_count(spec, "suspendAfterFailures", bad),
        max_success_age=max_success_age,
        concurrency_group=_concurrency_group(spec, bad),
        resume=str(annotations.get(RESUME_ANNOTATION) or ""),
        backfill=str(annotations[BACKFILL_ANNOTATION]) if annotations.get(BACKFILL_ANNOTATION) else None,
        starting_deadline=_seconds(spec, "startingDeadlineSeconds", 0, bad),
        backoff_limit=_limit(spec, "backoffLimit", 6, bad),
        active_deadline=_seconds(spec, "activeDeadlineSeconds", 1, bad),
    )


def _check_cron(expression: Any, where: str, seed: str, timezone: str | None, bad: Any) -> str:
    """The expression with ``H`` resolved, once it parses and has a next run time in ``timezone``."""
    if not isinstance(expression, str):
        raise bad(where, f"expected a string, got {expression!r}", Reason.INVALID_SCHEDULE)
    try:
        resolved = spread_cron(expression, seed)
        check_cron(resolved, timezone)  # parses it and computes its next run time in that zone
    except ValueError as e:
        raise bad(where, str(e), Reason.INVALID_SCHEDULE) from None
    return resolved


def _shortest_union_gap(expressions: tuple[str, ...]) -> datetime.timedelta:
    """``shortest_cron_gap`` of several expressions run as one schedule (their union).

    Two expressions each running hourly can run a minute apart (``0 * * * *`` and ``1 * * * *``).
    The first ``_CRON_SAMPLE`` runs of each are merged up to where the sparsest sample ends.
    """
    times: set[datetime.datetime] = set()
    horizon: datetime.datetime | None = None
    for expression in expressions:
        cron: Any = croniter(expression, start_time=_CRON_SAMPLE_FROM, ret_type=datetime.datetime)
        sample = [cron.get_next() for _ in range(_CRON_SAMPLE + 1)]
        times.update(sample)
        horizon = sample[-1] if horizon is None else min(horizon, sample[-1])
    ordered = sorted(t for t in times if horizon is None or t <= horizon)
    return min((b - a for a, b in itertools.pairwise(ordered)), default=datetime.timedelta.max)


def _duration(spec: Mapping[str, Any], name: str, bad: Any) -> datetime.timedelta | None:
    raw = spec.get(name)
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError as e:
        raise bad(name, str(e)) from None


def _enum(spec: Mapping[str, Any], name: str, values: Mapping[str, Any], default: str, bad: Any) -> Any:
    raw = spec.get(name) or default
    if raw not in values:
        raise bad(name, f"expected one of {', '.join(values)}, got {raw!r}")
    return values[raw]


def _concurrency_group(spec: Mapping[str, Any], bad: Any) -> tuple[str, int] | None:
    raw = spec.get("concurrencyGroup")
    if raw is None:
        return None
    name = raw.get("name") if isinstance(raw, Mapping) else None
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise bad("concurrencyGroup.name", f"expected a DNS label (a-z, 0-9, -), got {name!r}")
    limit = raw.get("maxActive")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise bad("concurrencyGroup.maxActive", f"expected an integer from 1 to 1000, got {limit!r}")
    return name, limit


def _optional_count(spec: Mapping[str, Any], name: str, bad: Any) -> int | None:
    raw = spec.get(name)
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 1:
        raise bad(name, f"expected an integer >= 1, got {raw!r}")
    return raw


def _limit(spec: Mapping[str, Any], name: str, default: int, bad: Any) -> int:
    raw = spec.get(name, default)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise bad(name, f"expected an integer >= 0, got {raw!r}")
    return raw


def _seconds(spec: Mapping[str, Any], name: str, minimum: int, bad: Any) -> datetime.timedelta | None:
    raw = spec.get(name)
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < minimum:
        raise bad(name, f"expected an integer >= {minimum} (seconds), got {raw!r}")
    return datetime.timedelta(seconds=raw)


def _check_pod_template(template: Any, namespace: str, policy: TaskPolicy, bad: Any) -> dict[str, Any]:
    if not isinstance(template, Mapping) or not isinstance(template.get("spec"), Mapping):
        raise bad("podTemplate.spec", "missing or not an object")
    size = json_size(template)
    if size > MAX_POD_TEMPLATE_BYTES:
        raise bad(
            "podTemplate",
            f"{size} bytes as JSON, more than the limit of {MAX_POD_TEMPLATE_BYTES}",
            Reason.SPEC_TOO_LARGE,
        )
    pod_spec = template["spec"]
    containers = pod_spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise bad("podTemplate.spec.containers", "at least one container is required")
    restart = pod_spec.get("restartPolicy")
    if restart is not None and restart not in RESTART_POLICIES:
        raise bad(
            "podTemplate.spec.restartPolicy", f"must be Never or OnFailure (a run's Pod must finish), got {restart!r}"
        )
    account = pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default"
    if policy.own_service_account == (namespace, account):
        raise bad(
            "podTemplate.spec.serviceAccountName",
            f"ServiceAccount {account!r} is the operator's own and may not run tasks",
            Reason.FORBIDDEN_SERVICE_ACCOUNT,
        )
    allowed = policy.allowed_service_accounts
    if not service_account_allowed(allowed, namespace, account):
        assert allowed is not None
        here = sorted(a.rpartition(":")[2] for a in allowed if ":" not in a or a.startswith(f"{namespace}:"))
        raise bad(
            "podTemplate.spec.serviceAccountName",
            f"ServiceAccount {account!r} is not allowed by the operator in namespace {namespace!r}"
            f" (allowed here: {', '.join(here) or 'none'})",
            Reason.FORBIDDEN_SERVICE_ACCOUNT,
        )
    return dict(template)
