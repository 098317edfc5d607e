"""In-process handler runs: ``@pyncette_operator.handler("name")`` and the registry behind it.

A handler is an ``async def f(context)`` coroutine in a module the operator imports at start-up
(``--handlers my.module``). It runs inside the operator replica that leased the run, with the
PyncetteTask's ``spec.handler.args`` in ``context.args`` and the usual pyncette context
(``context.scheduled_at``, ``context.heartbeat()`` for long runs). Raising an exception fails the
run (failureMode decides what happens next).

The registry is process-wide on purpose: decorators run at import time, before any operator object
exists, exactly like kopf's default registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any
from typing import TypeVar

from pyncette.model import Context

HandlerFunc = Callable[[Context], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerFunc] = {}

    def register(self, name: str, func: HandlerFunc) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"handler name must be a non-empty string, got {name!r}")
        existing = self._handlers.get(name)
        if existing is not None and existing is not func:
            raise ValueError(f"handler {name!r}: already registered by {getattr(existing, '__module__', '?')}")
        self._handlers[name] = func

    def get(self, name: str) -> HandlerFunc | None:
        return self._handlers.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self._handlers)


default_registry = HandlerRegistry()


def handler(name: str, *, registry: HandlerRegistry | None = None) -> Callable[[F], F]:
    """Registers an ``async def f(context)`` as the handler that PyncetteTasks name in ``spec.handler.name``."""

    def decorate(func: F) -> F:
        (registry or default_registry).register(name, func)
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
