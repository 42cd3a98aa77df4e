"""Type tests of the adaptive limiter: checked by mypy and pyright, never run."""

from __future__ import annotations

from typing_extensions import assert_type

from resilient import (
    AIMD,
    AdaptiveLimiter,
    AdaptiveLimiterMetrics,
    AdaptivePartition,
    Gradient2,
    Vegas,
    compose,
)

limiter = AdaptiveLimiter(Vegas(max_limit=300), max_wait=0.05, name="typed")
AdaptiveLimiter(Gradient2(), drop_on=(TimeoutError, ConnectionError))
AdaptiveLimiter(AIMD(timeout=0.2), drop_on=lambda exc: isinstance(exc, OSError))
shared = AdaptiveLimiter(partitions={"live": 0.8, "batch": 0.2})


@limiter
def sync_fn(a: int, *, b: str = "x") -> list[str]:
    return [b] * a


@shared.partition("live")
async def async_fn(a: int) -> float:
    return a * 1.5


assert_type(sync_fn(1, b="y"), list[str])
assert_type(limiter.call(sync_fn, 3, b="z"), list[str])
assert_type(limiter.limit, int)
assert_type(limiter.metrics(), AdaptiveLimiterMetrics)
assert_type(shared.partition("batch"), AdaptivePartition)
assert_type(compose(limiter)(sync_fn)(2), list[str])


async def use_async() -> None:
    assert_type(await async_fn(2), float)
    assert_type(await limiter.call_async(async_fn, 1), float)
    async with limiter:
        pass
    with shared.partition("batch"):
        pass
