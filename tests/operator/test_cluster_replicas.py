"""Three operator replicas on Redis: no leader, one Pod per scheduled slot, no slot lost to kill -9."""

from __future__ import annotations

import collections
import datetime
import itertools
from typing import Any

import pytest
from ptask_harness import Kubectl
from ptask_harness import pod_template
from ptask_harness import ptask
from ptask_harness import replica_with_run_in_flight
from ptask_harness import rfc3339
from ptask_harness import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.slow]


def slots(pods: list[dict[str, Any]]) -> collections.Counter[str]:
    return collections.Counter(p["metadata"]["annotations"]["pyncette.dev/scheduled-at"] for p in pods)


def backend(redis_url: str, namespace: str) -> str:
    base = redis_url.split("?", 1)[0]
    return f"{base}?namespace={namespace}"


@pytest.fixture(params=["redis", "postgres"])
def shared_backend(request: pytest.FixtureRequest, k: Kubectl) -> str:
    """A backend URL that several replicas share, private to this test (namespace / table)."""
    if request.param == "redis":
        return backend(request.getfixturevalue("redis_url"), k.namespace)
    base = str(request.getfixturevalue("postgres_url")).split("?", 1)[0]
    return f"{base}?table=op_{abs(hash(k.namespace)) % 10**12}"


def test_kill_a_replica_mid_run_duplicates_none_and_misses_only_what_its_lease_held(
    k: Kubectl, start_operator: Any, shared_backend: str
) -> None:
    """kill -9 of a replica with a run in flight: never a second Pod for a slot; the times its lease held
    back are handled like any missed time (CronJob's rule: only the latest runs), counted and reported,
    and nothing else is lost."""
    url = shared_backend
    lease = datetime.timedelta(seconds=3)
    replicas = [start_operator("--namespace", k.namespace, backend=url, name=f"replica{i}") for i in range(3)]
    k.apply(
        ptask(
            "every-second",
            interval="1s",
            leaseDuration="3s",
            successfulRunsHistoryLimit=1000,
            podTemplate=pod_template(duration="1500ms"),
        )
    )
    wait_until(lambda: len(k.pods("every-second")) >= 4, timeout=90, what="four runs")

    # Kill -9 a replica while it has a run in flight (its lease is held, its Pod may be running).
    victim = wait_until(lambda: replica_with_run_in_flight(replicas), timeout=60, what="a replica with a run in flight")
    victim.kill()
    killed_at = datetime.datetime.now(datetime.UTC)
    survivors = [op for op in replicas if op is not victim]

    # The survivors take over once the lease expires and keep going well past the kill.
    def progressed() -> bool:
        times = [rfc3339(s) for s in slots(k.pods("every-second"))]
        return bool(times) and max(times) > killed_at + datetime.timedelta(seconds=8)

    wait_until(progressed, timeout=120, what="runs scheduled well after the kill")
    counts = slots(k.pods("every-second"))
    duplicates = {slot: n for slot, n in counts.items() if n > 1}
    assert duplicates == {}, duplicates
    times = sorted(rfc3339(s) for s in counts)
    second = datetime.timedelta(seconds=1)
    missing = [a + second * i for a, b in itertools.pairwise(times) for i in range(1, (b - a) // second)]
    # Only times the dead replica's lease held back may be missing (a little slack for clock edges).
    window = (killed_at - 2 * second, killed_at + lease + 2 * second)
    assert all(window[0] <= t <= window[1] for t in missing), (missing, window)
    assert len(missing) < 5, missing

    def reported() -> bool:
        return sum(op.metrics().get("pyncette_operator_missed_schedules_total", 0) for op in survivors) >= len(missing)

    wait_until(reported, timeout=30, what="the missed times counted")
    assert sum(op.metrics().get("pyncette_operator_missed_schedules_total", 0) for op in survivors) == len(missing)
    assert all(op.alive() for op in survivors)


def test_forbid_run_is_adopted_after_the_lease(k: Kubectl, start_operator: Any, redis_url: str) -> None:
    url = backend(redis_url, k.namespace)
    replicas = [start_operator("--namespace", k.namespace, backend=url, name=f"r{i}") for i in range(3)]
    k.apply(
        ptask(
            "long",
            interval="1s",
            concurrencyPolicy="Forbid",
            leaseDuration="3s",
            successfulRunsHistoryLimit=100,
            podTemplate=pod_template(duration="8s"),
        )
    )

    victim = wait_until(
        lambda: replica_with_run_in_flight(replicas), timeout=60, what="the replica waiting for the first Pod"
    )
    first = {p["metadata"]["name"] for p in k.pods("long")}
    victim.kill()
    survivors = [op for op in replicas if op is not victim]
    wait_until(
        lambda: sum(op.metric("pyncette_operator_pods_adopted_total") for op in survivors) >= 1,
        timeout=60,
        what="a survivor adopting the running Pod after the lease expired",
    )
    wait_until(
        lambda: any(
            op.metric('pyncette_operator_runs_finished_total{kind="Pod",outcome="succeeded"}') >= 1 for op in survivors
        ),
        timeout=60,
        what="the adopted run finishing on a survivor",
    )
    counts = slots(k.pods("long"))
    assert all(n == 1 for n in counts.values()), counts
    assert first <= {p["metadata"]["name"] for p in k.pods("long")}
