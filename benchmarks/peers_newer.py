"""The two newer resilience toolkits in ``peers.py``'s comparison: interlock-cb and nopanic.

Each is measured in every scenario it has, configured like resilient's row:

* interlock-cb (Python >= 3.11): its ``CircuitBreaker`` (default ``Config``: trips at 50%
  failures over at least 10 calls; a tripped one waits an hour in OPEN), and its Polly-style
  ``Pipeline`` of strategies for the bulkhead (``BulkheadStrategy(10)``, no wait), the
  timeout (``TimeoutStrategy``: a new daemon thread per sync call, ``asyncio.timeout`` for
  an awaited one), the fallback and the compositions (fallback, breaker, [timeout,]
  bulkhead, outermost first, as resilient's ``compose()``);
* nopanic: ``circuit_breaker`` (defaults; a tripped one waits an hour), ``retry(attempts=3)``
  (with ``backoff=0`` for the one-retry rows), ``rate_limit`` (a token bucket under a lock;
  ``max_wait=0`` so that a call over the rate is refused, as resilient's default),
  ``bulkhead(10, max_wait=0)``, ``timeout`` (a worker thread for sync calls), ``fallback``
  and its ``compose()``.

Before a row is timed, a self-check shows that its guarded call really goes through the
policy: a breaker opens after failures (``peers.breaker_cases``), a bulkhead with room for
one call refuses a second call made from inside the first, a timeout fires on a slow call,
a fallback answers for a failing call, a rate limiter admits the first call of a burst of
one and refuses the next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from peers import (
    BULKHEAD_ASYNC,
    BULKHEAD_SYNC,
    COMPOSE3_SYNC,
    COMPOSE4_ASYNC,
    COMPOSE4_SYNC,
    FALLBACK_ASYNC,
    FALLBACK_SYNC,
    HUGE_RATE,
    LONG,
    OPEN_FOR,
    RATE_ASYNC,
    RATE_REJECT_ASYNC,
    RATE_REJECT_SYNC,
    RATE_SYNC,
    RETRY_ASYNC,
    RETRY_ONCE_ASYNC,
    RETRY_ONCE_SYNC,
    RETRY_SYNC,
    TIMEOUT_ASYNC,
    TIMEOUT_SYNC,
    TINY_RATE,
    Case,
    aboom,
    aflaky,
    aident,
    boom,
    breaker_cases,
    fallback_value,
    flaky,
    ident,
    pick,
)

SLOW = 0.2  # seconds: a call that a timeout of TIMED_OUT must cut short
TIMED_OUT = 0.01


def run(fn: Any, loop: asyncio.AbstractEventLoop) -> Any:
    """``fn(1)``, awaited in ``loop`` when ``fn`` is a coroutine function's wrapper."""
    result = fn(1)
    return loop.run_until_complete(result) if asyncio.iscoroutine(result) else result


def check_full(
    make_one: Callable[[], Any], error: type[BaseException], loop: asyncio.AbstractEventLoop
) -> None:
    """A bulkhead with room for one call refuses a call made from inside the first (both kinds)."""
    one = make_one()
    inner = one(ident)

    def outer(x: int) -> bool:
        try:
            inner(x)
        except error:
            return True
        return False

    assert one(outer)(1) is True, f"{one!r} admitted a second sync call"
    one = make_one()
    ainner = one(aident)

    async def aouter(x: int) -> bool:
        try:
            await ainner(x)
        except error:
            return True
        return False

    assert loop.run_until_complete(one(aouter)(1)) is True, f"{one!r} admitted a second task"


def check_times_out(
    make: Callable[[float], Any], error: type[BaseException], loop: asyncio.AbstractEventLoop
) -> None:
    """A timeout of ``TIMED_OUT`` cuts a call of ``SLOW`` seconds short (sync and awaited)."""

    def slow(x: int) -> int:
        time.sleep(SLOW)
        return x

    async def aslow(x: int) -> int:
        await asyncio.sleep(SLOW)
        return x

    for fn in (slow, aslow):
        try:
            run(make(TIMED_OUT)(fn), loop)
        except error:
            continue
        raise AssertionError(f"{make!r} did not time out {fn.__name__}")


def check_falls_back(make: Callable[[], Any], loop: asyncio.AbstractEventLoop) -> None:
    """The fallback answers for a failing call (sync and awaited)."""
    for fn in (boom, aboom):
        assert run(make()(fn), loop) == fallback_value(), make


def _scenario_fn(scenario: str) -> Any:
    if scenario in (RETRY_ONCE_SYNC, RETRY_ONCE_ASYNC):
        return pick(scenario, flaky(), aflaky())
    return pick(scenario, ident, aident)


def _interlock(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import interlock  # noqa: PLC0415 -- an optional peer (Python >= 3.11)
    from interlock import pipeline  # noqa: PLC0415

    counter = iter(range(10**9))

    def breaker(tripped: bool = False) -> Any:
        # Names only label the breakers; each is its own.
        config = interlock.Config(wait_duration_in_open=OPEN_FOR) if tripped else None
        return interlock.CircuitBreaker(name=f"bench-{next(counter)}", config=config)

    cases = breaker_cases(
        "interlock-cb", loop, breaker, interlock.CircuitOpenError, lambda b, _: b.state.value
    )
    bulkhead = pipeline.BulkheadStrategy
    check_full(lambda: interlock.Pipeline(bulkhead(1)), interlock.BulkheadFullError, loop)
    check_times_out(
        lambda s: interlock.Pipeline(pipeline.TimeoutStrategy(s)), interlock.CallTimeoutError, loop
    )
    check_falls_back(lambda: interlock.Pipeline(pipeline.FallbackStrategy(fallback_value)), loop)

    def stack(*, timed: bool) -> Any:
        strategies: list[Any] = [
            pipeline.FallbackStrategy(fallback_value),
            pipeline.CircuitBreakerStrategy(breaker()),
        ]
        if timed:
            strategies.append(pipeline.TimeoutStrategy(LONG))
        return interlock.Pipeline(*strategies, bulkhead(10))

    for scenario, make in (
        (BULKHEAD_SYNC, lambda: bulkhead(10)),
        (BULKHEAD_ASYNC, lambda: bulkhead(10)),
        (TIMEOUT_SYNC, lambda: pipeline.TimeoutStrategy(LONG)),
        (TIMEOUT_ASYNC, lambda: pipeline.TimeoutStrategy(LONG)),
        (FALLBACK_SYNC, lambda: pipeline.FallbackStrategy(fallback_value)),
        (FALLBACK_ASYNC, lambda: pipeline.FallbackStrategy(fallback_value)),
    ):
        guarded = interlock.Pipeline(make())(pick(scenario, ident, aident))
        cases.append(Case(scenario, "interlock-cb", guarded))
    for scenario in (COMPOSE3_SYNC, COMPOSE4_SYNC, COMPOSE4_ASYNC):
        guarded = stack(timed=scenario != COMPOSE3_SYNC)(pick(scenario, ident, aident))
        cases.append(Case(scenario, "interlock-cb Pipeline", guarded))
    return cases


def _nopanic(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import nopanic  # noqa: PLC0415 -- an optional peer

    cases = breaker_cases(
        "nopanic",
        loop,
        lambda tripped: (
            nopanic.circuit_breaker(reset_timeout=OPEN_FOR)
            if tripped
            else nopanic.circuit_breaker()
        ),
        nopanic.CircuitOpen,
        lambda b, _: b.state,
    )
    check_full(lambda: nopanic.bulkhead(1, max_wait=0), nopanic.BulkheadFull, loop)
    check_times_out(nopanic.timeout, TimeoutError, loop)
    check_falls_back(lambda: nopanic.fallback(fallback_value), loop)
    for scenario in (RATE_REJECT_SYNC, RATE_REJECT_ASYNC):
        refused = nopanic.rate_limit(1, 1 / TINY_RATE, burst=1, max_wait=0)(
            pick(scenario, ident, aident)
        )
        assert run(refused, loop) == 1, "nopanic's burst of one refused its first call"
        cases.append(Case(scenario, "nopanic", refused, nopanic.RateLimited))
    makers: dict[str, Callable[[], Any]] = {
        RETRY_SYNC: lambda: nopanic.retry(attempts=3),
        RETRY_ONCE_SYNC: lambda: nopanic.retry(attempts=3, backoff=0),
        RATE_SYNC: lambda: nopanic.rate_limit(HUGE_RATE, max_wait=0),
        BULKHEAD_SYNC: lambda: nopanic.bulkhead(10, max_wait=0),
        TIMEOUT_SYNC: lambda: nopanic.timeout(LONG),
        FALLBACK_SYNC: lambda: nopanic.fallback(fallback_value),
    }
    twins = {
        RETRY_ASYNC: RETRY_SYNC,
        RETRY_ONCE_ASYNC: RETRY_ONCE_SYNC,
        RATE_ASYNC: RATE_SYNC,
        BULKHEAD_ASYNC: BULKHEAD_SYNC,
        TIMEOUT_ASYNC: TIMEOUT_SYNC,
        FALLBACK_ASYNC: FALLBACK_SYNC,
    }
    for scenario in (*makers, *twins):
        make = makers[twins.get(scenario, scenario)]
        cases.append(Case(scenario, "nopanic", make()(_scenario_fn(scenario))))
    for scenario in (COMPOSE3_SYNC, COMPOSE4_SYNC, COMPOSE4_ASYNC):
        policies: list[Any] = [nopanic.fallback(fallback_value), nopanic.circuit_breaker()]
        if scenario != COMPOSE3_SYNC:
            policies.append(nopanic.timeout(LONG))
        policies.append(nopanic.bulkhead(10, max_wait=0))
        guarded = nopanic.compose(*policies)(pick(scenario, ident, aident))
        cases.append(Case(scenario, "nopanic compose()", guarded))
    return cases


BUILDERS: tuple[tuple[str, Callable[[asyncio.AbstractEventLoop], list[Case]]], ...] = (
    ("interlock-cb", _interlock),
    ("nopanic", _nopanic),
)
