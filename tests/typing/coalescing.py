"""Type tests of Coalesce and Cache: checked by mypy and pyright, never run."""

from __future__ import annotations

import datetime
from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from resilient import (
    Cache,
    CacheMetrics,
    CacheStatus,
    Coalesce,
    CoalesceMetrics,
    cache_status,
    compose,
)

coalesce = Coalesce(key=lambda user_id, **_: user_id, name="users")
cache = Cache(ttl=datetime.timedelta(seconds=30), stale_if_error=600.0, max_entries=100)


@coalesce
def load(user_id: int, *, verbose: bool = False) -> dict[str, int]:
    return {"id": user_id}


@cache
async def price(symbol: str) -> float:
    return 42.0


assert_type(load(1, verbose=True), dict[str, int])
_coro = price("ACME")
# mypy sees Coroutine, pyright the CoroutineType an `async def` returns: both assign.
_checked: Coroutine[Any, Any, float] = _coro
_checked.close()
assert_type(coalesce.call(load, 1), dict[str, int])
assert_type(coalesce.metrics(), CoalesceMetrics)
assert_type(cache.metrics(), CacheMetrics)
assert_type(cache_status(), CacheStatus | None)
assert_type(cache.invalidate("ACME"), bool)

both = compose(Cache(ttl=1.0), Coalesce())


@both
def fetch(key: str) -> bytes:
    return b""


assert_type(fetch("k"), bytes)
status = cache_status()
if status is not None:
    assert_type(status.stale, bool)
    assert_type(status.age, float)
