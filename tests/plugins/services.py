"""Pytest plugin: the real database servers of hack/services, as session fixtures.

Loaded from tests/conftest.py with ``pytest_plugins = ["plugins.services", ...]``.

Fixtures (session scope):

* ``redis_url``          -> ``"redis://127.0.0.1:16379/0"``
* ``postgres_url``       -> ``"postgresql://postgres:postgres@127.0.0.1:15432/pyncette"``
* ``mysql_params``       -> ``{"host", "port", "user", "password", "database"}`` (aiomysql calls
  the last one ``db``)
* ``mysql_url``          -> ``"mysql://pyncette:pyncette@127.0.0.1:13306/pyncette"``
* ``dynamodb_endpoint``  -> ``"http://127.0.0.1:18000"`` (moto's server; sets dummy AWS credentials)
* ``toxiproxy_api``      -> ``"http://127.0.0.1:18474"`` (Toxiproxy's HTTP API; see tests/faultkit.py)
* ``restart_service``    -> the :func:`restart_service` function (function scope)

Each fixture checks that its server answers; if it does not, ``hack/services/up.sh`` runs (once
per session) to start the servers. Environment overrides, which also skip up.sh:
``PYNCETTE_TEST_REDIS_URL``, ``PYNCETTE_TEST_POSTGRES_URL``, ``PYNCETTE_TEST_MYSQL_URL``
(``mysql://user:pass@host:port/db``) and ``PYNCETTE_TEST_DYNAMODB_ENDPOINT``. The ports of the
servers up.sh starts follow ``PYNCETTE_{REDIS,POSTGRES,MYSQL,DYNAMODB}_PORT`` like the scripts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "hack" / "services"
UP_SCRIPT = SCRIPTS_DIR / "up.sh"
RESTART_SCRIPT = SCRIPTS_DIR / "restart.sh"

#: How long one up.sh / restart.sh run may take (a cold machine installs Debian packages first).
SCRIPT_TIMEOUT = float(os.environ.get("PYNCETTE_SERVICES_SCRIPT_TIMEOUT", "900"))
#: Socket timeout of one "does it answer" probe.
PROBE_TIMEOUT = 3.0

DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _port(name: str, default: int) -> int:
    return int(os.environ.get(f"PYNCETTE_{name}_PORT", default))


@dataclass(frozen=True)
class Service:
    """One server: its default address, the variable that overrides it, and a liveness probe."""

    name: str  # as hack/services/restart.sh knows it
    override_var: str
    default_url: str
    probe: Callable[[str], bool]

    @property
    def overridden(self) -> bool:
        return bool(os.environ.get(self.override_var))

    @property
    def url(self) -> str:
        return os.environ.get(self.override_var) or self.default_url


# --- probes: protocol-level "does it answer", no client libraries, no event loop --------------


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _probe_redis(url: str) -> bool:
    host, port = _host_port(url, 6379)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # +PONG, or -NOAUTH from a password-protected server: either way a Redis server answers.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def _probe_postgres(url: str) -> bool:
    host, port = _host_port(url, 5432)
    ssl_request = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            sock.sendall(ssl_request)
            reply = sock.recv(1)
    except OSError:
        return False
    return reply in (b"S", b"N")


def _probe_mysql(url: str) -> bool:
    host, port = _host_port(url, 3306)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as sock:
            header = sock.recv(5)
    except OSError:
        return False
    # Initial handshake packet: 3-byte length, sequence 0, protocol version 10.
    return len(header) == 5 and header[3] == 0 and header[4] == 10


def _probe_toxiproxy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/version", timeout=PROBE_TIMEOUT) as response:  # noqa: S310
            return b"version" in response.read()
    except (OSError, urllib.error.URLError):
        return False


def _probe_dynamodb(url: str) -> bool:
    if not url.startswith(("http://", "https://")):
        return False
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + "/",
        data=b"{}",
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.0",
            "X-Amz-Target": "DynamoDB_20120810.ListTables",
            "Authorization": (
                "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/dynamodb/aws4_request, "
                "SignedHeaders=host, Signature=0"
            ),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT) as response:  # noqa: S310
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return "TableNames" in body


REDIS = Service(
    "redis",
    "PYNCETTE_TEST_REDIS_URL",
    f"redis://127.0.0.1:{_port('REDIS', 16379)}/0",
    _probe_redis,
)
POSTGRES = Service(
    "postgres",
    "PYNCETTE_TEST_POSTGRES_URL",
    f"postgresql://postgres:postgres@127.0.0.1:{_port('POSTGRES', 15432)}/pyncette",
    _probe_postgres,
)
MYSQL = Service(
    "mariadb",
    "PYNCETTE_TEST_MYSQL_URL",
    f"mysql://pyncette:pyncette@127.0.0.1:{_port('MYSQL', 13306)}/pyncette",
    _probe_mysql,
)
DYNAMODB = Service(
    "dynamodb",
    "PYNCETTE_TEST_DYNAMODB_ENDPOINT",
    f"http://127.0.0.1:{_port('DYNAMODB', 18000)}",
    _probe_dynamodb,
)
TOXIPROXY = Service(
    "toxiproxy",
    "PYNCETTE_TEST_TOXIPROXY_API",
    f"http://127.0.0.1:{_port('TOXIPROXY', 18474)}",
    _probe_toxiproxy,
)
SERVICES = {s.name: s for s in (REDIS, POSTGRES, MYSQL, DYNAMODB, TOXIPROXY)}
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "mysql": "mariadb", "moto": "dynamodb"}


# --- running the scripts ----------------------------------------------------------------------

_up_lock = threading.Lock()
_up_ran = False


def _run_script(args: list[str], what: str) -> None:
    try:
        result = subprocess.run(
            ["bash", *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{what} did not finish within {SCRIPT_TIMEOUT:.0f}s: {exc}", pytrace=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"{what} failed (exit {result.returncode}):\n{output}", pytrace=False)


def _start_services() -> None:
    """Run hack/services/up.sh, at most once per test session (it starts every server)."""
    global _up_ran
    with _up_lock:
        if not _up_ran:
            _up_ran = True
            _run_script([str(UP_SCRIPT)], "hack/services/up.sh")


def ensure_service(service: Service) -> str:
    """Return the service's URL once it answers, starting the local servers if needed."""
    url = service.url
    if service.probe(url):
        return url
    if service.overridden:
        pytest.fail(
            f"{service.name} at {url} (from {service.override_var}) does not answer",
            pytrace=False,
        )
    _start_services()
    if not service.probe(url):
        pytest.fail(f"{service.name} at {url} does not answer after hack/services/up.sh", pytrace=False)
    return url


def restart_service(name: str) -> None:
    """Stop and start one local server on the same port and data dir (its data survives).

    ``name`` is one of ``redis``, ``postgres``, ``mariadb`` (or ``mysql``), ``dynamodb``. moto keeps
    DynamoDB tables in memory only, so they do not survive its restart. Returns once the server
    answers again. Skips the test when the server comes from an override variable (not ours).
    """
    key = _ALIASES.get(name, name)
    if key not in SERVICES:
        raise ValueError(f"unknown service {name!r}; expected one of {sorted(SERVICES)}")
    service = SERVICES[key]
    if service.overridden:
        pytest.skip(f"{service.name} comes from {service.override_var}; it cannot be restarted from here")
    _run_script([str(RESTART_SCRIPT), key], f"hack/services/restart.sh {key}")
    if not service.probe(service.url):
        pytest.fail(f"{service.name} does not answer after restart", pytrace=False)


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    return ensure_service(REDIS)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    return ensure_service(POSTGRES)


@pytest.fixture(scope="session")
def mysql_url() -> str:
    return ensure_service(MYSQL)


@pytest.fixture(scope="session")
def mysql_params(mysql_url: str) -> dict[str, Any]:
    parts = urlsplit(mysql_url)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/") or "pyncette",
    }


@pytest.fixture(scope="session")
def dynamodb_endpoint() -> str:
    for key, value in DUMMY_AWS_ENV.items():
        os.environ.setdefault(key, value)
    return ensure_service(DYNAMODB)


@pytest.fixture(scope="session")
def toxiproxy_api() -> str:
    return ensure_service(TOXIPROXY)


@pytest.fixture(name="restart_service")
def restart_service_fixture() -> Callable[[str], None]:
    return restart_service
