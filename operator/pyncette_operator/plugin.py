"""``kubectl ptask``: the kubectl plugin for PyncetteTasks (console script ``kubectl-ptask``).

kubectl runs any ``kubectl-<name>`` on the PATH as ``kubectl <name>``; ``pip install
'pyncette[operator]'`` installs this one. It follows kubectl's conventions: ``-n/--namespace``
(default: the context's namespace, else ``default``), ``--context``, ``--kubeconfig`` and
``$KUBECONFIG`` (several files joined with ``:``), ``-o json`` for machine-readable output, errors
as one ``error: ...`` line on stderr with exit code 1 (as kubectl; usage errors too).

Commands:

* ``run-now NAME``: one extra run now (a new value of the ``pyncette.dev/run-now`` annotation).
* ``suspend NAME`` / ``resume NAME``: ``spec.suspend``; ``resume`` also sets a new value of the
  ``pyncette.dev/resume`` annotation, which resumes a task the circuit breaker stopped
  (``spec.suspendAfterFailures``).
* ``backfill NAME --from START --to END``: every scheduled time in the range once (a new value of
  the ``pyncette.dev/backfill`` annotation; progress in ``status.backfill``).
* ``next NAME [-n 5]``: the next scheduled times, computed here with the operator's own schedule
  code (``H`` spread, several schedules, time zone, jitter delay), so they are the times the
  operator will use: each row is the slot (the Pod's ``pyncette.dev/scheduled-at``) and, with
  ``spec.jitter``, when its run will start.
* ``history NAME``: the task's runs, newest first: slot, trigger, outcome, attempts, duration and
  the Pod, read from the task's Pods (every attempt is a Pod) and, for runs whose Pods are pruned
  and for handler tasks, from its ``RunSucceeded``/``RunFailed`` Events (Events are kept for about
  an hour and rate-limited, so the oldest runs may be missing).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass
from typing import Any
from typing import NoReturn

from pyncette.schedule import next_union_time
from pyncette_operator.runs.jitter import jitter_delay
from pyncette_operator.runs.pods import TASK_UID_LABEL
from pyncette_operator.runs.pods import pod_view
from pyncette_operator.spec import BACKFILL_ANNOTATION
from pyncette_operator.spec import GROUP
from pyncette_operator.spec import KIND
from pyncette_operator.spec import PLURAL
from pyncette_operator.spec import RESUME_ANNOTATION
from pyncette_operator.spec import RUN_NOW_ANNOTATION
from pyncette_operator.spec import VERSION
from pyncette_operator.spec import InvalidTask
from pyncette_operator.spec import TaskPolicy
from pyncette_operator.spec import TaskSpec
from pyncette_operator.spec import format_duration
from pyncette_operator.spec import format_time
from pyncette_operator.spec import parse_task
from pyncette_operator.spec import parse_time

PROG = "kubectl ptask"
EXIT_ERROR = 1
RESOURCE = f"{PLURAL}.{GROUP}"
_EVENT_SLOT = re.compile(r" for (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)(?: \(run now: (.*?)\))? (succeeded|failed)")
_EVENT_ATTEMPTS = re.compile(r"failed after (\d+) attempt")


class PluginError(Exception):
    """A failure to report as ``error: <message>`` with exit code 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="the namespace (default: the context's)")
    common.add_argument("--context", default=argparse.SUPPRESS, help="the kubeconfig context to use")
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="the kubeconfig file (default: $KUBECONFIG)")
    common.add_argument(
        "-o", "--output", choices=["table", "json"], default=argparse.SUPPRESS, help="output format (default: table)"
    )
    parser = _Parser(prog=PROG, description="Work with PyncetteTasks (the pyncette operator).", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_now = commands.add_parser("run-now", parents=[common], help="start one extra run now")
    run_now.add_argument("name")
    fill = commands.add_parser("backfill", parents=[common], help="run every scheduled time in a past range once")
    fill.add_argument("name")
    fill.add_argument("--from", dest="start", required=True, help="RFC 3339 start, e.g. 2026-11-01T00:00:00Z")
    fill.add_argument("--to", dest="end", required=True, help="RFC 3339 end (included; not in the future)")
    for verb, what in (("suspend", "stop starting new runs"), ("resume", "start again (suspend or circuit breaker)")):
        commands.add_parser(verb, parents=[common], help=what).add_argument("name")
    nxt = commands.add_parser("next", parents=[common], help="the next scheduled times, computed locally")
    nxt.add_argument("name")
    nxt.add_argument("-c", "--count", type=int, default=5, help="how many (default 5)")
    history = commands.add_parser("history", parents=[common], help="past runs: outcome, attempts, duration")
    history.add_argument("name")
    history.add_argument("--limit", type=int, default=50, help="at most this many runs, newest first (default 50)")
    return parser


# ---- pure parts (no cluster): what the commands compute from objects ----


def upcoming(body: Mapping[str, Any], *, now: datetime.datetime, count: int) -> list[dict[str, str]]:
    """The next ``count`` slots of a PyncetteTask after ``now``: ``{scheduledAt, startsAt}``.

    Cron schedules (``H`` resolved from namespace/name, several schedules merged, in the task's
    time zone) are computed from now. Interval schedules continue from ``status.nextRunTime`` (the
    time the operator stored), else from ``status.lastScheduleTime``. ``startsAt`` adds the
    ``spec.jitter`` delay of that slot. A suspended or invalid task raises PluginError.
    """
    task = _parse(body)
    if task.suspend:
        raise PluginError(f"{KIND.lower()}/{task.name} is suspended: no runs are scheduled")
    slots: list[datetime.datetime] = []
    if task.cron_expressions:
        after = now
        while len(slots) < count:
            following = next_union_time(task.cron_expressions, after, task.timezone)
            if following is None:
                break
            slots.append(following)
            after = following
    elif task.interval is not None:
        status = body.get("status") or {}
        base = _time(status.get("nextRunTime"))
        if base is None:
            last = _time(status.get("lastScheduleTime"))
            base = last + task.interval if last is not None else now + task.interval
        while base <= now:
            base += task.interval
        slots = [base + task.interval * i for i in range(count)]
    elif task.execute_at is not None:
        done = _time((body.get("status") or {}).get("lastScheduleTime"))
        slots = [] if done is not None and done >= task.execute_at else [task.execute_at]
    out = []
    for slot in slots:
        start = slot
        if task.jitter is not None:
            start = slot + jitter_delay(task_uid=task.uid, scheduled_at=slot, jitter=task.jitter)
        out.append({"scheduledAt": format_time(slot), "startsAt": _format_precise(start)})
    return out


@dataclass
class RunRecord:
    """One run (one slot, or one run-now) as ``history`` shows it."""

    scheduledAt: str
    trigger: str
    outcome: str
    attempts: int
    duration: str
    pod: str
    source: str


def history(
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    *,
    task_uid: str,
    now: datetime.datetime,
) -> list[RunRecord]:
    """The runs of one task (uid) from its Pods and Events, newest slot first."""
    attempts: dict[tuple[str, str], list[Any]] = {}
    for pod in pods:
        view = pod_view(dict(pod))
        if view.owner_uid != task_uid or not view.scheduled_at:
            continue
        attempts.setdefault((view.scheduled_at, view.trigger or ""), []).append((view, pod))
    runs: dict[tuple[str, str], RunRecord] = {}
    for (slot, trigger), seen in attempts.items():
        seen.sort(key=lambda vp: (vp[0].attempt, vp[0].created_at or now))
        view, pod = seen[-1]
        started = _time((pod.get("status") or {}).get("startTime")) or view.created_at
        ended = view.finished_at if view.finished else None
        duration = ""
        if started is not None:
            duration = format_duration(max(datetime.timedelta(), (ended or now) - started)).replace("0ms", "0s")
            duration += "" if ended is not None else " (so far)"
        outcome = view.phase if not view.deleting or view.finished else "Deleting"
        runs[(slot, trigger)] = RunRecord(
            scheduledAt=slot,
            trigger=_trigger_text(trigger),
            outcome=outcome,
            attempts=max(len(seen), view.attempt + 1),
            duration=duration,
            pod=view.name,
            source="Pod",
        )
    for event in sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or "")):
        if (event.get("involvedObject") or {}).get("uid") not in (None, task_uid):
            continue
        if event.get("reason") not in ("RunSucceeded", "RunFailed"):
            continue
        match = _EVENT_SLOT.search(str(event.get("message") or ""))
        if match is None:
            continue
        slot, run_now, result = match.groups()
        key = (slot, f"run-now:{run_now}" if run_now else "")
        if key in runs and runs[key].source == "Pod":
            continue
        tries = _EVENT_ATTEMPTS.search(str(event.get("message") or ""))
        runs[key] = RunRecord(
            scheduledAt=slot,
            trigger=_trigger_text(key[1]),
            outcome="Succeeded" if result == "succeeded" else "Failed",
            attempts=int(tries.group(1)) if tries else 1,
            duration="",
            pod="",
            source="Event",
        )
    return sorted(runs.values(), key=lambda r: (r.scheduledAt, r.trigger), reverse=True)


def _trigger_text(trigger: str) -> str:
    return trigger or "schedule"


def _parse(body: Mapping[str, Any]) -> TaskSpec:
    handler = ((body.get("spec") or {}).get("handler") or {}).get("name")
    # Only the operator knows its handlers and flags; locally, any handler name and no flag limits.
    policy = TaskPolicy(min_interval=datetime.timedelta())
    parsed = parse_task(body, handlers=[handler] if isinstance(handler, str) else [], policy=policy)
    if isinstance(parsed, InvalidTask):
        name = (body.get("metadata") or {}).get("name")
        raise PluginError(f"{KIND.lower()}/{name} is not valid ({parsed.reason}): {parsed.message}")
    return parsed


def _time(raw: Any) -> datetime.datetime | None:
    if not raw:
        return None
    try:
        return parse_time(str(raw))
    except ValueError:
        return None


def _format_precise(value: datetime.datetime) -> str:
    """RFC 3339 UTC, with milliseconds only when there are any (jittered start times)."""
    value = value.astimezone(datetime.UTC)
    if value.microsecond == 0:
        return format_time(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """kubectl's plain table: upper-case headers, columns padded with three spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "   ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


# ---- the cluster side ----


class Cluster:
    """The few API calls the plugin makes, with kubectl-like error messages."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes_asyncio import client

        self.api = api
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def _json(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            response = await call(*args, _preload_content=False, **kwargs)
            data = await response.read()
            response.release()
        except ApiException as e:
            raise PluginError(_api_error(e.status, e.reason, e.body)) from None
        except OSError as e:
            raise PluginError(f"cannot reach the API server: {e}") from None
        if not 200 <= response.status <= 299:
            raise PluginError(_api_error(response.status, response.reason, data))
        return json.loads(data)

    async def get_task(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, name
        )
        return result

    async def patch_task(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self._json(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            name,
            patch,
            _content_type="application/merge-patch+json",
        )
        return result

    async def task_pods(self, uid: str) -> list[dict[str, Any]]:
        page = await self._json(self.core.list_namespaced_pod, self.namespace, label_selector=f"{TASK_UID_LABEL}={uid}")
        return list(page.get("items") or [])

    async def task_events(self, name: str) -> list[dict[str, Any]]:
        selector = f"involvedObject.name={name},involvedObject.kind={KIND}"
        page = await self._json(self.core.list_namespaced_event, self.namespace, field_selector=selector)
        return list(page.get("items") or [])


def _api_error(status: int | None, reason: str | None, body: Any) -> str:
    """kubectl's wording: ``Error from server (NotFound): <the API's message>``."""
    try:
        payload = json.loads(body) if isinstance(body, (str, bytes)) else {}
    except ValueError:
        payload = {}
    message = payload.get("message") if isinstance(payload, dict) else None
    kind = payload.get("reason") if isinstance(payload, dict) and payload.get("reason") else reason
    return f"Error from server ({kind or status}): {message or reason or status}"


def _kubeconfig(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The kubeconfig as given (``--kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``) and its existing files."""
    kubeconfig = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG") or "~/.kube/config"
    paths = [os.path.expanduser(p) for p in kubeconfig.split(os.pathsep) if p]
    return kubeconfig, [p for p in paths if os.path.isfile(p)]


async def _connect(
    args: argparse.Namespace, kubeconfig: str, paths: list[str], in_cluster_namespace: str
) -> tuple[Any, str]:
    from kubernetes_asyncio import client
    from kubernetes_asyncio import config

    explicit = getattr(args, "kubeconfig", None)
    configuration = client.Configuration()
    if not paths:
        if explicit is None and _in_cluster():
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return client.ApiClient(configuration), getattr(args, "namespace", None) or in_cluster_namespace
        raise PluginError(f"no kubeconfig at {kubeconfig} (use --kubeconfig or $KUBECONFIG)")
    try:
        loader = await config.load_kube_config(
            config_file=os.pathsep.join(paths),
            context=getattr(args, "context", None),
            client_configuration=configuration,
            persist_config=False,
        )
    except Exception as e:  # ConfigException, YAML errors, bad certificates...: all one line for the user
        problem = " ".join(str(e).split())
        raise PluginError(f"kubeconfig {kubeconfig}: {type(e).__name__}: {problem}") from None
    context_namespace = ((loader.current_context or {}).get("context") or {}).get("namespace")
    return client.ApiClient(configuration), getattr(args, "namespace", None) or context_namespace or "default"


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _in_cluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


async def _run(args: argparse.Namespace, kubeconfig: str, paths: list[str], in_cluster_namespace: str) -> str:
    api, namespace = await _connect(args, kubeconfig, paths, in_cluster_namespace)
    try:
        cluster = Cluster(api, namespace)
        return await _command(cluster, args)
    finally:
        await api.close()


async def _command(cluster: Cluster, args: argparse.Namespace) -> str:
    name: str = args.name
    ref = f"{KIND.lower()}.{GROUP}/{name}"
    output = getattr(args, "output", "table")
    now = datetime.datetime.now(datetime.UTC)
    if args.command == "run-now":
        value = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        await cluster.patch_task(name, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: value}}})
        return (
            json.dumps({"name": name, RUN_NOW_ANNOTATION: value})
            if output == "json"
            else f"{ref} run requested ({value})"
        )
    if args.command == "backfill":
        try:
            start, end = parse_time(args.start), parse_time(args.end)
        except ValueError:
            raise PluginError(
                f"--from/--to: expected RFC 3339 times with an offset or Z, got {args.start!r}, {args.end!r}"
            ) from None
        if start > end:
            raise PluginError("--from is after --to")
        value = f"{format_time(start)}/{format_time(end)}"
        await cluster.patch_task(name, {"metadata": {"annotations": {BACKFILL_ANNOTATION: value}}})
        if output == "json":
            return json.dumps({"name": name, BACKFILL_ANNOTATION: value})
        return (
            f"{ref} backfill requested ({value}); progress: kubectl get ptask {name} -o jsonpath='{{.status.backfill}}'"
        )
    if args.command == "suspend":
        await cluster.patch_task(name, {"spec": {"suspend": True}})
        return json.dumps({"name": name, "suspend": True}) if output == "json" else f"{ref} suspended"
    if args.command == "resume":
        # Both ways a task stops: spec.suspend, and the circuit breaker (a new resume value).
        value = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        patch = {"metadata": {"annotations": {RESUME_ANNOTATION: value}}, "spec": {"suspend": False}}
        await cluster.patch_task(name, patch)
        return (
            json.dumps({"name": name, "suspend": False, RESUME_ANNOTATION: value})
            if output == "json"
            else f"{ref} resumed"
        )
    body = await cluster.get_task(name)
    if args.command == "next":
        if args.count < 1:
            raise PluginError("--count must be at least 1")
        times = upcoming(body, now=now, count=args.count)
        if output == "json":
            return json.dumps(times, indent=2)
        jitter = (body.get("spec") or {}).get("jitter")
        if not times:
            return f"{ref} has no upcoming runs"
        if jitter:
            return table(["SCHEDULED", "STARTS (JITTER)"], [[t["scheduledAt"], t["startsAt"]] for t in times])
        return table(["SCHEDULED"], [[t["scheduledAt"]] for t in times])
    if args.command == "history":
        uid = str((body.get("metadata") or {}).get("uid") or "")
        records = history(await cluster.task_pods(uid), await cluster.task_events(name), task_uid=uid, now=now)
        records = records[: max(args.limit, 0)]
        if output == "json":
            return json.dumps([asdict(r) for r in records], indent=2)
        if not records:
            return f"No runs found for {ref}."
        headers = ["SCHEDULED", "TRIGGER", "OUTCOME", "ATTEMPTS", "DURATION", "POD"]
        rows = [
            [r.scheduledAt, r.trigger, r.outcome, str(r.attempts), r.duration or "-", r.pod or "-"] for r in records
        ]
        return table(headers, rows)
    raise PluginError(f"unknown command {args.command!r}")  # argparse refuses these first


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pyncette_operator.cli import missing_operator_modules

    missing = missing_operator_modules()
    if missing:
        print(
            f"error: kubectl ptask needs pip install 'pyncette[operator]' ({', '.join(missing)} missing)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        kubeconfig, paths = _kubeconfig(args)
        namespace = _in_cluster_namespace() if not paths and _in_cluster() else ""
        print(asyncio.run(_run(args, kubeconfig, paths, namespace)))
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
