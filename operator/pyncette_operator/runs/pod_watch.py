"""One label-selected Pod watch per replica, shared by every Pod run it waits for.

kopf watches Pods labelled ``pyncette.dev/task`` in the operator's namespaces and feeds each event
to ``PodTracker.observe``. The tracker keeps the latest view of every run Pod and wakes the runs
waiting for one to finish. Waiting therefore costs a dict entry and a future, not a poll loop or a
watch connection per run, which is what lets one replica follow thousands of runs.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from pyncette_operator.runs.pods import PodView
from pyncette_operator.runs.pods import pod_view

PodKey = tuple[str, str]


class PodTracker:
    def __init__(self) -> None:
        self._pods: dict[PodKey, PodView] = {}
        self._by_owner: dict[str, set[PodKey]] = defaultdict(set)
        self._waiters: dict[PodKey, list[asyncio.Future[PodView | None]]] = defaultdict(list)

    def observe(self, event_type: str | None, pod: dict[str, Any]) -> None:
        """Applies one watch event (``DELETED`` removes the Pod; anything else upserts it)."""
        view = pod_view(pod)
        key = (view.namespace, view.name)
        if event_type == "DELETED":
            old = self._pods.pop(key, None)
            if old is not None and old.owner_uid:
                self._by_owner[old.owner_uid].discard(key)
                if not self._by_owner[old.owner_uid]:
                    del self._by_owner[old.owner_uid]
            self._wake(key, None)
            return
        self._pods[key] = view
        if view.owner_uid:
            self._by_owner[view.owner_uid].add(key)
        if view.finished:
            self._wake(key, view)

    def get(self, namespace: str, name: str) -> PodView | None:
        return self._pods.get((namespace, name))

    def pods_of(self, owner_uid: str) -> list[PodView]:
        return [self._pods[k] for k in self._by_owner.get(owner_uid, ()) if k in self._pods]

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
