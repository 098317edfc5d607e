"""Prometheus metrics of one operator replica, and the HTTP endpoints (/metrics, liveness).

Each ``Metrics`` has its own registry (no module-level state), so several operators in one test
process do not share counters. The counters double as the test suite's observation points: the
status-write cap is checked by reading ``pyncette_operator_status_writes_total``, not by timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest

from pyncette._http import Response
from pyncette._http import bound_port
from pyncette._http import start_server
from pyncette_operator.backend_url import redact_text

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
        self.status_conflicts = Counter(
            "pyncette_operator_status_conflicts",
            "Status writes refused because the task changed since the view they were built on (redone on a fresh read)",
            registry=r,
        )
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
        self.pod_creates_waiting = Gauge(
            "pyncette_operator_pod_creates_waiting",
            "Run Pod creates waiting for the per-replica rate limit (--pod-create-qps)",
            registry=r,
        )
        self.registrations = Counter(
            "pyncette_operator_backend_registrations", "Task instances written to the backend", ["action"], registry=r
        )
        self.missed_schedules = Counter(
            "pyncette_operator_missed_schedules",
            "Scheduled runs skipped: missed while no replica could start them, or past startingDeadlineSeconds",
            registry=r,
        )
        self.retries = Counter(
            "pyncette_operator_run_retries",
            "Attempts started after a failed attempt of the same scheduled run",
            registry=r,
        )
        self.runs_given_up = Counter(
            "pyncette_operator_runs_given_up",
            "Scheduled runs recorded as failed after backoffLimit retries (or activeDeadlineSeconds)",
            registry=r,
        )
        self.pod_resyncs = Counter(
            "pyncette_operator_pod_resyncs", "Full LISTs of run Pods that rebuilt the Pod tracker", registry=r
        )
        self.task_stale = Gauge(
            "pyncette_operator_task_stale",
            "1 while a PyncetteTask with maxSuccessAge is Stale, else 0 (every replica exports it)",
            ["namespace", "name"],
            registry=r,
        )
        self.task_last_success = Gauge(
            "pyncette_operator_task_last_success_timestamp_seconds",
            "When the last successful run of a PyncetteTask with maxSuccessAge finished (Unix time)",
            ["namespace", "name"],
            registry=r,
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


Route = Callable[[], Awaitable[Response]]


class HttpServer:
    """One listening endpoint (``pyncette._http``: connection cap, read/write/handler timeouts)."""

    def __init__(self, server: asyncio.Server) -> None:
        self.server = server

    @property
    def port(self) -> int:
        return bound_port(self.server)

    async def cleanup(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def serve(*, host: str, port: int, routes: dict[str, Route]) -> HttpServer:
    """Serves GET ``routes`` (path → handler) on ``host:port``; 404 elsewhere, 405 for other methods.

    Each endpoint is its own server with its own connection cap, so a flood of scrapes cannot
    starve the kubelet's liveness probe.
    """

    async def respond(method: str, path: str) -> Response:
        route = routes.get(path)
        if route is None:
            return Response(404, b"Not Found")
        if method != "GET":
            return Response(405, b"Method Not Allowed", headers={"Allow": "GET"})
        return await route()

    return HttpServer(await start_server(respond, host=host, port=port))


def metrics_handler(metrics: Metrics) -> Route:
    async def handle() -> Response:
        return Response(200, metrics.render(), content_type=CONTENT_TYPE_LATEST)

    return handle


def health_handler(check: HealthCheck) -> Route:
    async def handle() -> Response:
        try:
            report = await check()
        except Exception as e:
            return _json(503, {"ok": False, "error": f"{type(e).__name__}: {redact_text(str(e))}"})
        return _json(200, {"ok": True, **report})

    return handle


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode(), content_type="application/json; charset=utf-8")
