"""DynamoDB under several OS processes: exactly-once, kill -9 of a lease holder, an endpoint restart.

moto's server keeps its tables in memory only, so restarting it loses every stored entry (a real
DynamoDB does not restart under you). What the restart test can and does check is the app side: it
keeps running, reconnects, re-creates the table, and runs what is registered afterwards.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from collections.abc import Callable
from pathlib import Path

import pytest

from backends.drain_helpers import DrainWorkers
from backends.drain_helpers import job_template
from backends.drain_helpers import register_instances
from backends.drain_helpers import scenario_exactly_once
from backends.drain_helpers import scenario_kill_lease_holder
from conformance_backends.dynamodb import delete_table
from conformance_backends.dynamodb import dynamodb_kwargs

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
async def workers(dynamodb_endpoint: str, tmp_path: Path) -> AsyncIterator[DrainWorkers]:
    table_name = f"processes-{uuid.uuid4().hex[:16]}"
    settings = dynamodb_kwargs(dynamodb_endpoint, table_name)
    del settings["repository_factory"]
    try:
        async with DrainWorkers(
            tmp_path, factory="pyncette.dynamodb:dynamodb_repository", settings=settings, task={"lease_duration": 2}
        ) as workers:
            yield workers
    finally:
        await delete_table(dynamodb_endpoint, table_name)


async def test_two_processes_run_every_due_instance_exactly_once(workers: DrainWorkers) -> None:
    await scenario_exactly_once(workers, instances=200)


async def test_instances_of_a_killed_worker_run_on_the_survivor(workers: DrainWorkers) -> None:
    await scenario_kill_lease_holder(workers)


async def test_app_survives_an_endpoint_restart(workers: DrainWorkers, restart_service: Callable[[str], None]) -> None:
    worker = await workers.start()
    template = job_template(workers)
    now = datetime.datetime.now(datetime.UTC)
    await register_instances(workers, [template.instantiate("before", execute_at=now)], now=now)
    await workers.wait_until(lambda: "before" in workers.finished_names(), what="the first instance to run")

    await asyncio.get_running_loop().run_in_executor(None, lambda: restart_service("dynamodb"))

    # The table is gone with moto's memory; the app re-creates it. Registering from here also
    # creates it if the app has not yet, so wait until the app has run something new.
    expected = {f"after{i}" for i in range(5)}
    now = datetime.datetime.now(datetime.UTC)
    await register_instances(workers, [template.instantiate(n, execute_at=now) for n in sorted(expected)], now=now)
    await workers.wait_until(
        lambda: workers.finished_names() >= expected, what="instances registered after the restart"
    )
    assert worker.process.poll() is None, "the app died with the endpoint"
    assert "Traceback" not in worker.stderr_text()
