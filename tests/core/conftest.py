"""Fixtures for the app's unit tests: a FakeClock and an app factory bound to it.

Everything runs on the in-memory backend with fake time; nothing sleeps in real time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from core_helpers import START

from pyncette import FakeClock
from pyncette import Pyncette


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def make_app(clock: FakeClock) -> Callable[..., Pyncette]:
    def _make(**kwargs: Any) -> Pyncette:
        return Pyncette(clock=clock, **kwargs)

    return _make
