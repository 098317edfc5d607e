"""In-memory-only behaviour: configuration errors and per-repository isolation."""

from __future__ import annotations

import datetime

import pytest

from pyncette.errors import BackendConfigurationError
from pyncette.memory import memory_repository
from pyncette.model import Context
from pyncette.task import Task

T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def _noop(context: Context) -> None:
    pass


@pytest.mark.parametrize("bad", [0, -1, "10", True])
async def test_bad_batch_size_is_refused_in_one_line(bad: object) -> None:
    with pytest.raises(BackendConfigurationError, match=r"^memory: batch_size: "):
        async with memory_repository(batch_size=bad):
            pass


async def test_each_repository_has_its_own_state() -> None:
    # No coordination beyond one repository: two apps in memory each see only their own instances.
    tmpl = Task(name="dyn", func=_noop, dynamic=True)
    async with memory_repository() as one, memory_repository() as two:
        await one.register_task(T0, tmpl.instantiate("a", execute_at=T0))
        assert [e.task.name for e in (await one.lease_due(T0, [tmpl], limit=10)).executions] == ["a"]
        assert (await two.lease_due(T0, [tmpl], limit=10)).executions == []


async def test_other_backends_settings_are_ignored() -> None:
    async with memory_repository(sqlite_table_name="x", redis_url="redis://nowhere", batch_size=5) as repo:
        assert await repo.get_task_state(T0, Task(name="s", func=_noop, interval=datetime.timedelta(seconds=1))) is None
