"""The in-memory backend under the conformance suite: every repository is fresh, nothing to clean."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pyncette.memory import memory_repository

MARKS: list[pytest.MarkDecorator] = []


@contextlib.asynccontextmanager
async def backend_kwargs(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    yield {"repository_factory": memory_repository}


async def store_raw_spec(kwargs: dict[str, Any], repository: Any, name: str, spec: str) -> None:
    """Overwrites the stored spec of entry ``name`` as a hand edit (or another version) would."""
    entry = repository._entries[name]
    entry.spec, entry.instance, entry.template = spec, None, None
