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
