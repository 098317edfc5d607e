"""Stored specs rebuild instances faithfully, and a changed spec is never served from the cache."""

from __future__ import annotations

import datetime
import json

from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.task import Task


async def _noop(context: Context) -> None:
    return None


def _template() -> Task:
    return Task(name="reminder", func=_noop, dynamic=True)


def test_spec_round_trip_keeps_schedule_overrides_and_args() -> None:
    template = _template()
    instance = template.instantiate(
        "ada:1",
        interval=datetime.timedelta(seconds=30),
        execution_mode=ExecutionMode.AT_MOST_ONCE,
        lease_duration=datetime.timedelta(seconds=5),
        who="Ada",
    )
    rebuilt = template.instantiate_from_spec(json.dumps(instance.as_spec()))
    assert rebuilt.canonical_name == "reminder:ada::1"
    assert rebuilt.interval == datetime.timedelta(seconds=30)
    assert rebuilt.execution_mode == ExecutionMode.AT_MOST_ONCE
    assert rebuilt.lease_duration == datetime.timedelta(seconds=5)
    assert rebuilt.extra_args == {"who": "Ada"}


def test_unchanged_spec_reuses_the_instance_and_a_changed_one_does_not() -> None:
    template = _template()
    spec = template.instantiate("ada", interval=datetime.timedelta(seconds=30), who="Ada").as_spec()
    first = template.instantiate_from_spec(json.dumps(spec))
    assert template.instantiate_from_spec(dict(spec)) is first

    changed = template.instantiate("ada", schedule="0 9 * * *", who="Ada").as_spec()
    rebuilt = template.instantiate_from_spec(changed)
    assert rebuilt is not first
    assert rebuilt.schedule == "0 9 * * *" and rebuilt.interval is None

    renamed_args = template.instantiate("ada", schedule="0 9 * * *", who="Bob").as_spec()
    assert template.instantiate_from_spec(renamed_args).extra_args == {"who": "Bob"}


def _public_state(task: Task) -> dict[str, object]:
    return {key: value for key, value in vars(task).items() if key not in ("_spec_cache", "_canonical_name")}


def test_trusted_rebuild_matches_the_public_constructor_field_for_field() -> None:
    """The fast path that rebuilds stored specs must not drift from ``instantiate`` when fields are added."""
    template = Task(name="report", func=_noop, dynamic=True, schedule="H 3 * * *", timezone="Europe/Dublin", team="a")
    anchor = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    variants = [
        template.instantiate("defaults"),
        template.instantiate("cron", schedule=["H * * * *", "0 12 * * sat"], timezone="UTC+2", who="Ada"),
        template.instantiate("interval", interval=datetime.timedelta(minutes=5), fast_forward=True, anchor=anchor),
        template.instantiate("latest", schedule="*/5 * * * *", catch_up_latest=True, team="b"),
        template.instantiate(
            "once",
            execute_at=datetime.datetime(2026, 12, 1, 8, 30, tzinfo=datetime.UTC),
            execution_mode=ExecutionMode.AT_MOST_ONCE,
            lease_duration=datetime.timedelta(seconds=7),
        ),
    ]
    for instance in variants:
        rebuilt = template.instantiate_from_spec(json.dumps(instance.as_spec()))
        assert _public_state(rebuilt) == _public_state(instance), instance.name
        assert rebuilt.canonical_name == instance.canonical_name


def test_one_off_instances_are_not_remembered_by_the_template() -> None:
    template = _template()
    once = template.instantiate("once", execute_at=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
    first = template.instantiate_from_spec(once.as_spec())
    assert template.instantiate_from_spec(once.as_spec()) is not first
    recurring = template.instantiate("daily", interval=datetime.timedelta(days=1))
    assert template.instantiate_from_spec(recurring.as_spec()) is template.instantiate_from_spec(recurring.as_spec())


def test_a_spec_of_the_wrong_shape_is_refused_with_the_field_named() -> None:
    template = _template()
    good = template.instantiate("x", interval=datetime.timedelta(seconds=30)).as_spec()
    for field, value in [("interval", "soon"), ("lease_duration", -1), ("schedule", 5), ("extra_args", [1])]:
        bad = {**good, field: value}
        if field == "schedule":
            bad["interval"] = None
        try:
            template.instantiate_from_spec(bad)
        except ValueError as e:
            assert field.split("_")[0] in str(e) or "args" in str(e), (field, str(e))
        else:
            raise AssertionError(f"{field}={value!r} was accepted")
