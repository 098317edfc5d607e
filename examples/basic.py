"""The smallest app: one cron task (with a seconds field) on the default in-memory backend."""

from pyncette import Context
from pyncette import Pyncette

app = Pyncette()


@app.task(schedule="* * * * * */5")
async def hello_world(context: Context) -> None:
    print(f"Hello world! (scheduled at {context.scheduled_at:%H:%M:%S})", flush=True)


if __name__ == "__main__":
    app.main()
