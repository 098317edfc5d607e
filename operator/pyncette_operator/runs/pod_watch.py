"""One label-selected Pod watch per replica, shared by every Pod run it waits for, repaired by LISTs.

kopf watches Pods labelled ``pyncette.dev/task`` in the operator's namespaces and feeds each event
to ``PodTracker.observe``. The tracker keeps the latest view of every run Pod and wakes the runs
waiting for one to finish. Waiting therefore costs a dict entry and a future, not a poll loop or a
watch connection per run, which is what lets one replica follow thousands of runs.

A watch alone is not the truth: after a gap (410 Gone, a reconnect, an apiserver restart) kopf
re-lists and reports what exists, but nothing reports what was deleted meanwhile, so a run could
wait forever on a Pod that is gone. As an informer does, ``resync`` rebuilds the tracker from a
fresh LIST, after every watch restart and periodically: a Pod the LIST lacks (and the watch has not
seen since the LIST began) is gone, and whoever waits for it is woken with "deleted". Pods are
grouped by their owner's (namespace, uid), and only an ownerReference to our API group counts.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection
from typing import Any

from pyncette_operator.runs.pods import PodView
from pyncette_operator.runs.pods import pod_view

PodKey = tuple[str, str]
OwnerKey = tuple[str, str]


def _version(pod: dict[str, Any]) -> int | None:
    try:
        return int((pod.get("metadata") or {}).get("resourceVersion") or "")
    except ValueError:
        return None


class PodTracker:
    def __init__(self) -> None:
        self._pods: dict[PodKey, PodView] = {}
        self._versions: dict[PodKey, int | None] = {}
        self._seen: dict[PodKey, int] = {}
        self._deleted: dict[PodKey, int] = {}
        self._by_owner: dict[OwnerKey, set[PodKey]] = defaultdict(set)
        self._waiters: dict[PodKey, list[asyncio.Future[PodView | None]]] = defaultdict(list)
        self._tick = 0
        self.synced = False
        """True once a full LIST rebuilt the tracker (until then, an absent Pod proves nothing)."""

    def observe(self, event_type: str | None, pod: dict[str, Any]) -> None:
        """Applies one watch event (``DELETED`` removes the Pod; anything else upserts it)."""
        view = pod_view(pod)
        key = (view.namespace, view.name)
        self._tick += 1
        if event_type == "DELETED":
            self._drop(key, view)
            return
        old = self._pods.get(key)
        if old is not None and old.uid != view.uid:
            self._unindex(key, old)
        self._pods[key] = view
        self._versions[key] = _version(pod)
        self._seen[key] = self._tick
        self._deleted.pop(key, None)
        if view.owner_uid:
            self._by_owner[(view.namespace, view.owner_uid)].add(key)
        if view.finished:
            self._wake(key, view)

    def _unindex(self, key: PodKey, old: PodView) -> None:
        if old.owner_uid:
            owner = (old.namespace, old.owner_uid)
            self._by_owner[owner].discard(key)
            if not self._by_owner[owner]:
                del self._by_owner[owner]

    def _drop(self, key: PodKey, view: PodView | None) -> None:
        old = self._pods.pop(key, None)
        self._versions.pop(key, None)
        self._seen.pop(key, None)
        self._deleted[key] = self._tick
        if old is not None:
            self._unindex(key, old)
        self._wake(key, None)

    # ---- the LIST that repairs the watch ----

    def mark(self) -> int:
        """A point in the event stream; pass it to ``resync`` with a LIST started after it."""
        return self._tick

    def resync(self, pods: list[dict[str, Any]], *, since: int, namespaces: Collection[str] | None) -> int:
        """Rebuilds the tracker from a LIST (of ``namespaces``, None: all) begun after ``mark()`` returned
        ``since``; returns how many Pods it found gone. Events seen after ``since`` win over the LIST."""
        listed: set[PodKey] = set()
        for pod in pods:
            meta = pod.get("metadata") or {}
            key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
            listed.add(key)
            if self._deleted.get(key, -1) > since:
                continue  # deleted after the LIST began: the LIST is older news
            current = self._versions.get(key)
            version = _version(pod)
            if key in self._pods and current is not None and version is not None and version < current:
                continue
            self.observe("MODIFIED", pod)
        gone = [
            key
            for key in self._pods
            if key not in listed and (namespaces is None or key[0] in namespaces) and self._seen.get(key, 0) <= since
        ]
        for key in gone:
            self._drop(key, None)
        if len(self._deleted) > 10_000:
            self._deleted = {k: t for k, t in self._deleted.items() if t > since}
        self.synced = True
        return len(gone)

    # ---- queries ----

    def get(self, namespace: str, name: str) -> PodView | None:
        return self._pods.get((namespace, name))

    def running(self) -> list[PodView]:
        """Every tracked run Pod that has not finished and is not being deleted."""
        return [p for p in self._pods.values() if not p.finished and not p.deleting]

    def pods_of(self, namespace: str, owner_uid: str) -> list[PodView]:
        return [self._pods[k] for k in self._by_owner.get((namespace, owner_uid), ()) if k in self._pods]

    def _wake(self, key: PodKey, view: PodView | None) -> None:
        for future in self._waiters.pop(key, []):
            if not future.done():
                future.set_result(view)

    async def wait_finished(self, namespace: str, name: str, timeout: float | None) -> PodView | None:  # noqa: ASYNC109
        """The Pod once it has finished, or None if it was deleted; TimeoutError after ``timeout``.

        Returns at once if the watch already saw it finish.
        """
        key = (namespace, name)
        current = self._pods.get(key)
        if current is not None and current.finished:
            return current
        future: asyncio.Future[PodView | None] = asyncio.get_running_loop().create_future()
        self._waiters[key].append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None and future in waiters:
                waiters.remove(future)
                if not waiters:
                    del self._waiters[key]

    def __len__(self) -> int:
        return len(self._pods)
