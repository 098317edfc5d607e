"""The handler registry: every handler declares the namespaces whose tasks may call it."""

from __future__ import annotations

from typing import Any

import pytest

import pyncette_operator
from pyncette_operator import HandlerRegistry


async def noop(context: Any) -> None: ...


def test_a_handler_must_declare_its_namespaces() -> None:
    registry = HandlerRegistry()
    with pytest.raises(ValueError, match=r"handler 'report': declare which namespaces may call it"):
        pyncette_operator.handler("report", registry=registry)(noop)
    with pytest.raises(ValueError, match="declare which namespaces"):
        pyncette_operator.handler("report", namespaces="team-a", registry=registry)(noop)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"namespaces: not namespace names: 'Team_A'"):
        pyncette_operator.handler("report", namespaces=["Team_A"], registry=registry)(noop)


def test_handlers_serve_only_their_namespaces() -> None:
    registry = HandlerRegistry()
    pyncette_operator.handler("report", namespaces=["team-a", "team-b"], registry=registry)(noop)
    pyncette_operator.handler("ping", namespaces="*", registry=registry)(noop)
    assert registry.names("team-a") == {"report", "ping"}
    assert registry.names("team-c") == {"ping"}
    assert registry.names() == {"report", "ping"}
    assert registry.get("report", namespace="team-b") is noop
    assert registry.get("report", namespace="team-c") is None
    assert registry.get("ping", namespace="anything") is noop
