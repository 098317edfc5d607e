"""Operator settings: one frozen dataclass, filled by the CLI from flags and environment variables.

Every field says its default, its unit and why that default, so an operator of the operator can
tune it without reading the code that uses it (the style of kopf's ``OperatorSettings``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import field

DEFAULT_SQLITE_FILE = "pyncette-operator.db"


def default_data_dir() -> str:
    """``$PYNCETTE_DATA_DIR`` or the working directory: where the embedded SQLite file lives."""
    return os.environ.get("PYNCETTE_DATA_DIR") or "."


@dataclass(frozen=True)
class Settings:
    backend_url: str | None = None
    """``--backend`` / ``PYNCETTE_BACKEND_URL``. Default None: an embedded SQLite file
    (``<data_dir>/pyncette-operator.db``), fine for one replica only. See ``backend_url.py``."""

    namespaces: tuple[str, ...] = ()
    """``--namespace`` (repeatable) / ``PYNCETTE_NAMESPACES`` (comma-separated). The namespaces whose
    PyncetteTasks and Pods this replica watches. Empty together with ``all_namespaces=False`` means
    all namespaces (kopf's behaviour); give namespaces to run with namespaced RBAC only."""

    all_namespaces: bool = False
    """``--all-namespaces`` / ``PYNCETTE_ALL_NAMESPACES=1``. Watch the whole cluster (needs cluster-wide
    RBAC for pyncettetasks, pods and events)."""

    excluded_namespaces: tuple[str, ...] = ()
    """``--exclude-namespace`` (repeatable) / ``PYNCETTE_EXCLUDE_NAMESPACES`` (comma-separated). Namespaces
    whose PyncetteTasks are not run (Ready=False, NamespaceNotServed) although they are watched: with
    ``--all-namespaces``, the operator's own namespace (the chart passes it unless
    ``watch.releaseNamespace`` is set), whose Secrets a task's Pod there could mount."""

    handler_modules: tuple[str, ...] = ()
    """``--handlers`` (repeatable) / ``PYNCETTE_HANDLERS`` (comma-separated). Python modules imported at
    start-up; they register in-process handlers with ``@pyncette_operator.handler("name")``."""

    liveness_url: str | None = None
    """``--liveness`` / ``PYNCETTE_LIVENESS``, e.g. ``http://0.0.0.0:8080/healthz``. Default None: no
    probe endpoints. The path answers **liveness**: 200 unless the scheduler loop is wedged; a replica
    busy at its concurrency limit, or whose database is down, stays alive (a restart would not help).
    ``/readyz`` on the same port answers **readiness**: 200 while the backend answered the last poll
    recently, 503 during a database outage or shutdown. Both return JSON details (loop, backend,
    lastPoll, running, tasks)."""

    health_bind_address: str | None = None
    """``--health-bind-address`` / ``PYNCETTE_HEALTH_BIND_ADDRESS``. The address the health endpoint
    listens on. Default None: the host of ``--liveness``."""

    metrics_port: int = 0
    """``--metrics-port`` / ``PYNCETTE_METRICS_PORT``. Prometheus metrics on ``<bind address>:<port>/metrics``.
    Default 0: disabled (the chart enables it)."""

    metrics_bind_address: str = "0.0.0.0"
    """``--metrics-bind-address`` / ``PYNCETTE_METRICS_BIND_ADDRESS``. Default all interfaces (a Pod's
    scrape target is its IP); ``127.0.0.1`` keeps the metrics to the Pod (a sidecar scraper)."""

    allowed_service_accounts: frozenset[str] | None = None
    """``--allowed-service-accounts`` / ``PYNCETTE_ALLOWED_SERVICE_ACCOUNTS`` (comma-separated). When
    set, a podTemplate may only name these ServiceAccounts: ``name`` allows that name in every
    namespace, ``namespace:name`` in one namespace (a template naming none uses ``default``, which
    must then be listed); any other gives Ready=False, reason ForbiddenServiceAccount.
    Default None: any ServiceAccount of the task's namespace, because creating a PyncetteTask is
    already as powerful as creating a Pod there."""

    operator_service_account: tuple[str, str] | None = None
    """``--operator-service-account NAMESPACE:NAME`` / ``PYNCETTE_OPERATOR_SERVICE_ACCOUNT``. The
    operator's own ServiceAccount, which no podTemplate may name (its token may create Pods in every
    watched namespace). Default None: asked from the apiserver at start-up (a SelfSubjectReview of
    the operator's credentials); the chart sets it."""

    min_interval: float = 1.0
    """``--min-interval`` / ``PYNCETTE_MIN_INTERVAL``, seconds. An ``interval`` shorter than this, or a
    cron schedule whose runs come closer together, is Ready=False (reason ScheduleTooFrequent).
    1 s is cron's own resolution; raise it to keep tenants from scheduling Pods every second."""

    backfill_max_slots: int = 1000
    """``--backfill-max-slots`` / ``PYNCETTE_BACKFILL_MAX_SLOTS``. A ``pyncette.dev/backfill`` request
    covering more scheduled times than this is refused (a Warning Event, nothing runs): a typo in a
    year must not start a hundred thousand Pods."""

    pod_creates_per_second: float = 10.0
    """``--pod-create-qps`` / ``PYNCETTE_POD_CREATE_QPS``, Pods/s. A token bucket over this replica's
    run-Pod creates: due runs beyond it wait (renewing their leases) instead of flooding the
    apiserver and the scheduler when many tasks fall due at once (a tenant's thousand tasks due at
    midnight become a steady 10 Pods/s, not a thousand at once)."""

    pod_create_burst: int = 20
    """``--pod-create-burst`` / ``PYNCETTE_POD_CREATE_BURST``. Size of that bucket: this many Pods are
    created at once before the rate applies."""

    status_interval: float = 10.0
    """``--status-interval`` / ``PYNCETTE_STATUS_INTERVAL``, seconds. At most one status write per task
    per interval: changes in between are merged and written together. 10 s keeps a task that runs
    every second at 0.1 writes/s while ``kubectl get`` stays fresh enough for humans."""

    status_writes_per_second: float = 20.0
    """``PYNCETTE_STATUS_QPS``, writes/s. A global token bucket over all status writes of this replica,
    so the apiserver load stays bounded however many tasks there are (flushes wait, merged)."""

    status_burst: int = 50
    """``PYNCETTE_STATUS_BURST``. Size of that token bucket: a burst of changes (start-up, an
    ``kubectl apply`` of many tasks) is written at once up to this many."""

    events_per_second: float = 5.0
    """``PYNCETTE_EVENTS_QPS``, Events/s. A global token bucket for Kubernetes Events; on top of it each
    task posts at most one Event per reason per ``status_interval``. Excess Events are dropped and
    counted (``pyncette_operator_events_dropped_total``): status stays exact, Events are a hint."""

    sweep_interval: float = 60.0
    """``PYNCETTE_SWEEP_INTERVAL``, seconds. How often every replica compares the backend with a fresh
    LIST of PyncetteTasks, removing orphans and re-registering what is missing. The watch keeps them
    in step; the sweep only repairs drift (a missed delete while no replica ran)."""

    poll_interval: float = 1.0
    """``PYNCETTE_POLL_INTERVAL``, seconds. The scheduler's longest sleep between backend polls; due
    runs start sooner when the scheduler knows the next due time."""

    backend_timeout: float = 10.0
    """``PYNCETTE_BACKEND_TIMEOUT``, seconds. The deadline of every backend call (lease, commit,
    heartbeat, registration): a call that overruns is cancelled, its connection discarded, and the
    call retried, so a half-open database connection costs seconds instead of hours. 10 s is well
    inside the default 60 s lease, so failed commits can still be retried before it expires."""

    concurrency_limit: int = 1000
    """``PYNCETTE_CONCURRENCY_LIMIT``. Runs in flight per replica (a waiting Pod run costs one asyncio
    task and no thread)."""

    replica_id: str = field(default_factory=lambda: os.environ.get("POD_NAME") or os.uname().nodename)
    """``POD_NAME`` or the host name: shown in logs and Events as the reporting instance."""

    data_dir: str = field(default_factory=default_data_dir)
    """``$PYNCETTE_DATA_DIR``, default the working directory: where the embedded SQLite file goes."""

    log_level: str = "INFO"
    """``--log-level`` / ``LOG_LEVEL``."""
