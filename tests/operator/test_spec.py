"""Spec parsing: what the operator alone can judge becomes (reason, one-line message)."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.schedule import spread_cron
from pyncette_operator.spec import InvalidTask
from pyncette_operator.spec import TaskPolicy
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_duration
from pyncette_operator.spec import parse_duration
from pyncette_operator.spec import parse_task
from pyncette_operator.spec import run_now_key
from pyncette_operator.spec import split_instance_name

POD = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}


def body(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": "hello", "uid": "u-1", "generation": 4, "annotations": {}},
        "spec": spec,
    }


def parse(
    *,
    handlers: tuple[str, ...] = ("report",),
    accounts: set[str] | None = None,
    own: tuple[str, str] | None = None,
    min_interval: float = 1.0,
    **spec: Any,
) -> TaskSpec | InvalidTask:
    policy = TaskPolicy(
        allowed_service_accounts=None if accounts is None else frozenset(accounts),
        own_service_account=own,
        min_interval=datetime.timedelta(seconds=min_interval),
    )
    return parse_task(body(**spec), handlers=handlers, policy=policy)


def test_valid_pod_task_with_overrides() -> None:
    task = parse(
        schedule="*/10 * * * * *",
        timezone="Europe/Dublin",
        podTemplate=POD,
        executionMode="AtLeastOnce",
        failureMode="Unlock",
        leaseDuration="1m30s",
        concurrencyPolicy="Forbid",
    )
    assert isinstance(task, TaskSpec)
    assert (task.namespace, task.name, task.uid, task.generation) == ("ns", "hello", "u-1", 4)
    assert task.key == "ns/hello"
    kwargs = task.schedule_kwargs()
    assert kwargs == {
        "schedule": "*/10 * * * * *",
        "timezone": "Europe/Dublin",
        "execution_mode": ExecutionMode.AT_LEAST_ONCE,
        "failure_mode": FailureMode.UNLOCK,
        "lease_duration": datetime.timedelta(seconds=90),
        "catch_up_latest": True,
    }
    assert task.describe_schedule() == "*/10 * * * * * (Europe/Dublin)"


def test_interval_handler_task() -> None:
    task = parse(interval="30s", handler={"name": "report", "args": {"to": ["a@b"]}})
    assert isinstance(task, TaskSpec)
    assert task.interval == datetime.timedelta(seconds=30)
    assert task.handler_args == {"to": ["a@b"]}
    assert not task.is_pod
    assert task.describe_schedule() == "every 30s"
    assert task.schedule_kwargs()["catch_up_latest"] is True
    assert (task.backoff_limit, task.starting_deadline, task.active_deadline) == (6, None, None)


def test_execute_at() -> None:
    task = parse(executeAt="2030-01-01T00:00:00Z", podTemplate=POD)
    assert isinstance(task, TaskSpec)
    assert task.execute_at == datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert task.describe_schedule() == "at 2030-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("spec", "reason", "fragment"),
    [
        ({"schedule": "not a cron", "podTemplate": POD}, "InvalidSchedule", "spec.schedule"),
        ({"schedule": "61 * * * *", "podTemplate": POD}, "InvalidSchedule", "spec.schedule"),
        # Parses, but no date ever matches (30 February): found by computing the next run time.
        ({"schedule": "0 0 30 2 *", "podTemplate": POD}, "InvalidSchedule", "no next run time"),
        ({"schedule": "* * * * *", "timezone": "Mars/Olympus", "podTemplate": POD}, "UnknownTimezone", "Mars/Olympus"),
        ({"interval": "10s", "handler": {"name": "nope"}}, "UnknownHandler", "'nope'"),
        ({"interval": "10s"}, "InvalidSpec", "exactly one of podTemplate or handler"),
        ({"interval": "10s", "schedule": "* * * * *", "podTemplate": POD}, "InvalidSpec", "exactly one of schedule"),
        ({"interval": "10s", "timezone": "UTC", "podTemplate": POD}, "InvalidSpec", "spec.timezone"),
        ({"interval": "0s", "podTemplate": POD}, "InvalidSpec", "spec.interval"),
        ({"schedules": ["0 9 * * *", "0 25 * * *"], "podTemplate": POD}, "InvalidSchedule", "spec.schedules[1]: "),
        ({"schedules": [], "podTemplate": POD}, "InvalidSchedule", "spec.schedules: expected a non-empty list"),
        ({"schedules": ["* * * * *"], "schedule": "* * * * *", "podTemplate": POD}, "InvalidSpec", "schedules"),
        ({"schedule": "H(0-99) * * * *", "podTemplate": POD}, "InvalidSchedule", "minute field 'H(0-99)'"),
        ({"interval": "ten", "podTemplate": POD}, "InvalidSpec", "spec.interval"),
        ({"interval": "1s", "leaseDuration": "100ms", "podTemplate": POD}, "InvalidSpec", "spec.leaseDuration"),
        (
            {"interval": "1s", "executionMode": "AtMostOnce", "failureMode": "Unlock", "podTemplate": POD},
            "InvalidSpec",
            "failureMode",
        ),
        ({"interval": "1s", "podTemplate": {"spec": {"containers": []}}}, "InvalidSpec", "containers"),
        (
            {"interval": "1s", "podTemplate": POD, "successfulRunsHistoryLimit": -1},
            "InvalidSpec",
            "successfulRunsHistoryLimit",
        ),
    ],
)
def test_invalid_specs_give_a_reason_and_a_one_line_message(spec: dict[str, Any], reason: str, fragment: str) -> None:
    result = parse(**spec)
    assert isinstance(result, InvalidTask)
    assert result.reason == reason
    assert fragment in result.message
    assert "\n" not in result.message


def test_several_schedules_run_at_their_union() -> None:
    task = parse(schedules=["0 9 * * mon-fri", "0 12 * * sat"], timezone="Europe/Dublin", podTemplate=POD)
    assert isinstance(task, TaskSpec)
    kwargs = task.schedule_kwargs()
    assert kwargs["schedule"] == ["0 9 * * mon-fri", "0 12 * * sat"] and kwargs["timezone"] == "Europe/Dublin"
    assert task.describe_schedule() == "0 9 * * mon-fri; 0 12 * * sat (Europe/Dublin)"


def test_h_is_resolved_from_namespace_and_name() -> None:
    task = parse(schedule="H H * * *", podTemplate=POD)
    assert isinstance(task, TaskSpec)
    assert task.describe_schedule() == spread_cron("H H * * *", "ns/hello")
    assert "H" not in task.describe_schedule()
    # The library resolves the stored instance ("ns/hello") to the same expression.
    assert task.cron_expressions == (spread_cron("H H * * *", task.key),)
    several = parse(schedules=["H * * * *", "30 H * * *"], podTemplate=POD)
    assert isinstance(several, TaskSpec)
    minute, hour = spread_cron("H * * * *", "ns/hello").split()[0], spread_cron("30 H * * *", "ns/hello").split()[1]
    assert several.describe_schedule() == f"{minute} * * * *; 30 {hour} * * *"


def test_forbidden_service_account() -> None:
    template = {"spec": {"serviceAccountName": "admin", "containers": [{"name": "c", "image": "x"}]}}
    result = parse(interval="1s", podTemplate=template, accounts={"runner"})
    assert isinstance(result, InvalidTask)
    assert result.reason == "ForbiddenServiceAccount"
    assert "'admin'" in result.message
    allowed = parse(
        interval="1s",
        podTemplate={**template, "spec": {**template["spec"], "serviceAccountName": "runner"}},
        accounts={"runner"},
    )
    assert isinstance(allowed, TaskSpec)
    # Without the setting, any ServiceAccount is accepted.
    assert isinstance(parse(interval="1s", podTemplate=template), TaskSpec)


def test_missing_spec() -> None:
    result = parse_task({"metadata": {}}, handlers=())
    assert isinstance(result, InvalidTask)
    assert result.reason == "InvalidSpec"


def test_run_now_annotation_and_instance_names() -> None:
    raw = body(interval="1m", podTemplate=POD)
    raw["metadata"]["annotations"]["pyncette.dev/run-now"] = "2030-01-01T10:00:00Z"
    task = parse_task(raw, handlers=())
    assert isinstance(task, TaskSpec)
    assert task.run_now == "2030-01-01T10:00:00Z"
    key = run_now_key("ns", "hello", "v1:x")
    assert split_instance_name(key) == ("ns", "hello", "v1:x")
    assert split_instance_name("ns/hello") == ("ns", "hello", None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("500ms", 0.5), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1h 30m", "-1s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration() -> None:
    assert format_duration(datetime.timedelta(seconds=90)) == "1m30s"
    assert format_duration(datetime.timedelta(milliseconds=250)) == "250ms"
    assert format_duration(datetime.timedelta(days=1, hours=2)) == "1d2h"


@pytest.mark.parametrize("policy", ["Always", "Sometimes"])
def test_restart_policy_must_let_the_pod_finish(policy: str) -> None:
    template = {"spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "x"}]}}
    result = parse(interval="10s", podTemplate=template)
    assert isinstance(result, InvalidTask)
    assert result.reason == "InvalidSpec"
    assert "spec.podTemplate.spec.restartPolicy: must be Never or OnFailure" in result.message
    for ok in ("Never", "OnFailure"):
        fine = {"spec": {**template["spec"], "restartPolicy": ok}}
        assert isinstance(parse(interval="10s", podTemplate=fine), TaskSpec)


def test_min_interval_refuses_intervals_below_it() -> None:
    result = parse(interval="500ms", podTemplate=POD)  # the default --min-interval is 1s
    assert isinstance(result, InvalidTask)
    assert result.reason == "ScheduleTooFrequent"
    assert result.message == "spec.interval: 500ms is shorter than the operator allows (--min-interval 1s)"
    assert isinstance(parse(interval="1s", podTemplate=POD), TaskSpec)
    assert isinstance(parse(interval="100ms", podTemplate=POD, min_interval=0.1), TaskSpec)
    assert isinstance(parse(interval="30s", podTemplate=POD, min_interval=60), InvalidTask)


@pytest.mark.parametrize(
    ("schedule", "gap"),
    [
        ("* * * * * */10", "10s"),  # every ten seconds
        ("0,1 0 * * *", "1m"),  # twice a minute apart, once a day
        ("*/5 * * * *", "5m"),
    ],
)
def test_min_interval_refuses_cron_schedules_that_run_closer_together(schedule: str, gap: str) -> None:
    result = parse(schedule=schedule, podTemplate=POD, min_interval=3600)
    assert isinstance(result, InvalidTask)
    assert result.reason == "ScheduleTooFrequent"
    assert f"runs {gap} apart" in result.message
    assert isinstance(parse(schedule="0 * * * *", podTemplate=POD, min_interval=3600), TaskSpec)


def test_oversized_pod_template_and_handler_args_are_refused() -> None:
    big = "x" * (128 * 1024)
    template = {"spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "BIG", "value": big}]}]}}
    result = parse(interval="10s", podTemplate=template)
    assert isinstance(result, InvalidTask)
    assert result.reason == "SpecTooLarge"
    assert result.message.startswith("spec.podTemplate: ") and "more than the limit of 131072" in result.message
    result = parse(interval="10s", handler={"name": "report", "args": {"blob": "y" * (32 * 1024)}})
    assert isinstance(result, InvalidTask)
    assert (result.reason, result.message.split(":")[0]) == ("SpecTooLarge", "spec.handler.args")
    assert isinstance(parse(interval="10s", handler={"name": "report", "args": {"blob": "y" * 1000}}), TaskSpec)


def test_the_operators_own_service_account_is_always_refused() -> None:
    template = {"spec": {"serviceAccountName": "pyncette-operator", "containers": [{"name": "c", "image": "x"}]}}
    own = ("ns", "pyncette-operator")
    result = parse(interval="10s", podTemplate=template, own=own, accounts={"pyncette-operator"})
    assert isinstance(result, InvalidTask)
    assert result.reason == "ForbiddenServiceAccount"
    assert "is the operator's own" in result.message
    # The same name in another namespace is another ServiceAccount.
    assert isinstance(parse(interval="10s", podTemplate=template, own=("ops", "pyncette-operator")), TaskSpec)
    # The deprecated spec.serviceAccount field is checked too.
    legacy = {"spec": {"serviceAccount": "pyncette-operator", "containers": [{"name": "c", "image": "x"}]}}
    assert isinstance(parse(interval="10s", podTemplate=legacy, own=own), InvalidTask)


def test_allowed_service_accounts_by_name_or_namespace_and_name() -> None:
    def template(account: str) -> dict[str, Any]:
        return {"spec": {"serviceAccountName": account, "containers": [{"name": "c", "image": "x"}]}}

    accounts = {"runner", "ns:reporter", "other:admin"}
    assert isinstance(parse(interval="10s", podTemplate=template("runner"), accounts=accounts), TaskSpec)
    assert isinstance(parse(interval="10s", podTemplate=template("reporter"), accounts=accounts), TaskSpec)
    refused = parse(interval="10s", podTemplate=template("admin"), accounts=accounts)
    assert isinstance(refused, InvalidTask) and refused.reason == "ForbiddenServiceAccount"
    # The message lists what is allowed in the task's own namespace only.
    assert refused.message.endswith("(allowed here: reporter, runner)")


def test_unknown_handler_message_lists_only_the_handlers_of_the_namespace() -> None:
    result = parse(interval="10s", handler={"name": "secret-thing"}, handlers=("report",))
    assert isinstance(result, InvalidTask)
    assert result.reason == "UnknownHandler"
    assert result.message == (
        "spec.handler.name: no handler named 'secret-thing' serves namespace 'ns' (available here: report)"
    )


@pytest.mark.parametrize("zone", ["/etc/localtime", "../../etc/passwd", "Europe/../../../etc/localtime"])
def test_time_zones_that_are_file_paths_are_unknown(zone: str) -> None:
    result = parse(schedule="0 0 * * *", timezone=zone, podTemplate=POD)
    assert isinstance(result, InvalidTask)
    assert result.reason == "UnknownTimezone"


def test_tasks_in_an_excluded_namespace_are_not_served() -> None:
    result = parse_task(
        body(interval="10s", podTemplate=POD), handlers=(), policy=TaskPolicy(excluded_namespaces=frozenset({"ns"}))
    )
    assert isinstance(result, InvalidTask)
    assert result.reason == "NamespaceNotServed"
    assert "namespace 'ns'" in result.message


def test_jitter() -> None:
    task = parse(schedule="H * * * *", jitter="30s", podTemplate=POD)
    assert isinstance(task, TaskSpec) and task.jitter == datetime.timedelta(seconds=30)
    assert parse(interval="1m", podTemplate=POD).jitter is None  # type: ignore[union-attr]
    for spec, fragment in [
        ({"interval": "30s", "jitter": "30s"}, "spec.jitter: must be shorter than spec.interval (30s)"),
        ({"interval": "1m", "jitter": "0s"}, "spec.jitter: must be positive"),
        ({"executeAt": "2030-01-01T00:00:00Z", "jitter": "5s"}, "spec.jitter: applies to recurring schedules"),
        ({"interval": "1m", "jitter": "soon"}, "spec.jitter: expected a duration"),
    ]:
        result = parse(podTemplate=POD, **spec)
        assert isinstance(result, InvalidTask) and result.reason == "InvalidSpec"
        assert result.message.startswith(fragment), result.message


def test_min_interval_looks_at_the_union_of_schedules() -> None:
    result = parse(schedules=["0 * * * *", "1 * * * *"], podTemplate=POD, min_interval=300)
    assert isinstance(result, InvalidTask) and result.reason == "ScheduleTooFrequent"
    assert result.message.startswith("spec.schedules: runs 1m apart")
    assert isinstance(parse(schedules=["0 * * * *", "30 * * * *"], podTemplate=POD, min_interval=300), TaskSpec)


def test_suspend_after_failures_and_the_resume_annotation() -> None:
    raw = body(interval="1m", podTemplate=POD, suspendAfterFailures=3)
    raw["metadata"]["annotations"]["pyncette.dev/resume"] = "v2"
    task = parse_task(raw, handlers=())
    assert isinstance(task, TaskSpec) and (task.suspend_after_failures, task.resume) == (3, "v2")
    plain = parse(interval="1m", podTemplate=POD)
    assert isinstance(plain, TaskSpec) and (plain.suspend_after_failures, plain.resume) == (None, "")
    bad = parse(interval="1m", podTemplate=POD, suspendAfterFailures=0)
    assert isinstance(bad, InvalidTask) and bad.message == "spec.suspendAfterFailures: expected an integer >= 1, got 0"


def test_max_success_age() -> None:
    task = parse(interval="1m", podTemplate=POD, maxSuccessAge="2h")
    assert isinstance(task, TaskSpec) and task.max_success_age == datetime.timedelta(hours=2)
    bad = parse(interval="1m", podTemplate=POD, maxSuccessAge="0s")
    assert isinstance(bad, InvalidTask) and bad.message == "spec.maxSuccessAge: must be positive, got '0s'"


def test_concurrency_group() -> None:
    task = parse(interval="1m", podTemplate=POD, concurrencyGroup={"name": "etl", "maxActive": 2})
    assert isinstance(task, TaskSpec) and task.concurrency_group == ("etl", 2)
    for group, fragment in [
        ({"name": "ETL", "maxActive": 2}, "spec.concurrencyGroup.name: expected a DNS label"),
        ({"name": "etl", "maxActive": 0}, "spec.concurrencyGroup.maxActive: expected an integer from 1 to 1000"),
    ]:
        bad = parse(interval="1m", podTemplate=POD, concurrencyGroup=group)
        assert isinstance(bad, InvalidTask) and bad.message.startswith(fragment)
