"""Prometheus metrics of one operator replica, and the HTTP endpoints (/metrics, liveness).

Each ``Metrics`` has its own registry (no module-level state), so several operators in one test
process do not share counters. The counters double as the test suite's observation points: the
status-write cap is checked by reading ``pyncette_operator_status_writes_total``, not by timing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.apiserver_requests = Counter(
            "pyncette_operator_apiserver_requests",
            "Requests this replica sent to the apiserver",
            ["verb", "resource"],
            registry=r,
        )
        self.status_writes = Counter("pyncette_operator_status_writes", "Status subresource writes", registry=r)
        self.events_posted = Counter(
            "pyncette_operator_events_posted", "Kubernetes Events posted", ["reason"], registry=r
        )
        self.events_dropped = Counter(
            "pyncette_operator_events_dropped", "Events dropped by the rate limits", ["reason"], registry=r
        )
        self.runs_started = Counter("pyncette_operator_runs_started", "Runs started", ["kind"], registry=r)
        self.runs_finished = Counter(
            "pyncette_operator_runs_finished", "Runs finished", ["kind", "outcome"], registry=r
        )
        self.pods_created = Counter("pyncette_operator_pods_created", "Run Pods created", registry=r)
        self.pods_adopted = Counter(
            "pyncette_operator_pods_adopted", "Run Pods found already created (409 or a retry) and adopted", registry=r
        )
        self.pods_pruned = Counter(
            "pyncette_operator_pods_pruned", "Finished Pods deleted by history limits", registry=r
        )
        self.registrations = Counter(
            "pyncette_operator_backend_registrations", "Task instances written to the backend", ["action"], registry=r
        )
        self.invalid_tasks = Gauge("pyncette_operator_invalid_tasks", "PyncetteTasks with Ready=False", registry=r)
        self.start_skew = Histogram(
            "pyncette_operator_start_skew_seconds",
            "Delay between a run's scheduled time and its start",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=r,
        )

        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def count(self, metric: str, **labels: str) -> None:
        """Increments a labelled counter; label children are cached (``labels()`` is slow per run)."""
        key = (metric, tuple(sorted(labels.items())))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = getattr(self, metric).labels(**labels)
        child.inc()

    def count_request(self, verb: str, resource: str) -> None:
        self.count("apiserver_requests", verb=verb, resource=resource)

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


async def serve(
    *, host: str, port: int, routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
) -> web.AppRunner:
    """Starts an aiohttp server with ``routes`` (path → handler); returns the runner to clean up."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    return runner


def metrics_handler(metrics: Metrics) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(_: web.Request) -> web.StreamResponse:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handle


def health_handler(check: HealthCheck) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(_: web.Request) -> web.StreamResponse:
        try:
            report = await check()
        except Exception as e:
            return web.json_response({"ok": False, "error": f"{type(e).__name__}: {e}"}, status=503)
        return web.json_response({"ok": True, **report})

    return handle
