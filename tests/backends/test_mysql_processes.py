"""MySQL/MariaDB under several OS processes: exactly-once, kill -9 of a lease holder, a server restart."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backends.drain_helpers import DrainWorkers
from backends.drain_helpers import scenario_exactly_once
from backends.drain_helpers import scenario_kill_lease_holder
from backends.drain_helpers import scenario_restart_server
from conformance_backends.mysql import drop_table
from conformance_backends.mysql import mysql_kwargs

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture
async def workers(mysql_params: dict[str, Any], tmp_path: Path) -> AsyncIterator[DrainWorkers]:
    table_name = f"processes_{uuid.uuid4().hex[:16]}"
    settings = mysql_kwargs(mysql_params, table_name)
    del settings["repository_factory"]
    try:
        async with DrainWorkers(
            tmp_path, factory="pyncette.mysql:mysql_repository", settings=settings, task={"lease_duration": 2}
        ) as workers:
            yield workers
    finally:
        await drop_table(mysql_params, table_name)


async def test_two_processes_run_every_due_instance_exactly_once(workers: DrainWorkers) -> None:
    await scenario_exactly_once(workers)


async def test_instances_of_a_killed_worker_run_on_the_survivor(workers: DrainWorkers) -> None:
    await scenario_kill_lease_holder(workers)


async def test_app_survives_a_mariadb_restart(workers: DrainWorkers, restart_service: Callable[[str], None]) -> None:
    await scenario_restart_server(workers, lambda: restart_service("mariadb"))
