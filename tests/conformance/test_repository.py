"""The repository contract, driven directly with explicit times (no app, no clock, no sleeping).

Every test runs against every backend (see ``conftest.py``). The contract is the module docstring
of ``pyncette.repository``; each test names the rule it checks.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pyncette.errors import TaskLockedException
from pyncette.model import Context
from pyncette.model import ExecutionMode
from pyncette.model import FailureMode
from pyncette.model import LeasedExecution
from pyncette.repository import Repository
from pyncette.task import PartitionedTask
from pyncette.task import Task

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


async def _noop(context: Context) -> None:
    pass


def template(name: str = "dyn", **kwargs: Any) -> Task:
    return Task(name=name, func=_noop, dynamic=True, **kwargs)


def static(name: str = "static", **kwargs: Any) -> Task:
    kwargs.setdefault("interval", datetime.timedelta(seconds=10))
    return Task(name=name, func=_noop, **kwargs)


def names(executions: list[LeasedExecution]) -> list[str]:
    return [execution.task.canonical_name for execution in executions]


async def register(repo: Repository, tmpl: Task, name: str, *, now: datetime.datetime = T0, **kwargs: Any) -> Task:
    instance = tmpl.instantiate(name, **kwargs)
    await repo.register_task(now, instance)
    return instance


# ---- leasing due entries ----


async def test_instance_is_leased_once_due_not_before(repository: Repository) -> None:
    tmpl = template()
    await register(repository, tmpl, "a", execute_at=at(10), colour="blue")

    early = await repository.lease_due(at(9), [tmpl], limit=10)
    assert early.executions == []
    assert early.has_more is False
    assert early.next_due_at == at(10)

    batch = await repository.lease_due(at(10), [tmpl], limit=10)
    assert names(batch.executions) == ["dyn:a"]
    execution = batch.executions[0]
    assert execution.scheduled_at == at(10)
    assert execution.lease is not None
    assert execution.task.parent_task is tmpl
    assert execution.task.extra_args == {"colour": "blue"}


async def test_nothing_registered_means_nothing_due(repository: Repository) -> None:
    batch = await repository.lease_due(T0, [template()], limit=10)
    assert batch.executions == []
    assert batch.has_more is False
    assert batch.next_due_at is None


async def test_polling_no_tasks_leases_nothing(repository: Repository) -> None:
    await register(repository, template(), "a", execute_at=at(-1))
    batch = await repository.lease_due(T0, [], limit=10)
    assert batch.executions == []
    assert batch.has_more is False


async def test_due_entries_come_earliest_first_and_limit_sets_has_more(repository: Repository) -> None:
    tmpl = template()
    for i in (3, 1, 5, 2, 4):
        await register(repository, tmpl, f"i{i}", execute_at=at(-10 + i))
    await register(repository, tmpl, "later", execute_at=at(30))

    first = await repository.lease_due(T0, [tmpl], limit=2)
    assert names(first.executions) == ["dyn:i1", "dyn:i2"]
    assert first.has_more is True

    second = await repository.lease_due(T0, [tmpl], limit=2)
    assert names(second.executions) == ["dyn:i3", "dyn:i4"]
    assert second.has_more is True

    third = await repository.lease_due(T0, [tmpl], limit=2)
    assert names(third.executions) == ["dyn:i5"]
    assert third.has_more is False
    assert third.next_due_at == at(30)


async def test_exactly_limit_due_entries_do_not_claim_more(repository: Repository) -> None:
    tmpl = template()
    for i in range(3):
        await register(repository, tmpl, f"i{i}", execute_at=at(-i))
    batch = await repository.lease_due(T0, [tmpl], limit=3)
    assert len(batch.executions) == 3
    assert batch.has_more is False


async def test_ordering_spans_static_tasks_and_templates(repository: Repository) -> None:
    tmpl = template()
    every10 = static("every10")
    await repository.lease_due(T0, [every10, tmpl], limit=10)  # creates the static entry, due at T0+10
    await register(repository, tmpl, "early", execute_at=at(5))
    await register(repository, tmpl, "late", execute_at=at(15))

    batch = await repository.lease_due(at(20), [every10, tmpl], limit=2)
    assert names(batch.executions) == ["dyn:early", "every10"]
    assert batch.has_more is True
    rest = await repository.lease_due(at(20), [every10, tmpl], limit=2)
    assert names(rest.executions) == ["dyn:late"]


async def test_next_due_at_ignores_tasks_not_polled(repository: Repository) -> None:
    polled, other = template("polled"), template("other")
    await register(repository, other, "soon", execute_at=at(1))
    await register(repository, polled, "later", execute_at=at(50))
    batch = await repository.lease_due(T0, [polled], limit=10)
    assert batch.executions == []
    assert batch.next_due_at == at(50)


# ---- leases ----


async def test_a_leased_entry_is_not_leased_again_until_the_lease_expires(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=60))
    await register(repository, tmpl, "a", execute_at=at(0))

    first = await repository.lease_due(at(0), [tmpl], limit=10)
    assert names(first.executions) == ["dyn:a"]
    again = await repository.lease_due(at(1), [tmpl], limit=10)
    assert again.executions == []
    assert again.next_due_at == at(60), "a leased entry becomes due again when its lease ends"

    assert (await repository.lease_due(at(59), [tmpl], limit=10)).executions == []
    retaken = await repository.lease_due(at(61), [tmpl], limit=10)
    assert names(retaken.executions) == ["dyn:a"]
    assert retaken.executions[0].scheduled_at == at(0)
    assert retaken.executions[0].lease != first.executions[0].lease


async def test_commit_with_a_stale_lease_does_nothing(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=10))
    await register(repository, tmpl, "once", execute_at=at(0))
    stale = (await repository.lease_due(at(0), [tmpl], limit=10)).executions
    fresh = (await repository.lease_due(at(11), [tmpl], limit=10)).executions
    assert names(fresh) == ["dyn:once"]

    await repository.commit_executions(at(12), stale)
    state = await repository.get_task_state(at(12), fresh[0].task)
    assert state is not None, "a stale commit must not delete the entry"
    assert state.locked_until == at(21)

    await repository.commit_executions(at(12), fresh)
    assert await repository.get_task_state(at(12), fresh[0].task) is None


async def test_commit_moves_a_recurring_instance_to_its_next_time(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "every10", interval=datetime.timedelta(seconds=10))
    batch = await repository.lease_due(at(10), [tmpl], limit=10)
    assert batch.executions[0].scheduled_at == at(10)

    await repository.commit_executions(at(12), batch.executions)
    state = await repository.get_task_state(at(12), instance)
    assert state is not None
    assert state.scheduled_at == at(20)
    assert state.locked_until is None
    assert (await repository.lease_due(at(19), [tmpl], limit=10)).executions == []
    assert names((await repository.lease_due(at(20), [tmpl], limit=10)).executions) == ["dyn:every10"]


async def test_commit_deletes_a_one_off_instance(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "once", execute_at=at(5))
    batch = await repository.lease_due(at(5), [tmpl], limit=10)
    await repository.commit_executions(at(6), batch.executions)
    assert await repository.get_task_state(at(6), instance) is None
    assert (await repository.lease_due(at(100), [tmpl], limit=10)).executions == []


async def test_unlock_makes_the_entry_due_at_once(repository: Repository) -> None:
    tmpl = template()
    await register(repository, tmpl, "a", execute_at=at(0))
    batch = await repository.lease_due(at(0), [tmpl], limit=10)
    await repository.unlock_executions(at(1), batch.executions)
    retry = await repository.lease_due(at(1), [tmpl], limit=10)
    assert names(retry.executions) == ["dyn:a"]
    assert retry.executions[0].scheduled_at == at(0)


async def test_unlock_with_a_stale_lease_does_nothing(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=10))
    await register(repository, tmpl, "a", execute_at=at(0))
    stale = (await repository.lease_due(at(0), [tmpl], limit=10)).executions
    await repository.lease_due(at(11), [tmpl], limit=10)
    await repository.unlock_executions(at(12), stale)
    assert (await repository.lease_due(at(12), [tmpl], limit=10)).executions == []


async def test_extend_leases_keeps_ownership_and_reports_lost_leases(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=60))
    await register(repository, tmpl, "kept", execute_at=at(0))
    await register(repository, tmpl, "lost", execute_at=at(0))
    batch = (await repository.lease_due(at(0), [tmpl], limit=10)).executions
    by_name = {e.task.canonical_name: e for e in batch}

    # "lost" expires at 60 and is taken by someone else; "kept" is extended at 50 (to 110).
    assert await repository.extend_leases(at(50), [by_name["dyn:kept"]]) == [by_name["dyn:kept"].lease]
    taken = await repository.lease_due(at(61), [tmpl], limit=10)
    assert names(taken.executions) == ["dyn:lost"]

    at_most_once = LeasedExecution(tmpl.instantiate("x", execute_at=at(0)), at(0), None)
    results = await repository.extend_leases(at(62), [by_name["dyn:kept"], by_name["dyn:lost"], at_most_once])
    assert results == [by_name["dyn:kept"].lease, None, None]

    await repository.commit_executions(at(63), taken.executions)  # the new owner finishes "lost"
    assert (await repository.lease_due(at(121), [tmpl], limit=10)).executions == [], "extended at 62 until 122"
    assert names((await repository.lease_due(at(123), [tmpl], limit=10)).executions) == ["dyn:kept"]


async def test_per_instance_lease_duration_is_used(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=60))
    instance = await register(repository, tmpl, "short", execute_at=at(0), lease_duration=datetime.timedelta(seconds=5))
    batch = await repository.lease_due(at(0), [tmpl], limit=10)
    assert batch.executions[0].task.lease_duration == datetime.timedelta(seconds=5)
    state = await repository.get_task_state(at(0), instance)
    assert state is not None
    assert state.locked_until == at(5)
    assert names((await repository.lease_due(at(6), [tmpl], limit=10)).executions) == ["dyn:short"]


# ---- at-most-once ----


async def test_at_most_once_moves_the_schedule_when_leased(repository: Repository) -> None:
    tmpl = template(execution_mode=ExecutionMode.AT_MOST_ONCE)
    instance = await register(repository, tmpl, "every10", interval=datetime.timedelta(seconds=10))
    batch = await repository.lease_due(at(10), [tmpl], limit=10)
    assert names(batch.executions) == ["dyn:every10"]
    assert batch.executions[0].lease is None
    assert batch.executions[0].scheduled_at == at(10)

    state = await repository.get_task_state(at(10), instance)
    assert state is not None
    assert state.scheduled_at == at(20)
    assert (await repository.lease_due(at(10), [tmpl], limit=10)).executions == []
    await repository.commit_executions(at(11), batch.executions)  # nothing to commit, must not fail
    assert (await repository.get_task_state(at(11), instance)) is not None


async def test_at_most_once_one_off_is_gone_once_leased(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "once", execute_at=at(1), execution_mode=ExecutionMode.AT_MOST_ONCE)
    batch = await repository.lease_due(at(1), [tmpl], limit=10)
    assert [e.lease for e in batch.executions] == [None]
    assert batch.executions[0].task.execution_mode == ExecutionMode.AT_MOST_ONCE
    assert await repository.get_task_state(at(1), instance) is None


# ---- registration ----


async def test_registering_a_leased_instance_needs_force(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "a", interval=datetime.timedelta(seconds=10))
    leased = (await repository.lease_due(at(10), [tmpl], limit=10)).executions

    with pytest.raises(TaskLockedException):
        await repository.register_task(at(11), tmpl.instantiate("a", interval=datetime.timedelta(seconds=1)))
    state = await repository.get_task_state(at(11), instance)
    assert state is not None
    assert state.task.interval == datetime.timedelta(seconds=10), "a refused update changes nothing"

    await repository.register_task(at(11), tmpl.instantiate("a", execute_at=at(100)), force=True)
    state = await repository.get_task_state(at(11), instance)
    assert state is not None
    assert state.scheduled_at == at(100)
    assert state.locked_until is None
    assert state.task.execute_at == at(100)

    await repository.commit_executions(at(12), leased)  # the forced update took the lease away
    state = await repository.get_task_state(at(12), instance)
    assert state is not None
    assert state.scheduled_at == at(100)


async def test_register_tasks_refuses_a_batch_with_a_leased_instance(repository: Repository) -> None:
    tmpl = template()
    await register(repository, tmpl, "busy", execute_at=at(0))
    await repository.lease_due(at(0), [tmpl], limit=10)
    with pytest.raises(TaskLockedException):
        await repository.register_tasks(at(1), [tmpl.instantiate("busy", execute_at=at(500))])
    state = await repository.get_task_state(at(1), tmpl.instantiate("busy", execute_at=at(0)))
    assert state is not None
    assert state.scheduled_at == at(0)


async def test_reregistering_keeps_the_sooner_time_unless_forced(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "a", interval=datetime.timedelta(seconds=10))  # due at 10

    await repository.register_task(at(5), tmpl.instantiate("a", interval=datetime.timedelta(hours=1)))
    state = await repository.get_task_state(at(5), instance)
    assert state is not None
    assert state.scheduled_at == at(10), "the sooner (old) time is kept"
    assert state.task.interval == datetime.timedelta(hours=1), "the new schedule applies from the next run"

    await repository.register_task(at(6), tmpl.instantiate("a", execute_at=at(7)))
    state = await repository.get_task_state(at(6), instance)
    assert state is not None
    assert state.scheduled_at == at(7), "a sooner new time wins"

    await repository.register_task(at(6), tmpl.instantiate("a", execute_at=at(300)), force=True)
    state = await repository.get_task_state(at(6), instance)
    assert state is not None
    assert state.scheduled_at == at(300)


async def test_an_expired_lease_does_not_block_registration(repository: Repository) -> None:
    tmpl = template(lease_duration=datetime.timedelta(seconds=10))
    await register(repository, tmpl, "a", execute_at=at(0))
    await repository.lease_due(at(0), [tmpl], limit=10)
    await repository.register_task(at(20), tmpl.instantiate("a", execute_at=at(30)))


async def test_register_tasks_in_bulk(repository: Repository) -> None:
    tmpl = template()
    instances = [tmpl.instantiate(f"n{i}", execute_at=at(i), n=i) for i in range(50)]
    await repository.register_tasks(T0, instances)
    batch = await repository.lease_due(at(100), [tmpl], limit=100)
    assert names(batch.executions) == [f"dyn:n{i}" for i in range(50)]
    assert [e.task.extra_args["n"] for e in batch.executions] == list(range(50))


async def test_unregister_removes_the_instance(repository: Repository) -> None:
    tmpl = template()
    instance = await register(repository, tmpl, "a", execute_at=at(5))
    await repository.unregister_task(T0, instance)
    assert await repository.get_task_state(T0, instance) is None
    assert (await repository.lease_due(at(10), [tmpl], limit=10)).executions == []
    await repository.unregister_task(T0, instance)  # a second time is a no-op


async def test_get_task_state_returns_the_stored_instance(repository: Repository) -> None:
    tmpl = template()
    assert await repository.get_task_state(T0, tmpl.instantiate("nope", execute_at=T0)) is None
    instance = await register(
        repository,
        tmpl,
        "a",
        schedule="*/5 * * * *",
        timezone="Europe/Dublin",
        failure_mode=FailureMode.UNLOCK,
        x=[1, 2],
    )
    # Address it with a different schedule: the stored one comes back.
    state = await repository.get_task_state(T0, tmpl.instantiate("a", execute_at=T0))
    assert state is not None
    assert state.task.canonical_name == instance.canonical_name
    assert state.task.schedule == "*/5 * * * *"
    assert state.task.timezone == "Europe/Dublin"
    assert state.task.extra_args == {"x": [1, 2]}
    assert state.task.failure_mode == FailureMode.UNLOCK
    assert state.scheduled_at == at(300)
    assert state.locked_until is None
    assert state.locked_by is None

    await repository.lease_due(at(300), [tmpl], limit=10)
    state = await repository.get_task_state(at(300), instance)
    assert state is not None
    assert state.locked_until == at(360)
    assert state.locked_by is not None


async def test_list_task_states_pages_cover_every_instance_once(repository: Repository) -> None:
    tmpl, other = template("listed"), template("other")
    expected = {f"listed:{name.replace(':', '::')}" for name in [f"i{i:02}" for i in range(23)] + ["a:b", "žluťoučký"]}
    for name in [f"i{i:02}" for i in range(23)] + ["a:b", "žluťoučký"]:
        await register(repository, tmpl, name, execute_at=at(1))
    await register(repository, other, "x", execute_at=at(1))

    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await repository.list_task_states(T0, tmpl, limit=7, continuation_token=token)
        assert len(page.tasks) <= 7
        seen.extend(state.task.canonical_name for state in page.tasks)
        pages += 1
        token = page.continuation_token
        if token is None:
            break
        assert pages < 20
    assert sorted(seen) == sorted(expected)
    assert len(seen) == len(expected)


async def test_list_task_states_of_an_empty_template(repository: Repository) -> None:
    page = await repository.list_task_states(T0, template(), limit=10)
    assert page.tasks == []
    assert page.continuation_token is None


# ---- static tasks ----


async def test_static_task_is_created_on_first_sight(repository: Repository) -> None:
    every10 = static("every10")
    first = await repository.lease_due(T0, [every10], limit=10)
    assert first.executions == []
    assert first.next_due_at == at(10)
    state = await repository.get_task_state(T0, every10)
    assert state is not None
    assert state.scheduled_at == at(10)

    # Seeing it again later does not push its time back.
    assert (await repository.lease_due(at(5), [every10], limit=10)).next_due_at == at(10)

    batch = await repository.lease_due(at(10), [every10], limit=10)
    assert [e.task for e in batch.executions] == [every10]
    assert batch.executions[0].scheduled_at == at(10)
    await repository.commit_executions(at(11), batch.executions)
    state = await repository.get_task_state(at(11), every10)
    assert state is not None
    assert state.scheduled_at == at(20)


async def test_static_at_most_once_task(repository: Repository) -> None:
    every10 = static("amo", execution_mode=ExecutionMode.AT_MOST_ONCE)
    await repository.lease_due(T0, [every10], limit=10)
    batch = await repository.lease_due(at(10), [every10], limit=10)
    assert [(e.task, e.lease) for e in batch.executions] == [(every10, None)]
    assert (await repository.lease_due(at(10), [every10], limit=10)).executions == []
    assert names((await repository.lease_due(at(20), [every10], limit=10)).executions) == ["amo"]


async def test_static_tasks_are_leased_only_when_polled(repository: Repository) -> None:
    a, b = static("a"), static("b")
    await repository.lease_due(T0, [a, b], limit=10)
    batch = await repository.lease_due(at(10), [b], limit=10)
    assert names(batch.executions) == ["b"]
    assert batch.has_more is False
    assert names((await repository.lease_due(at(10), [a, b], limit=10)).executions) == ["a"]


# ---- names and partitions ----


async def test_names_with_colons_and_unicode_do_not_collide(repository: Repository) -> None:
    colon_template, plain_template = template("a:b"), template("a")
    one = await register(repository, colon_template, "c", execute_at=at(1), which=1)  # a::b:c
    two = await register(repository, plain_template, "b:c", execute_at=at(2), which=2)  # a:b::c
    three = await register(repository, plain_template, "ünï:cøde 🙂", execute_at=at(3), which=3)
    assert len({one.canonical_name, two.canonical_name, three.canonical_name}) == 3

    batch = await repository.lease_due(at(10), [colon_template, plain_template], limit=10)
    assert names(batch.executions) == [one.canonical_name, two.canonical_name, three.canonical_name]
    assert [e.task.extra_args["which"] for e in batch.executions] == [1, 2, 3]
    assert [e.task.name for e in batch.executions] == ["c", "b:c", "ünï:cøde 🙂"]
    state = await repository.get_task_state(at(10), three)
    assert state is not None
    assert state.task.name == "ünï:cøde 🙂"


async def test_partitions_are_isolated(repository: Repository) -> None:
    parted = PartitionedTask(name="parted", func=_noop, partition_count=4)
    partitions = parted.get_partitions()
    instances = [parted.instantiate(f"n{i}", execute_at=at(i % 5)) for i in range(40)]
    await repository.register_tasks(T0, instances)
    by_partition: dict[str, set[str]] = {}
    for instance in instances:
        assert instance.parent_task is not None
        by_partition.setdefault(instance.parent_task.canonical_name, set()).add(instance.canonical_name)
    assert len(by_partition) > 1

    first = partitions[0]
    batch = await repository.lease_due(at(10), [first], limit=100)
    assert set(names(batch.executions)) == by_partition.get(first.canonical_name, set())
    assert all(e.task.parent_task is first for e in batch.executions)

    listed = await repository.list_task_states(T0, partitions[1], limit=100)
    assert {s.task.canonical_name for s in listed.tasks} == by_partition.get(partitions[1].canonical_name, set())

    rest = await repository.lease_due(at(10), partitions, limit=100)
    assert len(rest.executions) + len(batch.executions) == 40


# ---- pyncette 1.x protocol ----


async def test_poll_task_leases_a_static_task_like_pyncette_1(repository: Repository) -> None:
    from pyncette.model import ResultType

    every10 = static("legacy")
    pending = await repository.poll_task(T0, every10)
    assert pending.result == ResultType.PENDING
    assert pending.scheduled_at == at(10)

    ready = await repository.poll_task(at(10), every10)
    assert ready.result == ResultType.READY
    assert ready.lease is not None
    assert (await repository.poll_task(at(11), every10)).result == ResultType.LOCKED

    relocked = await repository.poll_task(at(11), every10, ready.lease)  # the owner may re-poll (1.x flow)
    assert relocked.result == ResultType.READY
    assert relocked.lease is not None
    assert await repository.extend_lease(at(12), every10, relocked.lease) == relocked.lease
    await repository.commit_task(at(13), every10, relocked.lease)
    assert (await repository.poll_task(at(13), every10)).scheduled_at == at(20)


async def test_poll_dynamic_task_leases_due_instances(repository: Repository) -> None:
    tmpl = template()
    await register(repository, tmpl, "a", execute_at=at(1))
    await register(repository, tmpl, "b", execute_at=at(100))
    response = await repository.poll_dynamic_task(at(10), tmpl)
    assert [t.canonical_name for t, _ in response.tasks] == ["dyn:a"]
    assert (await repository.poll_dynamic_task(at(10), tmpl)).tasks == []
    instance, lease = response.tasks[0]
    await repository.unlock_task(at(11), instance, lease)
    assert [t.canonical_name for t, _ in (await repository.poll_dynamic_task(at(11), tmpl)).tasks] == ["dyn:a"]


class LegacyRepository(Repository):
    """A third-party backend written against pyncette 1.x: only the abstract methods exist.

    It delegates to the backend under test, so the batch protocol runs through the contract's
    default implementations.
    """

    def __init__(self, inner: Repository) -> None:
        self._inner = inner

    async def poll_dynamic_task(self, utc_now: Any, task: Any, continuation_token: Any = None) -> Any:
        return await self._inner.poll_dynamic_task(utc_now, task, continuation_token)

    async def register_task(self, utc_now: Any, task: Any, force: bool = False) -> None:
        await self._inner.register_task(utc_now, task, force)

    async def unregister_task(self, utc_now: Any, task: Any) -> None:
        await self._inner.unregister_task(utc_now, task)

    async def poll_task(self, utc_now: Any, task: Any, lease: Any = None) -> Any:
        return await self._inner.poll_task(utc_now, task, lease)

    async def commit_task(self, utc_now: Any, task: Any, lease: Any) -> None:
        await self._inner.commit_task(utc_now, task, lease)

    async def extend_lease(self, utc_now: Any, task: Any, lease: Any) -> Any:
        return await self._inner.extend_lease(utc_now, task, lease)

    async def unlock_task(self, utc_now: Any, task: Any, lease: Any) -> None:
        await self._inner.unlock_task(utc_now, task, lease)

    async def get_task_state(self, utc_now: Any, task: Any) -> Any:
        return await self._inner.get_task_state(utc_now, task)

    async def list_task_states(
        self, utc_now: Any, parent_task: Any, limit: Any = None, continuation_token: Any = None
    ) -> Any:
        return await self._inner.list_task_states(utc_now, parent_task, limit, continuation_token)


async def test_a_pyncette_1_only_repository_works_through_the_default_batch_methods(repository: Repository) -> None:
    legacy = LegacyRepository(repository)
    tmpl, every10 = template(), static("every10")
    await legacy.register_tasks(
        T0, [tmpl.instantiate("once", execute_at=at(5)), tmpl.instantiate("retry", execute_at=at(5))]
    )

    assert (await legacy.lease_due(T0, [every10, tmpl], limit=10)).next_due_at == at(10)
    batch = await legacy.lease_due(at(10), [every10, tmpl], limit=10)
    assert sorted(names(batch.executions)) == ["dyn:once", "dyn:retry", "every10"]
    assert (await legacy.lease_due(at(10), [every10, tmpl], limit=10)).executions == []
    by_name = {e.task.canonical_name: e for e in batch.executions}

    assert await legacy.extend_leases(at(11), batch.executions) == [e.lease for e in batch.executions]
    await legacy.commit_executions(at(12), [by_name["dyn:once"], by_name["every10"]])
    await legacy.unlock_executions(at(12), [by_name["dyn:retry"]])

    again = await legacy.lease_due(at(12), [every10, tmpl], limit=10)
    assert names(again.executions) == ["dyn:retry"]
    assert await legacy.get_task_state(at(12), by_name["dyn:once"].task) is None
    state = await legacy.get_task_state(at(12), every10)
    assert state is not None
    assert state.scheduled_at == at(20)


async def test_poll_task_of_an_unregistered_instance_raises_not_found_like_pyncette_1(repository: Repository) -> None:
    from pyncette.errors import PyncetteException

    tmpl = template()
    never = tmpl.instantiate("never", interval=datetime.timedelta(seconds=10))
    with pytest.raises(PyncetteException, match="not found"):
        await repository.poll_task(T0, never)

    gone = await register(repository, tmpl, "gone", interval=datetime.timedelta(seconds=1))
    await repository.unregister_task(T0, gone)
    with pytest.raises(PyncetteException, match="not found"):
        await repository.poll_task(at(5), gone)
    assert await repository.get_task_state(at(5), gone) is None  # the poll did not bring it back


class _UnschedulesAfterQuerying(LegacyRepository):
    """A 1.x-style backend in which an instance is unscheduled between the query and its poll."""

    async def poll_dynamic_task(self, utc_now: Any, task: Any, continuation_token: Any = None) -> Any:
        response = await super().poll_dynamic_task(utc_now, task, continuation_token)
        for instance, _ in response.tasks:
            if instance.name == "doomed":
                await self.unregister_task(utc_now, instance)
        return response


async def test_an_instance_unscheduled_while_polled_is_skipped_not_failing_the_batch(repository: Repository) -> None:
    legacy = _UnschedulesAfterQuerying(repository)
    tmpl = template()
    await register(repository, tmpl, "doomed", execute_at=at(5))
    await register(repository, tmpl, "kept", execute_at=at(5))

    batch = await legacy.lease_due(at(10), [tmpl], limit=10)
    assert names(batch.executions) == ["dyn:kept"]
