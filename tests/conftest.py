"""Shared fixtures: async tests on asyncio and trio (anyio's plugin); fast thread switching."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from hypothesis import settings

# The same examples on every run, and no example database: CI must not be flaky, and a
# failure found once must be found again. (Individual tests may still set their own.)
settings.register_profile("resilient", derandomize=True, database=None)
settings.load_profile("resilient")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test once per backend."""
    return str(request.param)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads far more often, to shake out races."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)
