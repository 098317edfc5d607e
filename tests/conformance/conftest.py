"""Parametrizes the conformance suite over every backend.

A backend takes part once ``tests/conformance_backends/<name>.py`` exists (see that package's
docstring for the interface); until then its tests are skipped with "backend <name> not
implemented". A module that exists but fails to import makes that backend's tests error rather
than silently disappear.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from collections.abc import Awaitable
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from pyncette.repository import Repository

BACKENDS = ["memory", "sqlite", "redis", "postgres", "mysql", "dynamodb"]


def _load(name: str) -> ModuleType | BaseException | None:
    module_name = f"conformance_backends.{name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        return e
    except Exception as e:
        return e


def _backend_params() -> list[Any]:
    params = []
    for name in BACKENDS:
        loaded = _load(name)
        if loaded is None:
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=f"backend {name} not implemented")))
        elif isinstance(loaded, BaseException):
            params.append(pytest.param(name, id=name))
        else:
            params.append(pytest.param(name, id=name, marks=list(getattr(loaded, "MARKS", []))))
    return params


@pytest.fixture(params=_backend_params())
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def backend_kwargs(backend_name: str, request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """``Pyncette(**backend_kwargs)`` uses this backend with storage private to the test."""
    loaded = _load(backend_name)
    if isinstance(loaded, BaseException):
        raise RuntimeError(f"conformance_backends.{backend_name} failed to import: {loaded!r}") from loaded
    assert loaded is not None
    async with loaded.backend_kwargs(request) as kwargs:
        yield kwargs


@pytest.fixture
async def repository(backend_kwargs: dict[str, Any]) -> AsyncIterator[Repository]:
    """An open repository of the backend, as ``Pyncette`` would open it."""
    settings = {key: value for key, value in backend_kwargs.items() if key != "repository_factory"}
    async with backend_kwargs["repository_factory"](**settings) as repo:
        yield repo


@pytest.fixture
def store_raw_spec(
    backend_name: str, backend_kwargs: dict[str, Any], repository: Repository
) -> Callable[[str, str], Awaitable[None]]:
    """``await store_raw_spec(entry_name, text)`` overwrites a stored spec behind the repository's back
    (a hand edit, a row written by another version), through the backend's own storage."""
    loaded = _load(backend_name)
    assert isinstance(loaded, ModuleType)

    async def store(name: str, spec: str) -> None:
        await loaded.store_raw_spec(backend_kwargs, repository, name, spec)

    return store


@pytest.fixture
def store_raw_spec_in(
    backend_name: str, backend_kwargs: dict[str, Any]
) -> Callable[[Repository, str, str], Awaitable[None]]:
    """Like ``store_raw_spec``, for the storage of a given open repository (e.g. a running app's)."""
    loaded = _load(backend_name)
    assert isinstance(loaded, ModuleType)

    async def store(repository: Repository, name: str, spec: str) -> None:
        await loaded.store_raw_spec(backend_kwargs, repository, name, spec)

    return store


@pytest.fixture
def store_raw_time(
    backend_name: str, backend_kwargs: dict[str, Any], repository: Repository
) -> Callable[[str, str], Awaitable[None]]:
    """``await store_raw_time(entry_name, text)`` overwrites a stored next time with any text, on the
    backends that store times as text; the others (typed columns) cannot hold such a row: skipped."""
    loaded = _load(backend_name)
    assert isinstance(loaded, ModuleType)
    if not hasattr(loaded, "store_raw_time"):
        pytest.skip(f"{backend_name} stores times in typed columns: a row cannot hold a time that is not one")

    async def store(name: str, text: str) -> None:
        await loaded.store_raw_time(backend_kwargs, repository, name, text)

    return store
