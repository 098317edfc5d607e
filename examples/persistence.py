"""Choosing a backend. With persistent state, any number of processes share the schedule and each
execution happens once; state survives restarts.

Only the SQLite app below runs by default; the others show the settings of each backend (their
client libraries come with the extras ``pyncette[redis]``, ``[postgres]``, ``[mysql]``,
``[dynamodb]``).
"""

import logging

from pyncette import Context
from pyncette import Pyncette

logger = logging.getLogger(__name__)

# Embedded SQLite: no server needed; several processes on one machine may share the file.
app = Pyncette(sqlite_database="pyncette.db", sqlite_table_name="example_tasks", batch_size=50)


def network_backends() -> dict[str, Pyncette]:
    """The same app on each network backend (constructing one does not connect yet)."""
    from pyncette.dynamodb import dynamodb_repository
    from pyncette.mysql import mysql_repository
    from pyncette.postgres import postgres_repository
    from pyncette.redis import redis_repository

    return {
        "redis": Pyncette(
            repository_factory=redis_repository, redis_url="redis://localhost", redis_namespace="example"
        ),
        "postgres": Pyncette(
            repository_factory=postgres_repository,
            postgres_url="postgres://postgres@localhost/pyncette",
            postgres_table_name="example_tasks",
        ),
        "mysql": Pyncette(
            repository_factory=mysql_repository,
            mysql_host="localhost",
            mysql_database="pyncette",
            mysql_user="pyncette",
            mysql_password="password",  # noqa: S106 - an example
            mysql_table_name="example_tasks",
        ),
        "dynamodb": Pyncette(
            repository_factory=dynamodb_repository,
            dynamodb_region_name="eu-west-1",
            dynamodb_table_name="pyncette",
            dynamodb_partition_prefix="example",
        ),
    }


@app.task(schedule="* * * * * */2")
async def hello_world(context: Context) -> None:
    logger.info("Hello, world! (scheduled at %s)", context.scheduled_at)


if __name__ == "__main__":
    app.main()
