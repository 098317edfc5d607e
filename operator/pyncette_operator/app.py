"""Wiring: one asyncio loop running kopf (watches), the pyncette app (workers) and our writers.

Every replica runs the same thing; there is no leader. kopf runs embedded (``kopf.operator``) in
standalone mode, so no peering pauses a replica, and only with low-level ``@kopf.on.event``
handlers, so kopf keeps no progress annotations and adds no finalizers: a PyncetteTask can always be
deleted, operator or not. kopf's own Event posting and cluster scanning are off: the operator
posts its own rate-limited Events, and needs no RBAC on namespaces or CRDs.

Tasks started here and stopped in reverse on SIGINT/SIGTERM (kopf catches the signal and returns):
kopf; the pyncette main loop; the status writer; the Event poster; the sweep and dirty-retry
loops; the HTTP endpoints (metrics, liveness).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import signal
import time
from collections.abc import Awaitable
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from pyncette.clock import Clock
from pyncette.pyncette import Pyncette
from pyncette.pyncette import PyncetteContext
from pyncette_operator.backend_url import BackendConfig
from pyncette_operator.backend_url import redact_text
from pyncette_operator.events import EventRecorder
from pyncette_operator.kube import Conflict
from pyncette_operator.kube import Kube
from pyncette_operator.kube import NotFound
from pyncette_operator.kube import api_error_message
from pyncette_operator.kube import is_transient
from pyncette_operator.kube import make_api_client
from pyncette_operator.metrics import Metrics
from pyncette_operator.metrics import health_handler
from pyncette_operator.metrics import metrics_handler
from pyncette_operator.metrics import serve
from pyncette_operator.mirror import Mirror
from pyncette_operator.ratelimit import AsyncLimiter
from pyncette_operator.runs.execute import RunExecutor
from pyncette_operator.runs.groups import ConcurrencyGroups
from pyncette_operator.runs.handlers import HandlerRegistry
from pyncette_operator.runs.pod_runner import PodRunHooks
from pyncette_operator.runs.pod_runner import PodRunner
from pyncette_operator.runs.pod_watch import PodTracker
from pyncette_operator.runs.pods import TASK_LABEL
from pyncette_operator.settings import Settings
from pyncette_operator.spec import GROUP
from pyncette_operator.spec import PLURAL
from pyncette_operator.spec import VERSION
from pyncette_operator.spec import TaskPolicy
from pyncette_operator.status import ObjectGone
from pyncette_operator.status import Sender
from pyncette_operator.status import StaleView
from pyncette_operator.status import StatusWriter

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "pyncettetask"
GROUP_TEMPLATE_NAME = "pyncette-concurrency-group"
DIRTY_RETRY_SECONDS = 2.0
#: How long start-up waits for an apiserver that does not answer (see ``Operator._preflight``);
#: shorter than the chart's liveness window (10 s + 3 x 10 s) so that the probe never kills a
#: replica that is only waiting.
STARTUP_PATIENCE_SECONDS = 25.0
STALE_CHECK_SECONDS = 5.0
"""How often every replica re-evaluates the ``Stale`` condition of tasks with ``maxSuccessAge``."""
#: Readiness endpoint, served beside the liveness path of ``--liveness``.
READINESS_PATH = "/readyz"
SHUTDOWN_DRAIN_SECONDS = 15.0
"""On SIGTERM, how long running handlers get to finish (Pod runs release their leases at once).
Below the chart's terminationGracePeriodSeconds (30) so the final status write fits after it."""


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.error_backoffs = [1, 2, 5, 10]
    # At most this many objects are handled at once: a start-up listing of 10k tasks then queues
    # instead of spawning 10k workers at the same time (their transient memory stays as RSS).
    # A worker lingers idle_timeout after its object's last event, holding its slot: keep that short
    # so a start-up listing is processed at worker_limit / idle_timeout objects per second.
    settings.queueing.worker_limit = 100
    settings.queueing.idle_timeout = 0.3
    # The Pod watch is filtered by the apiserver: only run Pods are sent, not every Pod.
    settings.watching.label_selectors["", "v1", "pods"] = TASK_LABEL
    return settings


@dataclass
class Parts:
    """Everything one replica runs besides kopf and the HTTP endpoints (tests build it directly)."""

    app: Pyncette
    status: StatusWriter
    events: EventRecorder
    mirror: Mirror
    executor: RunExecutor
    pods: PodRunner


def _utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def status_sender(kube: Kube) -> Sender:
    """The StatusWriter's ``send``: a server-side apply of the status, with its preconditions."""

    async def send(namespace: str, name: str, body: dict[str, Any]) -> str | None:
        try:
            return await kube.apply_status(
                namespace, name, body["status"], uid=body.get("uid"), resource_version=body.get("resourceVersion")
            )
        except NotFound:
            raise ObjectGone() from None
        except Conflict:
            raise StaleView() from None

    return send


def build_parts(
    s: Settings,
    backend: BackendConfig,
    *,
    kube: Kube,
    handlers: HandlerRegistry,
    metrics: Metrics,
    tracker: PodTracker,
    stopping: asyncio.Event,
    namespaces: list[str] | None,
    clock: Clock | None = None,
) -> Parts:
    status = StatusWriter(
        send=status_sender(kube),
        interval=s.status_interval,
        rate=s.status_writes_per_second,
        burst=s.status_burst,
        on_write=metrics.status_writes.inc,
        wall_clock=clock.now if clock is not None else _utc_now,
        read=kube.get_task,
        on_conflict=metrics.status_conflicts.inc,
    )
    events = EventRecorder(
        send=kube.create_event,
        rate=s.events_per_second,
        burst=max(1, int(s.events_per_second * 4)),
        per_task_interval=s.status_interval,
        instance=s.replica_id,
        on_posted=lambda reason: metrics.events_posted.labels(reason=reason).inc(),
        on_dropped=lambda reason: metrics.events_dropped.labels(reason=reason).inc(),
    )
    app = Pyncette(
        repository_factory=backend.load_factory(),
        poll_interval=datetime.timedelta(seconds=s.poll_interval),
        backend_timeout=datetime.timedelta(seconds=s.backend_timeout),
        concurrency_limit=s.concurrency_limit,
        clock=clock,
        **backend.kwargs,
    )
    pods = PodRunner(
        kube=kube,
        tracker=tracker,
        hooks=PodRunHooks(
            on_created=metrics.pods_created.inc,
            on_adopted=metrics.pods_adopted.inc,
            on_pruned=lambda n: metrics.pods_pruned.inc(n),
        ),
    )

    async def execute(context: Any) -> None:
        await executor(context)

    template = app.dynamic_task(name=TEMPLATE_NAME)(execute)

    async def never_runs(context: Any) -> None:
        raise AssertionError("concurrency group entries are never executed")

    group_template = app.dynamic_task(name=GROUP_TEMPLATE_NAME, enabled=False)(never_runs)
    mirror = Mirror(
        template=template,
        status=status,
        events=events,
        handlers=handlers,
        kube=kube,
        metrics=metrics,
        namespaces=namespaces,
        policy=TaskPolicy(
            allowed_service_accounts=s.allowed_service_accounts,
            own_service_account=s.operator_service_account,
            min_interval=datetime.timedelta(seconds=s.min_interval),
            excluded_namespaces=frozenset(s.excluded_namespaces),
            backfill_max_slots=s.backfill_max_slots,
        ),
    )
    executor = RunExecutor(
        mirror=mirror,
        pods=pods,
        tracker=tracker,
        handlers=handlers,
        status=status,
        events=events,
        metrics=metrics,
        stopping=stopping,
        groups=ConcurrencyGroups(template=group_template, ctx=lambda: mirror.ctx),
        replica_id=s.replica_id,
        pod_create_limiter=AsyncLimiter(
            rate=s.pod_creates_per_second, burst=s.pod_create_burst, on_waiting=metrics.pod_creates_waiting.set
        ),
    )
    return Parts(app=app, status=status, events=events, mirror=mirror, executor=executor, pods=pods)


class StartupError(Exception):
    """The operator cannot start (one line for the CLI, exit code 1)."""


class FatalError(Exception):
    """kopf or a core loop died while running (logged with its traceback; exit code 1)."""


CREDENTIALS_GRACE_SECONDS = 30.0
"""How long the API server may keep answering 401 before the operator gives up (exit 1)."""

RESYNC_SETTLE_SECONDS = 1.0
"""After a watch restart, how long the re-list's events get to arrive before the LIST that repairs
the tracker (a debounce: one LIST for a burst of restarts)."""


async def resync_pods(
    *, kube: Kube, tracker: PodTracker, status: StatusWriter, namespaces: list[str] | None, metrics: Metrics
) -> int:
    """Rebuilds the Pod tracker from a LIST, then drops runs in ``status.active`` whose Pod is gone
    or finished (reported by a replica that died before it could say so). Returns Pods found gone."""
    since = tracker.mark()
    pods = await kube.list_pods(namespaces, label_selector=TASK_LABEL)
    gone = tracker.resync(pods, since=since, namespaces=namespaces)
    metrics.pod_resyncs.inc()
    reconcile_active(tracker=tracker, status=status, leased=None)
    if gone:
        logger.info("Pod resync: %d run Pod(s) were deleted while the watch was not looking", gone)
    return gone


def reconcile_active(*, tracker: PodTracker, status: StatusWriter, leased: set[str] | None) -> None:
    """``status.active`` from the cluster: a Pod run is active while its Pod exists and has not
    finished; a handler run while its backend entry is leased (``leased``: instance keys; None: unknown).
    Another replica's Pod run found finished counts for ``lastSuccessfulTime`` (or, handed over,
    ``lastFailureTime``): that replica may be gone (see ``TaskStatus.reconcile_active``)."""
    for (namespace, name), state in status.states():
        instance = f"{namespace}/{name}"

        def alive(kind: str, run: str, _namespace: str = namespace, _instance: str = instance) -> bool | None:
            if kind == "Handler":
                if leased is None:
                    return None
                return any(k == _instance or k.startswith(f"{_instance}@") for k in leased)
            view = tracker.get(_namespace, run)
            if view is None:
                return False if tracker.synced else None
            return not view.finished

        def ended(kind: str, run: str, _namespace: str = namespace) -> tuple[bool, datetime.datetime] | None:
            view = tracker.get(_namespace, run) if kind == "Pod" else None
            if view is None or not view.finished or view.finished_at is None:
                return None
            return view.succeeded, view.finished_at

        if state.reconcile_active(alive, ended):
            status.changed(namespace, name)


class Operator:
    """One operator replica. ``run()`` returns when kopf stops (signal) or a core task fails."""

    def __init__(self, settings: Settings, backend: BackendConfig, *, handlers: HandlerRegistry) -> None:
        self.settings = settings
        self.backend = backend
        self.handlers = handlers
        self.metrics = Metrics()
        self.tracker = PodTracker()
        self.stopping = asyncio.Event()
        self.resync_requested = asyncio.Event()
        self.executor: RunExecutor | None = None

    def _namespaces(self) -> list[str] | None:
        s = self.settings
        return None if s.all_namespaces or not s.namespaces else list(s.namespaces)

    async def run(self) -> None:
        try:
            api_client = await make_api_client()
        except Exception as e:
            raise StartupError(f"no Kubernetes credentials (in-cluster or KUBECONFIG): {e}") from None
        kube = Kube(api_client, on_request=self.metrics.count_request)
        try:
            await self._preflight(kube)
            await self._run(kube)
        finally:
            await kube.close()

    async def _preflight(self, kube: Kube) -> None:
        """Fails fast, in one line, on what would otherwise be a silent operator: no CRD, no RBAC.

        An apiserver that does not answer yet (restarting, overloaded) is waited for, up to
        ``STARTUP_PATIENCE_SECONDS``: a replica started during an apiserver restart must not exit,
        or the kubelet's crash back-off keeps it down for minutes after the apiserver is back.
        """
        namespaces = self._namespaces()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + STARTUP_PATIENCE_SECONDS
        delay = 0.5
        while True:
            try:
                await kube.list_tasks(None if namespaces is None else namespaces[:1], limit=1)
            except NotFound:
                raise StartupError(
                    f"the PyncetteTask CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed: "
                    "kubectl apply -f crds/pyncettetask.yaml"
                ) from None
            except Exception as e:
                if not is_transient(e) or loop.time() + delay > give_up_at:
                    raise StartupError(
                        f"cannot list {PLURAL} ({api_error_message(e)}); check the API server and RBAC"
                    ) from None
                logger.warning("Cannot list %s yet (%s); retrying in %.1fs", PLURAL, api_error_message(e), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                break
        if self.settings.operator_service_account is None:
            try:
                own = await kube.service_account()
            except Exception as e:
                logger.warning(
                    "Cannot tell which ServiceAccount the operator runs as (%s); set --operator-service-account"
                    " so that no podTemplate can use it",
                    api_error_message(e),
                )
            else:
                if own is not None:
                    self.settings = dataclasses.replace(self.settings, operator_service_account=own)
                    logger.info("Running as ServiceAccount %s/%s: podTemplates may not use it", *own)

    async def _run(self, kube: Kube) -> None:
        s = self.settings
        parts = build_parts(
            s,
            self.backend,
            kube=kube,
            handlers=self.handlers,
            metrics=self.metrics,
            tracker=self.tracker,
            stopping=self.stopping,
            namespaces=self._namespaces(),
        )
        app, status, events, mirror, executor = parts.app, parts.status, parts.events, parts.mirror, parts.executor
        self.executor = executor
        registry = self._kopf_registry(mirror)

        logger.info(
            "pyncette-operator %s starting: backend %s, namespaces %s",
            s.replica_id,
            self.backend.description,
            ", ".join(s.namespaces) if self._namespaces() else "all",
        )
        async with contextlib.AsyncExitStack() as stack:
            try:
                ctx = await stack.enter_async_context(app.create())
            except Exception as e:
                raise StartupError(
                    f"backend {self.backend.description}: {type(e).__name__}: {redact_text(str(e))}"
                ) from None
            mirror.bind(ctx)
            runners = await self._http(ctx, mirror)
            namespaces = self._namespaces()

            exported: set[tuple[str, str]] = set()

            async def freshness_check() -> None:
                now_exported = set()
                for namespace, name, stale, last in status.refresh_stale():
                    self.metrics.task_stale.labels(namespace, name).set(1 if stale else 0)
                    if last is not None:
                        self.metrics.task_last_success.labels(namespace, name).set(last.timestamp())
                    now_exported.add((namespace, name))
                for namespace, name in exported - now_exported:
                    for gauge in (self.metrics.task_stale, self.metrics.task_last_success):
                        with contextlib.suppress(KeyError):
                            gauge.remove(namespace, name)
                exported.clear()
                exported.update(now_exported)

            async def sweep() -> None:
                await mirror.sweep()
                reconcile_active(tracker=self.tracker, status=status, leased=mirror.leased)
                if self.tracker.synced:
                    await mirror.settle_backfills(
                        self.tracker.pods_of, quiet_for=datetime.timedelta(seconds=s.sweep_interval)
                    )

            background = [
                asyncio.ensure_future(ctx.run()),
                asyncio.ensure_future(status.run()),
                asyncio.ensure_future(events.run()),
                asyncio.ensure_future(self._every(s.sweep_interval, sweep, "sweep")),
                asyncio.ensure_future(self._every(DIRTY_RETRY_SECONDS, mirror.retry_dirty, "retry")),
                asyncio.ensure_future(self._every(STALE_CHECK_SECONDS, freshness_check, "freshness")),
                asyncio.ensure_future(self._resync_loop(kube, status, namespaces)),
            ]
            # kopf handles SIGINT/SIGTERM by stopping at once and cancelling every task started
            # after it (our runs included) 5 s later. We take the signals back once it has
            # installed its handlers: on a signal we shut down gracefully first (runs release their
            # leases, status is written), and only then tell kopf to stop.
            kopf_ready, kopf_stop, signalled = asyncio.Event(), asyncio.Event(), asyncio.Event()
            self._take_signals(signalled)
            kopf_task = asyncio.ensure_future(
                kopf.operator(
                    registry=registry,
                    settings=kopf_settings(),
                    standalone=True,
                    clusterwide=namespaces is None,
                    namespaces=namespaces or (),
                    memo=kopf.Memo(),
                    ready_flag=kopf_ready,
                    stop_flag=kopf_stop,
                )
            )
            signals = asyncio.ensure_future(self._signals_after(kopf_ready, signalled))
            fatal: BaseException | None = None
            try:
                done, _ = await asyncio.wait([kopf_task, signals, *background], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task is signals or task.cancelled():
                        continue  # a signal: a graceful stop, not a failure
                    error = task.exception()
                    if error is not None:
                        what = "kopf (the watches)" if task is kopf_task else "a core loop"
                        logger.error("The operator stops: %s failed", what, exc_info=error)
                        fatal = error
                    elif task is not kopf_task:  # kopf returns by itself only on a signal it caught
                        logger.error("The operator stops: a core loop returned unexpectedly")
                        fatal = RuntimeError("a core loop returned")
            finally:
                logger.info("Stopping: releasing the runs that wait on Pods (another replica adopts them)")
                # First the runs: waiting Pod runs release their leases, so the entries are due at once.
                self.stopping.set()
                ctx.shutdown()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(background[0]), timeout=SHUTDOWN_DRAIN_SECONDS)
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(ctx.drain(), timeout=SHUTDOWN_DRAIN_SECONDS)
                await executor.close()  # handlers still running are cancelled and release their leases
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(ctx.drain(), timeout=5)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(status.close(), timeout=10)
                signals.cancel()
                kopf_stop.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(kopf_task, timeout=10)
                kopf_task.cancel()
                for task in background[1:]:
                    task.cancel()
                for runner in runners:
                    await runner.cleanup()
            if fatal is not None:
                raise FatalError(f"{type(fatal).__name__}: {fatal}")

    @staticmethod
    def _take_signals(signalled: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        _quiet_kopf_stream_closing(loop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, Operator._on_signal, signalled, signum)

    @staticmethod
    def _on_signal(signalled: asyncio.Event, signum: int) -> None:
        if signalled.is_set():
            logger.warning("Received %s again, exiting now", signal.Signals(signum).name)
            os._exit(1)
        logger.info("Received %s: stopping gracefully", signal.Signals(signum).name)
        signalled.set()

    async def _signals_after(self, kopf_ready: asyncio.Event, signalled: asyncio.Event) -> None:
        """Returns on SIGINT/SIGTERM; takes the handlers back from kopf once it has installed its own."""
        ready = asyncio.ensure_future(kopf_ready.wait())
        stop = asyncio.ensure_future(signalled.wait())
        try:
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stop.cancel()
        self._take_signals(signalled)
        await signalled.wait()

    def _kopf_registry(self, mirror: Mirror) -> kopf.OperatorRegistry:
        registry = kopf.OperatorRegistry()
        tracker = self.tracker

        # A fresh registry has no login handlers: use the same credentials as our own client
        # (in-cluster ServiceAccount, else the kubeconfig).
        @kopf.on.login(registry=registry)
        async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return await kopf.login_via_async_client(**kwargs)

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def on_task(event: kopf.RawEvent, **_: Any) -> None:
            await mirror.on_event(event.get("type"), dict(event.get("object") or {}))

        @kopf.on.event("", "v1", "pods", labels={TASK_LABEL: kopf.PRESENT}, registry=registry)
        async def on_pod(event: kopf.RawEvent, **_: Any) -> None:
            if event.get("type") is None:
                self.resync_requested.set()  # kopf re-lists: its watch (re)started after a gap
            tracker.observe(event.get("type"), dict(event.get("object") or {}))

        return registry

    async def _http(self, ctx: PyncetteContext, mirror: Mirror) -> list[Any]:
        s = self.settings
        runners = []
        if s.metrics_port:
            runners.append(
                await serve(
                    host=s.metrics_bind_address, port=s.metrics_port, routes={"/metrics": metrics_handler(self.metrics)}
                )
            )
            logger.info("Metrics on %s:%s/metrics", s.metrics_bind_address, s.metrics_port)
        if s.liveness_url:
            import urllib.parse

            url = urllib.parse.urlsplit(s.liveness_url)
            runners.append(
                await serve(
                    host=s.health_bind_address or url.hostname or "0.0.0.0",
                    port=url.port or 8080,
                    routes={
                        url.path or "/healthz": health_handler(self._health(ctx, mirror, liveness=True)),
                        READINESS_PATH: health_handler(self._health(ctx, mirror, liveness=False)),
                    },
                )
            )
            logger.info("Liveness probe on %s, readiness on %s", url.path or "/healthz", READINESS_PATH)
        return runners

    def _health(
        self, ctx: PyncetteContext, mirror: Mirror, *, liveness: bool
    ) -> Callable[[], Awaitable[dict[str, Any]]]:
        """Liveness: the scheduler loop is not wedged (a busy replica, or one whose database is down,
        is alive: a restart would not help). Readiness: the backend answered the last poll recently.
        Neither calls the backend: they report what the loop last saw, so probes add no load."""

        async def check() -> dict[str, Any]:
            health = ctx.health()
            if liveness and not health.alive:
                raise RuntimeError(f"the scheduler loop is wedged: {health.loop}")
            if not liveness and not health.ready:
                raise RuntimeError(f"not ready: backend {health.backend}; loop {health.loop}")
            return {**health.as_dict(), "tasks": len(mirror), "podsWatched": len(self.tracker)}

        return check

    async def _resync_loop(self, kube: Kube, status: StatusWriter, namespaces: list[str] | None) -> None:
        """LISTs run Pods after every watch restart (kopf re-lists) and every sweep interval.

        Credentials the API server keeps rejecting (401 for ``CREDENTIALS_GRACE_SECONDS``: a revoked
        or deleted ServiceAccount) end the operator with exit code 1, so that Kubernetes restarts it
        with fresh ones; kopf's own watches would notice only when they reconnect, up to an hour later.
        """
        rejected_since: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.resync_requested.wait(), timeout=self.settings.sweep_interval)
            if self.resync_requested.is_set():
                await asyncio.sleep(RESYNC_SETTLE_SECONDS)
            self.resync_requested.clear()
            try:
                await resync_pods(
                    kube=kube, tracker=self.tracker, status=status, namespaces=namespaces, metrics=self.metrics
                )
                if self.executor is not None:
                    await self.executor.enforce_deadlines()
                rejected_since = None
            except Exception as e:
                if getattr(e, "status", None) == 401:
                    now = time.monotonic()
                    rejected_since = now if rejected_since is None else rejected_since
                    if now - rejected_since >= CREDENTIALS_GRACE_SECONDS:
                        raise RuntimeError(
                            f"the API server has rejected our credentials for {CREDENTIALS_GRACE_SECONDS:.0f} s "
                            "(401 Unauthorized): restart with valid ones"
                        ) from None
                else:
                    rejected_since = None
                logger.warning("Listing run Pods failed (retrying): %s", api_error_message(e))
                self.resync_requested.set()
                await asyncio.sleep(DIRTY_RETRY_SECONDS)

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[Any]], name: str) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await action()
            except Exception as e:
                logger.warning("The %s loop failed (retrying in %ss): %s", name, seconds, e)


def _quiet_kopf_stream_closing(loop: asyncio.AbstractEventLoop) -> None:
    """At shutdown asyncio closes kopf's still-open watch streams (async generators), and kopf's
    ``streaming_block`` answers the close with "generator didn't stop after athrow()": a traceback
    on every clean SIGTERM that means nothing. Only that one message goes to DEBUG."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        asyncgen = context.get("asyncgen")
        if asyncgen is not None and getattr(asyncgen, "__qualname__", "") == "infinite_watch":
            logger.debug("kopf's watch stream closed at shutdown: %r", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
