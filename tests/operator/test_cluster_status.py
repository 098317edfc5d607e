"""Status writes on the real apiserver: every replica applies status under one field manager, so
each write carries the resourceVersion it was built on. A write built on a stale view (another
replica wrote since, and this replica's watch has not shown it yet) is refused and built again on a
fresh read, instead of removing the other replica's fields; a task deleted and re-created under the
same name never gets the status meant for the one it replaced."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio import config
from ptask_harness import Kubectl
from ptask_harness import ptask

from pyncette_operator.app import status_sender
from pyncette_operator.kube import Kube
from pyncette_operator.status import StatusWriter

pytestmark = [pytest.mark.cluster]

T = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


async def connect(kube_cluster: Any) -> Kube:
    """The operator's client for the test cluster (its kubeconfig by path: the client library reads
    ``$KUBECONFIG`` when it is imported, before the cluster fixture exports it)."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(kube_cluster.kubeconfig), client_configuration=configuration)
    return Kube(client.ApiClient(configuration))


def replica(kube: Kube) -> StatusWriter:
    """One replica's status writer (no per-task interval: every change is written at the next flush)."""
    return StatusWriter(send=status_sender(kube), read=kube.get_task, interval=0, rate=100, burst=100)


async def observe(writer: StatusWriter, kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """What a replica's watch shows of the task at this moment."""
    body = await kube.get_task(namespace, name)
    assert body is not None
    meta = body["metadata"]
    writer.observe(namespace, name, body.get("status"), uid=meta["uid"], resource_version=meta["resourceVersion"])
    return body


async def test_a_replica_with_a_stale_view_keeps_what_another_replica_wrote(
    k: Kubectl, kube_cluster: Any, crd_installed: None
) -> None:
    k.apply(ptask("shared", interval="1h", handler={"name": "x"}))
    kube = await connect(kube_cluster)
    try:
        a, b = replica(kube), replica(kube)
        await observe(a, kube, k.namespace, "shared")
        await observe(b, kube, k.namespace, "shared")  # B's view stops here
        a.state(k.namespace, "shared").last_successful_time = T
        a.changed(k.namespace, "shared")
        await a.flush_due()
        b.state(k.namespace, "shared").last_failure_time = T + datetime.timedelta(minutes=1)
        b.changed(k.namespace, "shared")
        await b.flush_due()
        status = k.task("shared")["status"]
        # Without the precondition, B's apply (same manager, force) removes A's lastSuccessfulTime.
        assert (status.get("lastSuccessfulTime"), status.get("lastFailureTime")) == (
            "2030-01-01T00:00:00Z",
            "2030-01-01T00:01:00Z",
        )
        assert (a.writes, b.writes) == (1, 1)
    finally:
        await kube.close()


async def test_a_task_re_created_under_the_same_name_never_gets_the_old_ones_status(
    k: Kubectl, kube_cluster: Any, crd_installed: None
) -> None:
    k.apply(ptask("again", interval="1h", handler={"name": "x"}))
    kube = await connect(kube_cluster)
    try:
        writer = replica(kube)
        await observe(writer, kube, k.namespace, "again")
        k("delete", "pyncettetask", "again")
        k.apply(ptask("again", interval="2h", handler={"name": "x"}))
        writer.state(k.namespace, "again").last_failure_time = T
        writer.changed(k.namespace, "again")
        await writer.flush_due()
        assert "lastFailureTime" not in (k.task("again").get("status") or {})
        assert writer.writes == 0
        assert writer.states() == []  # the old task's status is dropped, not retried for ever
    finally:
        await kube.close()
