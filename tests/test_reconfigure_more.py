"""reconfigure() of the hedge, the adaptive throttle and limiter, and the chaos policies.

As in ``test_reconfigure``: every change is seen through a function decorated before it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from hedge_helpers import Attempts, virtual_backend
from resilient import (
    AIMD,
    AdaptiveLimiter,
    AdaptiveThrottle,
    BulkheadFullError,
    Hedge,
    Reconfigured,
    Registry,
    RetryBudget,
    ThrottledError,
    Vegas,
)
from resilient.chaos import InjectFault, InjectLatency, InjectResult
from resilient.testing import ManualClock, capture_events


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return virtual_backend(str(request.param))


async def test_a_decorated_hedge_sees_a_new_delay_and_keeps_its_default_budget() -> None:
    hedge = Hedge(delay=5.0, budget=RetryBudget(min_retries_per_second=1000))
    script: list[Attempts] = []

    @hedge
    async def call() -> object:
        return await script[-1]()

    script.append(Attempts((1.0, "first"), (0.05, "hedge")))
    assert await call() == "first"  # answered before the 5 s delay
    hedge.reconfigure(delay=0.1, window=10)
    script.append(Attempts((1.0, "first"), (0.05, "hedge")))
    assert await call() == "hedge"
    assert hedge.metrics().hedges == 1
    with pytest.raises(TypeError, match="'max_workers' cannot be changed"):
        hedge.reconfigure(max_workers=3)


def test_a_hedge_window_keeps_its_latest_latencies() -> None:
    hedge = Hedge(delay="p50", window=4)
    core = hedge._core
    for seconds in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0):  # a full ring, wrapped
        core.record_latency(seconds)
    hedge.reconfigure(window=3)
    assert core._latencies == [4.0, 5.0, 6.0]
    default = core.budget
    hedge.reconfigure(max_hedged=2)
    assert core.budget is default  # the default budget and its counts are kept


def test_a_decorated_throttle_sees_a_new_k_and_keeps_its_window() -> None:
    clock = ManualClock()
    throttle = AdaptiveThrottle("t", k=2.0, random=random.Random(1), clock=clock)

    @throttle
    def backend(ok: bool) -> None:
        if not ok:
            raise ConnectionError

    for _ in range(10):
        with pytest.raises((ConnectionError, ThrottledError)):
            backend(False)
    before = throttle.metrics()
    throttle.reconfigure(k=1.5, record=KeyError)  # the window's counts are kept
    after = throttle.metrics()
    assert (after.requests, after.accepts) == (before.requests, before.accepts)
    assert throttle.k == 1.5
    throttle.reconfigure(window=60.0)  # a new span starts empty
    assert throttle.metrics().requests == 0
    assert throttle.rejection_probability == 0.0
    backend(True)
    with pytest.raises(ValueError, match="k"):
        throttle.reconfigure(k=0.5)
    assert throttle.k == 1.5
    shed = 0
    throttle.reconfigure(record=Exception)
    for _ in range(50):
        try:
            backend(False)
        except ThrottledError:
            shed += 1
        except ConnectionError:
            pass
    assert shed > 0


def test_a_decorated_adaptive_limiter_takes_a_new_algorithm_and_max_wait() -> None:
    limiter = AdaptiveLimiter(AIMD(initial_limit=1), name="dep")
    guarded = limiter(lambda: limiter.metrics().in_flight)
    with limiter, pytest.raises(BulkheadFullError):
        guarded()
    with capture_events() as events:
        limiter.reconfigure(algorithm=AIMD(initial_limit=3), window_samples=5)
    assert limiter.limit == 3
    assert [type(e) for e in events] == [Reconfigured]
    with limiter, limiter:
        assert guarded() == 3
    with pytest.raises(TypeError, match="'partitions' cannot be changed"):
        limiter.reconfigure(partitions={"a": 1.0})
    with pytest.raises(ValueError, match="window_samples"):
        limiter.reconfigure(window_samples=0)


def test_a_registry_updates_an_adaptive_limiter_from_plain_data() -> None:
    registry = Registry()
    registry.configure({"db": {"kind": "adaptive_limiter", "algorithm": "aimd"}})
    limiter = registry.adaptive_limiter("db")
    registry.configure({"db": {"kind": "adaptive_limiter", "algorithm": "aimd"}})  # no change
    registry.configure(
        {"db": {"kind": "adaptive_limiter", "algorithm": {"name": "vegas", "max_limit": 50}}}
    )
    assert registry.get("db") is limiter
    assert limiter.algorithm == Vegas(max_limit=50)


def test_decorated_chaos_policies_follow_rate_payload_and_keep_their_draws() -> None:
    fault = InjectFault(ConnectionError, rate=0.0, seed=3)
    broken = fault(lambda: "ok")
    assert broken() == "ok"
    fault.reconfigure(rate=1.0)
    with pytest.raises(ConnectionError):
        broken()
    fault.reconfigure(exception=TimeoutError)
    with pytest.raises(TimeoutError):
        broken()

    result = InjectResult("stale", rate=0.0)
    answered = result(lambda: "fresh")
    assert answered() == "fresh"
    result.reconfigure(rate=1.0, value="older")
    assert answered() == "older"

    clock = ManualClock()
    latency = InjectLatency(1.0, rate=1.0, clock=clock)
    delayed = latency(clock.monotonic)
    assert delayed() == 1.0
    latency.reconfigure(seconds=2.5)
    assert delayed() == 3.5
    with pytest.raises(ValueError, match="rate"):
        latency.reconfigure(rate=2)

    # A seeded sequence goes on where it was when only the rate changes.
    twins = [InjectFault(KeyError, rate=0.5, seed=9), InjectFault(KeyError, rate=0.5, seed=9)]
    draws: list[list[bool]] = [[], []]
    for step in range(20):
        if step == 10:
            twins[1].reconfigure(rate=0.5, enabled=True)  # the same values: nothing
        for twin, seen in zip(twins, draws, strict=True):
            try:
                twin.call(lambda: None)
                seen.append(False)
            except KeyError:
                seen.append(True)
    assert draws[0] == draws[1]


async def test_an_async_factory_is_read_at_each_call_and_stays_async() -> None:
    async def first() -> str:
        return "first"

    async def second() -> str:
        return "second"

    result = InjectResult(factory=first, rate=1.0)

    @result
    async def real() -> str:
        return "real"  # pragma: no cover - every call is answered

    assert await real() == "first"
    result.reconfigure(factory=second)
    assert await real() == "second"
    with pytest.raises(TypeError, match="factory must stay an async callable"):
        result.reconfigure(factory=lambda: "sync")
