"""One backend URL → the Pyncette repository factory and its keyword arguments.

Operators configure storage with a single string (``--backend`` / ``PYNCETTE_BACKEND_URL``), the way
database URLs are passed everywhere else; the scheduler library takes per-backend keywords. This
module is the translation, and the one place that explains a bad URL in one line.

Forms::

    sqlite:///relative/file.db      sqlite:////absolute/file.db      (none: embedded SQLite file)
    memory://                        (one process, nothing persisted: tests and demos)
    redis://[:password@]host[:port][/db][?namespace=NAME]            rediss:// too
    postgresql://user:password@host[:port]/database[?table=NAME]    postgres:// too
    mysql://user:password@host[:port]/database[?table=NAME]
    dynamodb://region/table[?endpoint=http://host:port]

The factory is named as a dotted path and imported later (``load_factory``), so a missing optional
dependency is also reported as one line instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from pyncette_operator.settings import DEFAULT_SQLITE_FILE

DEFAULT_TABLE = "pyncette_operator"
DEFAULT_REDIS_NAMESPACE = "pyncette-operator"


class BackendUrlError(ValueError):
    """A backend URL that cannot be used; the message is one line and never shows a password."""


@dataclass(frozen=True)
class BackendConfig:
    """What ``Pyncette(repository_factory=..., **kwargs)`` needs, plus a printable description."""

    kind: str
    factory_path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    shared: bool = True
    """Whether several replicas can share it (False for SQLite and memory)."""

    def load_factory(self) -> Any:
        module_name, _, attr = self.factory_path.rpartition(".")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise BackendUrlError(
                f"backend {self.kind}: cannot import {module_name} ({e}); install pyncette[{self.kind}]"
            ) from None
        try:
            return getattr(module, attr)
        except AttributeError:
            raise BackendUrlError(f"backend {self.kind}: {module_name} has no {attr}") from None


_CREDENTIAL_PARAM_NAMES = r"(?:password|passwd|pwd|sslpassword|secret|token|secret_key|access_key)"
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)\S*@")
_SECRET_QUERY = re.compile(rf"(?i)([?&;]{_CREDENTIAL_PARAM_NAMES}=)[^&\s'\"]*")


def redact(url: str) -> str:
    """The URL with its password, and query values such as ``password=``, replaced by ``***``.

    Works on URLs that do not parse, too: a password holding ``/``, ``?`` or ``#`` (not
    percent-encoded) makes ``urlsplit`` cut the authority early, so everything between ``://`` and
    the *last* ``@`` is taken as the user information; after its first ``:`` it is masked.
    """
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        url = f"{scheme}://{user}{':***' if colon else ''}@{after}"
    return _SECRET_QUERY.sub(r"\1***", url)


def redact_text(text: str) -> str:
    """Masks URL passwords and ``password=``-style query values anywhere in a log line or message."""
    return _SECRET_QUERY.sub(r"\1***", _URL_USERINFO.sub(r"\1***@", text))


class RedactingFormatter(logging.Formatter):
    """A log formatter that passes every formatted line (tracebacks included) through ``redact_text``.

    Installed on the operator's log handlers: a driver's exception that quotes its DSN, or a
    ``?password=`` URL in a debug line, never reaches the log with the password in it.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def parse_backend_url(url: str | None, *, data_dir: str = ".") -> BackendConfig:
    """Parses ``url`` (None or empty: the embedded SQLite file in ``data_dir``)."""
    if url is None or not url.strip():
        path = os.path.join(data_dir, DEFAULT_SQLITE_FILE)
        return _sqlite(path)
    url = url.strip()
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a non-numeric port
    except ValueError:
        # urllib's own message quotes the bad part, which may be a piece of the password.
        raise BackendUrlError(
            f"backend URL {shown!r}: cannot parse the host and port; percent-encode / ? # @ : in a"
            " user name or password (%2F %3F %23 %40 %3A)"
        ) from None
    if "@" in parts.path and "@" not in parts.netloc:
        # "user:pa/ss@host": the unencoded "/" ended the authority inside the password.
        raise BackendUrlError(
            f"backend URL {shown!r}: an '@' after the host; percent-encode / ? # @ : in a user name or"
            " password (%2F %3F %23 %40 %3A)"
        )
    scheme = parts.scheme.lower()
    query = _query(parts.query, shown)

    if scheme == "sqlite":
        return _parse_sqlite(url, shown)
    if scheme == "memory":
        return BackendConfig("memory", "pyncette.memory.memory_repository", {}, "memory (not persisted)", shared=False)
    if scheme in ("redis", "rediss"):
        namespace = query.pop("namespace", DEFAULT_REDIS_NAMESPACE)
        _no_more(query, shown, "namespace")
        if not parts.hostname:
            raise BackendUrlError(f"backend URL {shown!r}: a Redis URL needs a host, e.g. redis://localhost:6379/0")
        clean = urllib.parse.urlunsplit(parts._replace(query=""))
        return BackendConfig(
            "redis",
            "pyncette.redis.redis_repository",
            {"redis_url": clean, "redis_namespace": namespace},
            f"redis {redact(clean)} (namespace {namespace})",
        )
    if scheme in ("postgresql", "postgres"):
        table = query.pop("table", DEFAULT_TABLE)
        _check_table(table, shown)
        clean = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
        if not parts.hostname and "host" not in query:
            raise BackendUrlError(
                f"backend URL {shown!r}: a PostgreSQL URL needs a host, e.g. postgresql://user@db/pyncette"
            )
        return BackendConfig(
            "postgres",
            "pyncette.postgres.postgres_repository",
            {"postgres_url": clean, "postgres_table_name": table},
            f"postgresql {redact(clean)} (table {table})",
        )
    if scheme == "mysql":
        return _parse_mysql(parts, query, shown)
    if scheme == "dynamodb":
        return _parse_dynamodb(parts, query, shown)
    known = "sqlite, memory, redis, rediss, postgresql, postgres, mysql, dynamodb"
    raise BackendUrlError(f"backend URL {shown!r}: unknown scheme {scheme or '(none)'!r}; expected one of {known}")


def _sqlite(path: str) -> BackendConfig:
    return BackendConfig(
        "sqlite", "pyncette.sqlite.sqlite_repository", {"sqlite_database": path}, f"sqlite {path}", shared=False
    )


def _parse_sqlite(url: str, shown: str) -> BackendConfig:
    # sqlite:///relative.db → "relative.db"; sqlite:////abs.db → "/abs.db" (SQLAlchemy's convention).
    rest = url[len("sqlite:") :]
    if not rest.startswith("///"):
        raise BackendUrlError(
            f"backend URL {shown!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = rest[3:].split("?", 1)[0]
    if not path:
        raise BackendUrlError(f"backend URL {shown!r}: no database file given")
    return _sqlite(urllib.parse.unquote(path))


def _parse_mysql(parts: urllib.parse.SplitResult, query: dict[str, str], shown: str) -> BackendConfig:
    table = query.pop("table", DEFAULT_TABLE)
    _check_table(table, shown)
    _no_more(query, shown, "table")
    database = parts.path.lstrip("/")
    if not parts.hostname:
        raise BackendUrlError(f"backend URL {shown!r}: a MySQL URL needs a host, e.g. mysql://user:pw@db:3306/pyncette")
    if not database or "/" in database:
        raise BackendUrlError(f"backend URL {shown!r}: a MySQL URL needs one database name as its path")
    kwargs: dict[str, Any] = {
        "mysql_host": parts.hostname,
        "mysql_port": parts.port or 3306,
        "mysql_database": urllib.parse.unquote(database),
        "mysql_table_name": table,
    }
    if parts.username:
        kwargs["mysql_user"] = urllib.parse.unquote(parts.username)
    if parts.password is not None:
        kwargs["mysql_password"] = urllib.parse.unquote(parts.password)
    return BackendConfig(
        "mysql",
        "pyncette.mysql.mysql_repository",
        kwargs,
        f"mysql {parts.hostname}:{kwargs['mysql_port']}/{kwargs['mysql_database']} (table {table})",
    )


def _parse_dynamodb(parts: urllib.parse.SplitResult, query: dict[str, str], shown: str) -> BackendConfig:
    endpoint = query.pop("endpoint", None)
    _no_more(query, shown, "endpoint")
    region = parts.netloc
    table = parts.path.strip("/")
    if not region or not table or "/" in table:
        raise BackendUrlError(f"backend URL {shown!r}: expected dynamodb://REGION/TABLE[?endpoint=URL]")
    kwargs: dict[str, Any] = {"dynamodb_region_name": region, "dynamodb_table_name": table}
    if endpoint:
        if not endpoint.startswith(("http://", "https://")):
            raise BackendUrlError(f"backend URL {shown!r}: endpoint must be an http(s) URL, got {redact(endpoint)!r}")
        kwargs["dynamodb_endpoint"] = endpoint
    where = f" at {endpoint}" if endpoint else ""
    return BackendConfig(
        "dynamodb", "pyncette.dynamodb.dynamodb_repository", kwargs, f"dynamodb {region}/{table}{where}"
    )


def _query(raw: str, shown: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
    except ValueError:
        raise BackendUrlError(f"backend URL {shown!r}: cannot parse the query string") from None
    return dict(pairs)


def _no_more(query: dict[str, str], shown: str, *allowed: str) -> None:
    if query:
        names = ", ".join(sorted(query))
        ok = ", ".join(allowed) or "none"
        raise BackendUrlError(f"backend URL {shown!r}: unknown option(s) {names} (supported: {ok})")


def _check_table(table: str, shown: str) -> None:
    ok = table and len(table) <= 50 and not table[0].isdigit()
    if not ok or any(not (c.islower() or c.isdigit() or c == "_") for c in table):
        raise BackendUrlError(
            f"backend URL {shown!r}: table name {table!r} must be lower-case letters, digits and _ (at most 50)"
        )
