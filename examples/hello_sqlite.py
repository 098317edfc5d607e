"""Hello, persistent world: a static task, a recurring dynamic task and a one-off, on embedded SQLite.

    python examples/hello_sqlite.py            # state in ./pyncette-hello.db (or $PYNCETTE_DB)

Every execution prints one line. State survives restarts: one-offs that came due while the app was
stopped run when it starts again. Stop with Ctrl+C: the first one lets running tasks finish, a
second one exits at once. Run it twice at the same time on the same file and each execution still
happens once.
"""

import contextlib
import datetime
import os

from pyncette import Context
from pyncette import Pyncette
from pyncette import TaskLockedException

app = Pyncette(
    sqlite_database=os.environ.get("PYNCETTE_DB", "pyncette-hello.db"),
    poll_interval=datetime.timedelta(seconds=1),
)


def say(context: Context, message: str) -> None:
    late_ms = (context.app_context.clock.now() - context.scheduled_at).total_seconds() * 1000
    print(f"{context.scheduled_at:%H:%M:%S} {context.task}: {message} (started {late_ms:.0f} ms late)", flush=True)


# fast_forward: after a restart, skip the runs missed while stopped instead of catching up on each.
@app.task(schedule="* * * * * */2", fast_forward=True)
async def heartbeat(context: Context) -> None:
    """A static cron task with a seconds field: every two seconds."""
    say(context, "tick")


@app.dynamic_task()
async def greet(context: Context) -> None:
    """A template; its instances are scheduled at run time by ``plan``."""
    say(context, f"hello, {context.args['who']}")


@app.task(interval=datetime.timedelta(seconds=5), fast_forward=True)
async def plan(context: Context) -> None:
    """Every five seconds: (re)schedule a recurring greeting and a one-off reminder."""
    ctx = context.app_context
    with contextlib.suppress(TaskLockedException):  # Ada is being greeted right now: keep her schedule
        await ctx.schedule_task(greet, "ada", interval=datetime.timedelta(seconds=3), fast_forward=True, who="Ada")
    await ctx.schedule_task(
        greet,
        f"reminder-{context.scheduled_at:%H%M%S}",
        execute_at=context.scheduled_at + datetime.timedelta(seconds=1),
        who="one-off reminder",
    )
    say(context, "planned the greetings")


if __name__ == "__main__":
    app.main()
