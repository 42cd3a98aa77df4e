"""A refused caller who waits exactly ``retry_after`` is admitted, whatever the clock reads.

The limiters count integer nanoseconds, but a caller waits float seconds on a clock
whose readings are floats: at 1e9 s two readings are 119 ns apart, at 1e12 s 122 µs.
Review found ``RateLimiter(3, burst=1, clock=ManualClock(1e9))`` refusing 207 of 1,000
calls made exactly ``retry_after`` later; ``retry_after`` is now rounded in the caller's
favour, by no more than the clock's own resolution at that reading.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import KeyedRateLimiter, RateLimitedError, RateLimiter
from resilient.testing import ManualClock

STARTS = [0.0, 1e6, 1e9, 1e12]
NS = 1_000_000_000


def _one_key(*_args: object) -> Hashable:
    return "k"


def make(kind: str, clock: ManualClock, rate: float, per: float, burst: int) -> object:
    if kind == "plain":
        return RateLimiter(rate, per, burst=burst, clock=clock)
    return KeyedRateLimiter(rate, per, burst=burst, key=_one_key, clock=clock)


def attempt(limiter: RateLimiter | KeyedRateLimiter) -> float | None:
    """One call: ``None`` if admitted, else the refusal's ``retry_after``."""
    try:
        limiter.call(lambda: None)
    except RateLimitedError as error:
        retry_after = error.retry_after
    else:
        return None
    assert retry_after is not None
    return retry_after


def slack(clock: ManualClock) -> float:
    """How far rounding to the clock's resolution may move ``retry_after``."""
    return 4 * math.ulp(clock.monotonic()) + 2e-9


@pytest.mark.parametrize("kind", ["plain", "keyed"])
@pytest.mark.parametrize("start", STARTS)
def test_waiting_exactly_retry_after_is_admitted(kind: str, start: float) -> None:
    clock = ManualClock(start)
    limiter = make(kind, clock, 3, 1.0, 1)
    assert isinstance(limiter, RateLimiter | KeyedRateLimiter)
    interval = math.ceil(NS / 3) / NS  # one call per 333,333,334 ns
    refused_after_waiting = 0
    waits: list[float] = []
    assert attempt(limiter) is None
    for _ in range(1_000):
        retry_after = attempt(limiter)
        assert retry_after is not None
        waits.append(retry_after)
        clock.advance(retry_after)
        if attempt(limiter) is not None:
            refused_after_waiting += 1
    assert refused_after_waiting == 0  # before the fix: 207 at 1e9
    # In the caller's favour, but only by the clock's resolution: still exact.
    assert all(interval <= wait <= interval + slack(clock) for wait in waits)


def test_retry_after_stays_exact_on_a_clock_at_zero() -> None:
    clock = ManualClock()
    limiter = RateLimiter(5, burst=1, clock=clock)
    assert attempt(limiter) is None
    assert attempt(limiter) == 0.2
    clock.advance(0.2 - 1e-9)
    assert attempt(limiter) == 1e-9


@given(
    kind=st.sampled_from(["plain", "keyed"]),
    start=st.one_of(st.sampled_from(STARTS), st.floats(0.0, 1e13)),
    rate=st.floats(0.01, 1_000.0),
    per=st.floats(0.001, 100.0),
    burst=st.integers(1, 5),
    gaps=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30),
)
def test_waiting_retry_after_always_succeeds(
    kind: str, start: float, rate: float, per: float, burst: int, gaps: list[float]
) -> None:
    clock = ManualClock(start)
    limiter = make(kind, clock, rate, per, burst)
    assert isinstance(limiter, RateLimiter | KeyedRateLimiter)
    interval = math.ceil(per * NS / rate) / NS
    for gap in gaps:
        clock.advance(gap)
        retry_after = attempt(limiter)
        if retry_after is None:
            continue
        assert 0.0 < retry_after <= interval + slack(clock)
        clock.advance(retry_after)
        assert attempt(limiter) is None
