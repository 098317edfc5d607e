"""``kubectl ptask``'s local parts: the times ``next`` computes and the runs ``history`` reads.

The commands against a real cluster (through kubectl's plugin mechanism) are in
test_cluster_plugin.py; these check the computations on objects shaped like the API's.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pyncette.schedule import spread_cron
from pyncette_operator.plugin import PluginError
from pyncette_operator.plugin import build_parser
from pyncette_operator.plugin import history
from pyncette_operator.plugin import main
from pyncette_operator.plugin import upcoming
from pyncette_operator.runs.jitter import jitter_delay

NOW = datetime.datetime(2030, 1, 1, 10, 0, 30, tzinfo=datetime.UTC)
POD = {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def task(status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "pyncette.dev/v1",
        "kind": "PyncetteTask",
        "metadata": {"namespace": "etl", "name": "load", "uid": "uid-1", "generation": 1},
        "spec": {"podTemplate": POD, **spec},
        "status": status or {},
    }


def at(hour: int, minute: int = 0, second: int = 0, *, day: int = 1) -> str:
    return datetime.datetime(2030, 1, day, hour, minute, second, tzinfo=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_next_resolves_h_from_namespace_and_name() -> None:
    minute = int(spread_cron("H * * * *", "etl/load").split()[0])
    times = upcoming(task(schedule="H * * * *"), now=NOW, count=3)
    first_hour = 10 if minute > 0 or NOW.second == 0 else 11
    assert [t["scheduledAt"] for t in times] == [at(first_hour + i, minute) for i in range(3)]
    assert all(t["startsAt"] == t["scheduledAt"] for t in times)  # no jitter


def test_next_merges_several_schedules_in_the_tasks_zone() -> None:
    times = upcoming(task(schedules=["0 9 * * *", "0 17 * * *"], timezone="America/New_York"), now=NOW, count=3)
    # 10:00:30 UTC is 05:00:30 in New York: 09:00 (14:00 UTC) and 17:00 (22:00 UTC) come next.
    assert [t["scheduledAt"] for t in times] == [at(14), at(22), at(14, day=2)]


def test_next_adds_each_slots_jitter() -> None:
    times = upcoming(task(schedule="*/15 * * * *", jitter="30s"), now=NOW, count=2)
    for t in times:
        slot = datetime.datetime.fromisoformat(t["scheduledAt"].replace("Z", "+00:00"))
        delay = jitter_delay(task_uid="uid-1", scheduled_at=slot, jitter=datetime.timedelta(seconds=30))
        start = datetime.datetime.fromisoformat(t["startsAt"].replace("Z", "+00:00"))
        assert start - slot == delay
    assert [t["scheduledAt"] for t in times] == [at(10, 15), at(10, 30)]


def test_next_of_an_interval_continues_from_the_stored_next_time() -> None:
    body = task({"nextRunTime": at(10, 0, 40), "lastScheduleTime": at(10, 0, 10)}, interval="30s")
    assert [t["scheduledAt"] for t in upcoming(body, now=NOW, count=3)] == [at(10, 0, 40), at(10, 1, 10), at(10, 1, 40)]
    only_last = task({"lastScheduleTime": at(9)}, interval="1h")
    assert [t["scheduledAt"] for t in upcoming(only_last, now=NOW, count=1)] == [at(11)]


def test_next_of_a_one_off_and_of_suspended_or_invalid_tasks() -> None:
    assert upcoming(task(executeAt=at(12)), now=NOW, count=5) == [{"scheduledAt": at(12), "startsAt": at(12)}]
    assert upcoming(task({"lastScheduleTime": at(12)}, executeAt=at(12)), now=NOW, count=5) == []
    with pytest.raises(PluginError, match="pyncettetask/load is suspended"):
        upcoming(task(schedule="* * * * *", suspend=True), now=NOW, count=1)
    with pytest.raises(PluginError, match=r"not valid \(InvalidSchedule\): spec.schedule: "):
        upcoming(task(schedule="61 * * * *"), now=NOW, count=1)
    # A handler task is valid locally whatever handlers the operator has.
    handler = task(schedule="0 * * * *")
    del handler["spec"]["podTemplate"]
    handler["spec"]["handler"] = {"name": "nightly"}
    assert upcoming(handler, now=NOW, count=1) == [{"scheduledAt": at(11), "startsAt": at(11)}]


def pod(
    name: str, slot: str, phase: str, *, attempt: int = 0, uid: str = "uid-1", trigger: str | None = None
) -> dict[str, Any]:
    annotations = {"pyncette.dev/scheduled-at": slot, "pyncette.dev/attempt": str(attempt)}
    if trigger:
        annotations["pyncette.dev/trigger"] = trigger
    status: dict[str, Any] = {"phase": phase, "startTime": slot}
    if phase in ("Succeeded", "Failed"):
        finished = datetime.datetime.fromisoformat(slot.replace("Z", "+00:00")) + datetime.timedelta(seconds=42)
        status["containerStatuses"] = [
            {
                "name": "c",
                "state": {
                    "terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "finishedAt": finished.isoformat()}
                },
            }
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": "etl",
            "uid": f"pod-{name}",
            "creationTimestamp": slot,
            "labels": {"pyncette.dev/task": "load"},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "pyncette.dev/v1",
                    "kind": "PyncetteTask",
                    "name": "load",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
        "status": status,
    }


def event(reason: str, message: str) -> dict[str, Any]:
    return {
        "reason": reason,
        "message": message,
        "involvedObject": {"kind": "PyncetteTask", "name": "load", "uid": "uid-1"},
        "lastTimestamp": at(9),
    }


def test_history_reads_outcome_attempts_and_duration_from_pods_and_events() -> None:
    pods = [
        pod("load-a0", at(8), "Failed"),
        pod("load-a1", at(8), "Failed", attempt=1),
        pod("load-a2", at(8), "Succeeded", attempt=2),
        pod("load-b", at(9), "Failed"),
        pod("load-c", at(10), "Running"),
        pod("load-now", at(9, 30), "Succeeded", trigger="run-now:x"),
        pod("other", at(7), "Succeeded", uid="uid-of-a-predecessor"),
    ]
    events = [
        event("RunSucceeded", f"Pod load-old for {at(6)} succeeded"),
        event("RunFailed", f"handler nightly for {at(5)} failed after 3 attempt(s): boom"),
        event("RunSucceeded", f"Pod load-a2 for {at(8)} succeeded"),  # the Pod says more
        event("RunStarted", f"started Pod load-c for {at(10)}"),
    ]
    records = history(pods, events, task_uid="uid-1", now=NOW)
    rows = [(r.scheduledAt, r.trigger, r.outcome, r.attempts, r.duration, r.pod, r.source) for r in records]
    assert rows == [
        (at(10), "schedule", "Running", 1, "30s (so far)", "load-c", "Pod"),
        (at(9, 30), "run-now:x", "Succeeded", 1, "42s", "load-now", "Pod"),
        (at(9), "schedule", "Failed", 1, "42s", "load-b", "Pod"),
        (at(8), "schedule", "Succeeded", 3, "42s", "load-a2", "Pod"),
        (at(6), "schedule", "Succeeded", 1, "", "", "Event"),
        (at(5), "schedule", "Failed", 3, "", "", "Event"),
    ]


def test_options_go_before_or_after_the_command_and_count_is_not_n() -> None:
    parser = build_parser()
    args = parser.parse_args(["-n", "etl", "next", "load", "--count", "3", "-o", "json"])
    assert (args.namespace, args.command, args.name, args.count, args.output) == ("etl", "next", "load", 3, "json")
    args = parser.parse_args(["history", "load", "--namespace", "etl", "--context", "prod"])
    assert (args.namespace, args.context, args.limit) == ("etl", "prod", 50)


def test_usage_errors_and_a_missing_kubeconfig_exit_1_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["frobnicate", "x"])
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: argument command: invalid choice")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["next", "load"]) == 1
    assert (
        capsys.readouterr().err == f"error: no kubeconfig at {tmp_path / 'missing'} (use --kubeconfig or $KUBECONFIG)\n"
    )
