"""Per-row quarantine: a stored entry that cannot be loaded never holds up the rest, on every backend.

A row written by another version, naming a time zone this worker lacks, or edited by hand is
reported once (its name and why), left stored as it is, and skipped; the rest of the batch runs at
once and nothing spins, even with more bad rows than the batch size. The row stays listable (with
``problem`` set) and fixable. Rows of docs/bad-input.md ("stored rows") point here.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import pytest

from pyncette.errors import TaskLockedException
from pyncette.model import Context
from pyncette.repository import Repository
from pyncette.task import Task

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
LEASE = datetime.timedelta(seconds=60)

StoreRawSpec = Callable[[str, str], Awaitable[None]]


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


async def _noop(context: Context) -> None:
    pass


def _corrupt(instance: Task, **changes: Any) -> str:
    return json.dumps({**instance.as_spec(), **changes})


# What a worker may find stored: a zone it does not have, a mode a newer version wrote, a lease
# duration edited by hand, a spec naming another entry, text that is not a spec at all.
BAD_SPECS: list[Callable[[Task], str]] = [
    lambda i: _corrupt(i, timezone="Mars/Olympus", schedule="0 3 * * *", interval=None),
    lambda i: _corrupt(i, execution_mode="SOMETIMES"),
    lambda i: _corrupt(i, lease_duration="soon"),
    lambda i: _corrupt(i, name="someone-else"),
    lambda i: json.dumps(["not", "a", "spec"]),
]


async def _register(repository: Repository, tmpl: Task, names: list[str]) -> dict[str, Task]:
    instances = {name: tmpl.instantiate(name, interval=datetime.timedelta(seconds=10)) for name in names}
    await repository.register_tasks(at(-10), list(instances.values()))  # all due at T0
    return instances


def _reports(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and repr(name) in r.getMessage()]


async def test_unloadable_rows_are_skipped_reported_once_and_the_rest_runs_now(
    repository: Repository, store_raw_spec: StoreRawSpec, caplog: pytest.LogCaptureFixture
) -> None:
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    bad = [f"bad{i}" for i in range(len(BAD_SPECS))]
    instances = await _register(repository, tmpl, ["good1", *bad, "good2"])
    for name, spec in zip(bad, BAD_SPECS, strict=True):
        await store_raw_spec(f"quarantine:{name}", spec(instances[name]))

    with caplog.at_level(logging.ERROR):
        batch = await repository.lease_due(T0, [tmpl], limit=50)
        assert sorted(e.task.canonical_name for e in batch.executions) == ["quarantine:good1", "quarantine:good2"]
        for name in bad:
            [report] = _reports(caplog, f"quarantine:{name}")
            assert "skipped and left stored" in report

        # Nothing spins: the skipped rows are not offered again at once.
        again = await repository.lease_due(T0, [tmpl], limit=50)
        assert again.executions == []
        assert again.has_more is False

        # After their parking lease ends they are looked at again, and not reported again.
        later = await repository.lease_due(T0 + LEASE + datetime.timedelta(seconds=1), [tmpl], limit=50)
        # (the good ones were never committed: their expired leases make them due again)
        assert sorted(e.task.canonical_name for e in later.executions) == ["quarantine:good1", "quarantine:good2"]
        for name in bad:
            assert len(_reports(caplog, f"quarantine:{name}")) == 1

    # Still stored, listable, and saying why it cannot run.
    listed = await repository.list_task_states(T0, tmpl, limit=50)
    problems = {state.task.canonical_name: state.problem for state in listed.tasks}
    assert set(problems) == {f"quarantine:{name}" for name in ["good1", "good2", *bad]}
    assert problems["quarantine:good1"] is None
    assert all(problems[f"quarantine:{name}"] for name in bad)
    state = await repository.get_task_state(T0, tmpl.instantiate("bad0", interval=datetime.timedelta(seconds=1)))
    assert state is not None
    assert state.problem is not None and "Mars/Olympus" in state.problem


async def test_more_bad_rows_than_the_batch_size_never_starve_the_good_ones(
    repository: Repository, store_raw_spec: StoreRawSpec
) -> None:
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    bad = [f"bad{i:02}" for i in range(12)]
    instances = await _register(repository, tmpl, bad)
    for name in bad:
        await store_raw_spec(f"quarantine:{name}", _corrupt(instances[name], execution_mode="SOMETIMES"))
    late = tmpl.instantiate("good", execute_at=at(1))  # due after every bad row: last in due order
    await repository.register_task(T0, late)

    leased: list[str] = []
    polls = 0
    while polls < 20:  # the app's loop polls again at once while has_more is set
        polls += 1
        batch = await repository.lease_due(at(1), [tmpl], limit=5)
        leased += [e.task.canonical_name for e in batch.executions]
        if not batch.has_more:
            break
    assert leased == ["quarantine:good"]
    assert polls <= 5, f"{polls} polls for 13 due rows at 5 per batch: the bad rows were offered again"


async def test_a_quarantined_row_is_fixed_by_rescheduling_it(
    repository: Repository, store_raw_spec: StoreRawSpec
) -> None:
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    instances = await _register(repository, tmpl, ["broken"])
    await store_raw_spec("quarantine:broken", _corrupt(instances["broken"], execution_mode="SOMETIMES"))
    assert (await repository.lease_due(T0, [tmpl], limit=10)).executions == []

    await repository.register_task(at(1), tmpl.instantiate("broken", execute_at=at(2), fixed=True), force=True)
    batch = await repository.lease_due(at(2), [tmpl], limit=10)
    assert [(e.task.canonical_name, e.task.extra_args) for e in batch.executions] == [
        ("quarantine:broken", {"fixed": True})
    ]
    state = await repository.get_task_state(at(2), batch.executions[0].task)
    assert state is not None and state.problem is None


async def test_a_task_whose_next_time_cannot_be_computed_is_parked_alone(
    repository: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    """AT_MOST_ONCE moves an entry forward before it runs; if that time cannot be computed (here a
    zone gone missing while running) the entry is neither run nor lost, and not offered again at
    once; its neighbour in the same batch runs. A commit that cannot compute the next time leaves
    the entry as it was."""
    from pyncette.model import ExecutionMode

    once = Task(name="amo", func=_noop, schedule="* * * * *", execution_mode=ExecutionMode.AT_MOST_ONCE)
    alo = Task(name="alo", func=_noop, schedule="* * * * *")
    fine = Task(name="fine", func=_noop, interval=datetime.timedelta(seconds=60))
    await repository.lease_due(T0, [once, alo, fine], limit=10)  # creates the entries, due at T0+60
    once.timezone = "Mars/Olympus"

    with caplog.at_level(logging.ERROR):
        batch = await repository.lease_due(at(60), [once, alo, fine], limit=10)
        assert sorted(e.task.canonical_name for e in batch.executions) == ["alo", "fine"]
        assert (await repository.lease_due(at(60), [once, alo, fine], limit=10)).executions == []
        assert len(_reports(caplog, "amo")) == 1

        leased_alo = next(e for e in batch.executions if e.task.canonical_name == "alo")
        alo.timezone = "Mars/Olympus"
        await repository.commit_executions(at(61), [leased_alo])
    state = await repository.get_task_state(at(61), alo)
    assert state is not None and state.scheduled_at == at(60)  # not moved, not deleted
    amo = await repository.get_task_state(at(61), once)
    assert amo is not None and amo.scheduled_at == at(60)


async def test_a_stored_time_that_cannot_be_read_is_quarantined_like_a_bad_spec(
    repository: Repository, store_raw_time: StoreRawSpec, caplog: pytest.LogCaptureFixture
) -> None:
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    await _register(repository, tmpl, ["good", "edited"])
    await store_raw_time("quarantine:edited", "tomorrow, probably")

    with caplog.at_level(logging.ERROR):
        batch = await repository.lease_due(T0, [tmpl], limit=10)
        assert [e.task.canonical_name for e in batch.executions] == ["quarantine:good"]
        assert (await repository.lease_due(T0, [tmpl], limit=10)).executions == []
        [report] = _reports(caplog, "quarantine:edited")
        assert "tomorrow, probably" in report

    listed = {s.task.canonical_name: s.problem for s in (await repository.list_task_states(T0, tmpl)).tasks}
    assert listed["quarantine:good"] is None
    assert listed["quarantine:edited"] is not None and "cannot be read" in listed["quarantine:edited"]


async def test_a_spec_that_is_not_json_at_all_is_quarantined(
    backend_name: str, repository: Repository, store_raw_spec: StoreRawSpec, caplog: pytest.LogCaptureFixture
) -> None:
    if backend_name == "postgres":
        pytest.skip("postgres: task_spec is a json column, the server refuses text that is not JSON")
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    await _register(repository, tmpl, ["good", "garbled"])
    await store_raw_spec("quarantine:garbled", '{"name": "garbled", "interval": 10')  # cut short

    with caplog.at_level(logging.ERROR):
        batch = await repository.lease_due(T0, [tmpl], limit=10)
    assert [e.task.canonical_name for e in batch.executions] == ["quarantine:good"]
    [report] = _reports(caplog, "quarantine:garbled")
    assert "JSONDecodeError" in report


async def test_a_quarantined_row_is_fixed_by_scheduling_it_again_without_force(
    repository: Repository, store_raw_spec: StoreRawSpec
) -> None:
    """The parking lease of a quarantined row is not a run in progress: a plain ``schedule_task``
    replaces the row (as ``force`` would) instead of raising TaskLockedException."""
    tmpl = Task(name="quarantine", func=_noop, dynamic=True, lease_duration=LEASE)
    instances = await _register(repository, tmpl, ["broken", "running"])
    await store_raw_spec("quarantine:broken", _corrupt(instances["broken"], execution_mode="SOMETIMES"))
    [running] = (await repository.lease_due(T0, [tmpl], limit=10)).executions  # "broken" is parked
    assert running.task.canonical_name == "quarantine:running"

    await repository.register_task(at(1), tmpl.instantiate("broken", execute_at=at(2), fixed=True))
    batch = await repository.lease_due(at(2), [tmpl], limit=10)
    assert [(e.task.canonical_name, e.task.extra_args) for e in batch.executions] == [
        ("quarantine:broken", {"fixed": True})
    ]
    # A row leased by a real run still refuses a plain re-registration.
    with pytest.raises(TaskLockedException):
        await repository.register_task(at(3), tmpl.instantiate("running", interval=datetime.timedelta(seconds=5)))
