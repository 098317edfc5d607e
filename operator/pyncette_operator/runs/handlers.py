"""In-process handler runs: ``@pyncette_operator.handler("name", namespaces=[...])`` and its registry.

A handler is an ``async def f(context)`` coroutine in a module the operator imports at start-up
(``--handlers my.module``). It runs inside the operator replica that leased the run, with the
PyncetteTask's ``spec.handler.args`` in ``context.args`` and the usual pyncette context
(``context.scheduled_at``, ``context.heartbeat()`` for long runs). Raising an exception fails the
run (failureMode decides what happens next).

A handler runs with the operator's privileges, but whoever may create a PyncetteTask in a
namespace chooses its args. So every handler declares the namespaces whose tasks may call it
(``namespaces=["team-a"]``, or ``namespaces="*"`` for every watched namespace), and treats
``context.args`` as untrusted input: validate it, never pass it to a shell, ``eval``, a file path
or a URL without checking. A task in any other namespace sees the handler as unknown. An exception
is reported to the tenant as its type only; raise ``HandlerError("...")`` for a message meant for
the task's owner.

The registry is process-wide on purpose: decorators run at import time, before any operator object
exists, exactly like kopf's default registry.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Collection
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from typing import Literal
from typing import TypeVar

from pyncette.model import Context

HandlerFunc = Callable[[Context], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
ALL_NAMESPACES = "*"


class HandlerError(Exception):
    """Raised by a handler to fail its run with a message shown to the task's owner (status, Events).

    Any other exception fails the run too, but only its type is shown there (the message and the
    traceback go to the operator's log): it may carry the operator's internals.
    """


@dataclass(frozen=True)
class RegisteredHandler:
    func: HandlerFunc
    namespaces: frozenset[str] | None
    """The namespaces whose PyncetteTasks may call it; None: every namespace the operator watches."""

    def serves(self, namespace: str) -> bool:
        return self.namespaces is None or namespace in self.namespaces


def _namespaces(name: str, namespaces: Collection[str] | str | None) -> frozenset[str] | None:
    if namespaces == ALL_NAMESPACES:
        return None
    if namespaces is None or isinstance(namespaces, str):
        raise ValueError(
            f"handler {name!r}: declare which namespaces may call it, e.g. namespaces=['team-a'],"
            " or namespaces='*' for every namespace the operator watches (its args are untrusted input"
            " from those namespaces)"
        )
    declared = frozenset(namespaces)
    bad = sorted(n for n in declared if not isinstance(n, str) or not _NAMESPACE.fullmatch(n))
    if bad:
        raise ValueError(f"handler {name!r}: namespaces: not namespace names: {', '.join(map(repr, bad))}")
    return declared


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, RegisteredHandler] = {}

    def register(self, name: str, func: HandlerFunc, *, namespaces: Collection[str] | str | None) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"handler name must be a non-empty string, got {name!r}")
        entry = RegisteredHandler(func, _namespaces(name, namespaces))
        existing = self._handlers.get(name)
        if existing is not None and existing.func is not func:
            raise ValueError(f"handler {name!r}: already registered by {getattr(existing.func, '__module__', '?')}")
        self._handlers[name] = entry

    def get(self, name: str, *, namespace: str) -> HandlerFunc | None:
        """The handler ``name`` if it serves ``namespace``, else None."""
        entry = self._handlers.get(name)
        return entry.func if entry is not None and entry.serves(namespace) else None

    def names(self, namespace: str | None = None) -> frozenset[str]:
        """The handler names that serve ``namespace`` (all names when None)."""
        return frozenset(n for n, e in self._handlers.items() if namespace is None or e.serves(namespace))


default_registry = HandlerRegistry()


def handler(
    name: str, *, namespaces: Collection[str] | Literal["*"] | None = None, registry: HandlerRegistry | None = None
) -> Callable[[F], F]:
    """Registers an ``async def f(context)`` as the handler that PyncetteTasks name in ``spec.handler.name``.

    :param namespaces: the namespaces whose PyncetteTasks may call it, or ``"*"`` for every
        namespace the operator watches. Required (leaving it out raises ``ValueError`` saying so):
        ``context.args`` comes from those tasks and is untrusted input.
    """

    def decorate(func: F) -> F:
        (registry or default_registry).register(name, func, namespaces=namespaces)
        return func

    return decorate


class HandlerImportError(Exception):
    """A ``--handlers`` module could not be imported (one line, for the CLI)."""


def import_handler_modules(modules: Iterable[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:
            raise HandlerImportError(f"--handlers {module}: cannot import it ({type(e).__name__}: {e})") from None
