"""Shared fixtures: async tests run on asyncio and on trio (anyio's pytest plugin)."""

from __future__ import annotations

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
