"""``pyncette-operator run``: flags and environment variables → ``Settings`` → a running replica.

Configuration errors (a bad backend URL, a handler module that does not import, a bad number) are
reported as one line on stderr with exit code 2, never a traceback: they are the operator's
user's mistakes, not the operator's bugs. Every flag has an environment variable, so the Helm
chart can configure everything through ``env``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import ipaddress
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence

from pyncette_operator.backend_url import BackendUrlError
from pyncette_operator.backend_url import RedactingFormatter
from pyncette_operator.backend_url import parse_backend_url
from pyncette_operator.runs.handlers import HandlerImportError
from pyncette_operator.runs.handlers import default_registry
from pyncette_operator.runs.handlers import import_handler_modules
from pyncette_operator.settings import Settings
from pyncette_operator.settings import default_data_dir
from pyncette_operator.spec import parse_duration

EXIT_USAGE = 2


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _flag_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyncette-operator", description="Runs PyncetteTask resources on a schedule (a Kubernetes operator)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run one operator replica")
    env = os.environ.get
    run.add_argument(
        "--backend",
        default=env("PYNCETTE_BACKEND_URL"),
        metavar="URL",
        help="sqlite:///file.db, redis://host:6379/0, postgresql://user:pw@host/db, mysql://user:pw@host/db, "
        "dynamodb://region/table?endpoint=URL (env PYNCETTE_BACKEND_URL; default: an embedded SQLite file)",
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=None,
        metavar="NS",
        help="watch this namespace (repeatable; env PYNCETTE_NAMESPACES, comma-separated)",
    )
    where.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        default=None,
        help="watch every namespace (env PYNCETTE_ALL_NAMESPACES=1; the default when no namespace is given)",
    )
    run.add_argument(
        "--exclude-namespace",
        action="append",
        default=None,
        metavar="NS",
        help="do not run the PyncetteTasks of this namespace, e.g. the operator's own "
        "(repeatable; env PYNCETTE_EXCLUDE_NAMESPACES, comma-separated)",
    )
    run.add_argument(
        "--handlers",
        action="append",
        default=None,
        metavar="MODULE",
        help="import this module to register @pyncette_operator.handler functions (repeatable; env PYNCETTE_HANDLERS)",
    )
    run.add_argument(
        "--liveness",
        default=env("PYNCETTE_LIVENESS"),
        metavar="URL",
        help="serve the liveness probe at this URL, e.g. http://0.0.0.0:8080/healthz, and the readiness probe "
        "at /readyz on the same port (env PYNCETTE_LIVENESS)",
    )
    run.add_argument(
        "--health-bind-address",
        default=env("PYNCETTE_HEALTH_BIND_ADDRESS"),
        metavar="ADDRESS",
        help="the address the health endpoint listens on "
        "(env PYNCETTE_HEALTH_BIND_ADDRESS; default: the --liveness host)",
    )
    run.add_argument(
        "--metrics-bind-address",
        default=env("PYNCETTE_METRICS_BIND_ADDRESS", "0.0.0.0"),
        metavar="ADDRESS",
        help="the address the metrics endpoint listens on (env PYNCETTE_METRICS_BIND_ADDRESS; default 0.0.0.0)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="N",
        help="serve Prometheus metrics on :N/metrics (env PYNCETTE_METRICS_PORT; default off)",
    )
    run.add_argument(
        "--allowed-service-accounts",
        action="append",
        default=None,
        metavar="SA",
        help="ServiceAccounts a podTemplate may use: NAME (any namespace) or NAMESPACE:NAME (repeatable or "
        "comma-separated; env PYNCETTE_ALLOWED_SERVICE_ACCOUNTS; default any)",
    )
    run.add_argument(
        "--operator-service-account",
        default=env("PYNCETTE_OPERATOR_SERVICE_ACCOUNT"),
        metavar="NAMESPACE:NAME",
        help="the operator's own ServiceAccount, which no podTemplate may use "
        "(env PYNCETTE_OPERATOR_SERVICE_ACCOUNT; default: asked from the apiserver)",
    )
    run.add_argument(
        "--min-interval",
        default=env("PYNCETTE_MIN_INTERVAL"),
        metavar="DURATION",
        help="schedules running more often than this are refused, e.g. 1s, 30s, 5m "
        "(env PYNCETTE_MIN_INTERVAL; default 1s)",
    )
    run.add_argument(
        "--backfill-max-slots",
        default=env("PYNCETTE_BACKFILL_MAX_SLOTS"),
        metavar="N",
        help="a pyncette.dev/backfill request covering more scheduled times is refused "
        "(env PYNCETTE_BACKFILL_MAX_SLOTS; default 1000)",
    )
    run.add_argument(
        "--pod-create-qps",
        default=env("PYNCETTE_POD_CREATE_QPS"),
        metavar="N",
        help="run Pods this replica creates per second, at most (env PYNCETTE_POD_CREATE_QPS; default 10)",
    )
    run.add_argument(
        "--pod-create-burst",
        default=env("PYNCETTE_POD_CREATE_BURST"),
        metavar="N",
        help="run Pods created at once before --pod-create-qps applies (env PYNCETTE_POD_CREATE_BURST; default 20)",
    )
    run.add_argument(
        "--status-interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help="at most one status write per task per interval (env PYNCETTE_STATUS_INTERVAL; default 10)",
    )
    run.add_argument(
        "--log-level", default=env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR (env LOG_LEVEL)"
    )
    return parser


class UsageError(Exception):
    pass


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _bind_address_ok(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return bool(re.fullmatch(r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?", address)) and len(address) <= 253
    return True


def _number(raw: str | None, name: str, *, default: float, minimum: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise UsageError(f"{name}: must be >= {minimum:g}, got {raw!r}")
    return value


def settings_from_args(args: argparse.Namespace) -> Settings:
    env = os.environ.get
    namespaces = tuple(args.namespace or _split(env("PYNCETTE_NAMESPACES")))
    all_namespaces = bool(args.all_namespaces) or (not args.namespace and _flag_true(env("PYNCETTE_ALL_NAMESPACES")))
    if args.namespace:
        all_namespaces = False
    handlers = tuple(args.handlers or _split(env("PYNCETTE_HANDLERS")))
    excluded = tuple(
        ns for raw in (args.exclude_namespace or [env("PYNCETTE_EXCLUDE_NAMESPACES")]) for ns in _split(raw)
    )
    for ns in excluded:
        if not _DNS_LABEL.fullmatch(ns):
            raise UsageError(f"--exclude-namespace: {ns!r} is not a namespace name")
    accounts_raw = args.allowed_service_accounts
    accounts: frozenset[str] | None = None
    if accounts_raw:
        accounts = frozenset(a for raw in accounts_raw for a in _split(raw))
    elif env("PYNCETTE_ALLOWED_SERVICE_ACCOUNTS") is not None:
        accounts = frozenset(_split(env("PYNCETTE_ALLOWED_SERVICE_ACCOUNTS")))
    for entry in accounts or ():
        namespace, colon, name = entry.rpartition(":")
        if not _DNS_NAME.fullmatch(name) or (colon and not _DNS_LABEL.fullmatch(namespace)):
            raise UsageError(f"--allowed-service-accounts: {entry!r} is not a ServiceAccount NAME or NAMESPACE:NAME")
    own = None
    if args.operator_service_account:
        namespace, colon, name = args.operator_service_account.partition(":")
        if not colon or not _DNS_LABEL.fullmatch(namespace) or not _DNS_NAME.fullmatch(name):
            raise UsageError(
                f"--operator-service-account: expected NAMESPACE:NAME, got {args.operator_service_account!r}"
            )
        own = (namespace, name)
    min_interval = 1.0
    if args.min_interval:
        try:
            min_interval = parse_duration(args.min_interval).total_seconds()
        except ValueError:
            try:
                min_interval = float(args.min_interval)
            except ValueError:
                raise UsageError(
                    f"--min-interval: expected a duration such as 1s, 30s or 5m, got {args.min_interval!r}"
                ) from None
        if min_interval <= 0:
            raise UsageError(f"--min-interval: must be positive, got {args.min_interval!r}")
    metrics_port = (
        args.metrics_port
        if args.metrics_port is not None
        else int(_number(env("PYNCETTE_METRICS_PORT"), "PYNCETTE_METRICS_PORT", default=0, minimum=0))
    )
    if not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port: must be 0..65535, got {metrics_port}")
    interval = args.status_interval
    if interval is None:
        interval = _number(env("PYNCETTE_STATUS_INTERVAL"), "PYNCETTE_STATUS_INTERVAL", default=10.0, minimum=0.1)
    elif interval < 0.1:
        raise UsageError(f"--status-interval: must be >= 0.1 seconds, got {interval}")
    if args.liveness and not args.liveness.startswith("http://"):
        raise UsageError(f"--liveness: expected http://HOST:PORT/PATH, got {args.liveness!r}")
    for flag, address in (
        ("--health-bind-address", args.health_bind_address),
        ("--metrics-bind-address", args.metrics_bind_address),
    ):
        if address is not None and not _bind_address_ok(address):
            raise UsageError(f"{flag}: expected an IP address or a host name, got {address!r}")
    level = str(args.log_level).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise UsageError(f"--log-level: expected DEBUG, INFO, WARNING or ERROR, got {args.log_level!r}")
    return Settings(
        backend_url=args.backend,
        namespaces=namespaces,
        all_namespaces=all_namespaces or not namespaces,
        handler_modules=handlers,
        excluded_namespaces=excluded,
        liveness_url=args.liveness,
        health_bind_address=args.health_bind_address or None,
        metrics_port=metrics_port,
        metrics_bind_address=args.metrics_bind_address or "0.0.0.0",
        allowed_service_accounts=accounts,
        operator_service_account=own,
        min_interval=min_interval,
        backfill_max_slots=int(_number(args.backfill_max_slots, "--backfill-max-slots", default=1000, minimum=1)),
        pod_creates_per_second=_number(args.pod_create_qps, "--pod-create-qps", default=10.0, minimum=0.01),
        pod_create_burst=int(_number(args.pod_create_burst, "--pod-create-burst", default=20, minimum=1)),
        status_interval=interval,
        status_writes_per_second=_number(env("PYNCETTE_STATUS_QPS"), "PYNCETTE_STATUS_QPS", default=20.0, minimum=0.1),
        status_burst=int(_number(env("PYNCETTE_STATUS_BURST"), "PYNCETTE_STATUS_BURST", default=50, minimum=1)),
        events_per_second=_number(env("PYNCETTE_EVENTS_QPS"), "PYNCETTE_EVENTS_QPS", default=5.0, minimum=0.1),
        sweep_interval=_number(env("PYNCETTE_SWEEP_INTERVAL"), "PYNCETTE_SWEEP_INTERVAL", default=60.0, minimum=1),
        poll_interval=_number(env("PYNCETTE_POLL_INTERVAL"), "PYNCETTE_POLL_INTERVAL", default=1.0, minimum=0.05),
        backend_timeout=_number(env("PYNCETTE_BACKEND_TIMEOUT"), "PYNCETTE_BACKEND_TIMEOUT", default=10.0, minimum=0.1),
        concurrency_limit=int(
            _number(env("PYNCETTE_CONCURRENCY_LIMIT"), "PYNCETTE_CONCURRENCY_LIMIT", default=1000, minimum=1)
        ),
        data_dir=default_data_dir(),
        log_level=level,
    )


def configure_logging(level: str) -> None:
    """Log lines to stderr, every one passed through ``redact_text`` (no password reaches a log)."""
    logging.basicConfig(level=level, stream=sys.stderr)
    for log_handler in logging.getLogger().handlers:
        log_handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.getLogger("kopf.objects").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def _install_memory_report() -> None:
    """Debugging aid (``PYNCETTE_TRACEMALLOC=1``): SIGUSR1 logs where the memory is, by file."""
    import signal
    import tracemalloc

    tracemalloc.start(1)

    def report(signum: int, frame: object) -> None:
        by_file = tracemalloc.take_snapshot().statistics("filename")
        log = logging.getLogger("pyncette_operator.memory")
        log.warning("traced memory: %.1f MiB", sum(stat.size for stat in by_file) / 2**20)
        for stat in by_file[:25]:
            log.warning("%8.1f MiB %s", stat.size / 2**20, stat.traceback[0].filename)

    signal.signal(signal.SIGUSR1, report)


OPERATOR_MODULES = ("kopf", "kubernetes_asyncio", "prometheus_client")
"""What the ``operator`` extra installs: ``pip install pyncette`` alone has the scheduler only."""


def missing_operator_modules() -> list[str]:
    return [name for name in OPERATOR_MODULES if importlib.util.find_spec(name) is None]


def _stop_quietly(signum: int, frame: object) -> None:
    """SIGTERM before the operator's loop handles signals (start-up): nothing runs yet, exit 0."""
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop_quietly)
    parser = build_parser()
    args = parser.parse_args(argv)
    missing = missing_operator_modules()
    if missing:
        print(
            f"pyncette-operator: error: the operator's dependencies are not installed ({', '.join(missing)}):"
            " pip install 'pyncette[operator]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        settings = settings_from_args(args)
        backend = parse_backend_url(settings.backend_url, data_dir=settings.data_dir)
        backend.load_factory()
        import_handler_modules(settings.handler_modules)
    except (UsageError, BackendUrlError, HandlerImportError) as e:
        print(f"pyncette-operator: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(settings.log_level)
    if not backend.shared:
        logging.getLogger(__name__).info("Backend %s serves one replica only", backend.description)

    if os.environ.get("PYNCETTE_TRACEMALLOC"):
        _install_memory_report()
    from pyncette_operator.app import FatalError
    from pyncette_operator.app import Operator
    from pyncette_operator.app import StartupError

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(Operator(settings, backend, handlers=default_registry).run())
    except StartupError as e:
        print(f"pyncette-operator: error: {e}", file=sys.stderr)
        return 1
    except FatalError as e:
        print(f"pyncette-operator: fatal: {e} (the traceback is in the log above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
