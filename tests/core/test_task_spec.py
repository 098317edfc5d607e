"""Stored specs rebuild instances faithfully, and a changed spec is never served from the cache."""

from __future__ import annotations

import datetime
import json

from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.task import Task
from pyncette.task import spec_text


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
    return {key: value for key, value in vars(task).items() if key not in ("_spec_cache", "_shapes", "_canonical_name")}


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


def _one_off(template: Task, name: str, minute: int, **kwargs: object) -> Task:
    when = datetime.datetime(2026, 12, 1, 9, minute, tzinfo=datetime.UTC)
    return template.instantiate(name, execute_at=when, **kwargs)  # type: ignore[arg-type]


def test_one_offs_scheduled_alike_rebuild_with_their_own_name_time_and_args() -> None:
    # The one-off fast path: after the first of a shape, only the name and the time are read.
    template = _template()
    first, second = _one_off(template, "a:1", 1, who="Ada"), _one_off(template, "b", 2, who="Ada")
    rebuilt = [template.instantiate_from_spec(spec_text(t)) for t in (first, second, second)]
    for instance, original in zip(rebuilt, (first, second, second), strict=True):
        assert instance.as_spec() == original.as_spec()
        assert instance.canonical_name == original.canonical_name
        assert instance.parent_task is template
    assert rebuilt[1] is not rebuilt[2]
    rebuilt[1].extra_args["who"] = "Bob"  # one instance's args are its own
    assert rebuilt[2].extra_args == {"who": "Ada"}
    other_args = template.instantiate_from_spec(spec_text(_one_off(template, "c", 3, who="Cy")))
    assert other_args.extra_args == {"who": "Cy"}


def test_a_broken_one_off_is_refused_even_after_others_of_its_shape() -> None:
    template = _template()
    good = spec_text(_one_off(template, "a", 1))
    template.instantiate_from_spec(good)
    for bad, problem in [
        (good.replace('"2026-12-01T09:01:00+00:00"', '"next tuesday"'), "Invalid isoformat"),
        (good.replace('"name":"a"', '"name":""'), "non-empty"),
    ]:
        try:
            template.instantiate_from_spec(bad)
        except ValueError as e:
            assert problem in str(e), str(e)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_a_spec_repeating_the_name_key_keeps_the_last_one_as_json_does() -> None:
    template = _template()
    tail = spec_text(_one_off(template, "a", 1))[len('{"name":"a"') :]
    rest = tail[:-1] + ',"name":"b"}'
    assert template.instantiate_from_spec('{"name":"a"' + rest).name == "b"
    assert template.instantiate_from_spec('{"name":"c"' + rest).name == "b"  # same rest, same answer


def test_the_one_off_shapes_a_template_remembers_are_bounded() -> None:
    template = _template()
    for minute in range(200):
        args = {"n": minute}  # every instance its own shape
        template.instantiate_from_spec(spec_text(_one_off(template, str(minute), minute % 60, **args)))
    assert len(template._shapes) <= 64
