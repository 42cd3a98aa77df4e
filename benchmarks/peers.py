"""Measure the per-call cost of resilient's policies next to every Python peer, in one run.

Usage::

    python benchmarks/peers.py [--rounds 25] [--sample-ms 10] [--gc] [--cpu-time]
                               [--json PATH] [--chart PATH] [--quick] [--only WORDS]
                               [--baseline PATH] [--no-contention]

It installs nothing: each peer is measured if it can be imported (``pip install -e
'.[bench]'`` installs them all) and skipped with a note otherwise. The peers, each in
the scenarios it has:

* circuit breakers: circuitbreaker, pybreaker (sync only: its decorator does not guard
  ``async def``, checked on every run), aiobreaker, purgatory (sync and asyncio), hyx
  (asyncio only) and pyresilience, each with default options except that a tripped
  breaker stays open for an hour, so it never half-opens during a run;
* retries (3 attempts): tenacity, stamina, backoff, hyx (asyncio) and pyresilience, both
  with a first attempt that succeeds and with one retry after a failure with zero wait
  (stamina with its retry hooks off: by default it logs every retry, resilient does not);
* rate limiters (admitted, and rejected), bulkheads (uncontended), timeouts (never
  firing) and fallbacks (never used): hyx (asyncio) and pyresilience;
* compositions of Fallback, CircuitBreaker, (Timeout,) Bulkhead: resilient's
  ``compose()``, the same policies stacked as decorators, pyresilience's one decorator
  with the same four configs, and hyx's four decorators stacked (asyncio);
* interlock-cb (breaker, and its ``Pipeline`` for the bulkhead, timeout, fallback and
  compositions) and nopanic (breaker, retry, rate limit, bulkhead, timeout, fallback,
  ``compose()``), in every scenario they have: ``peers_newer.py``;
* the rate limiters limits, pyrate-limiter, throttled-py, limiter, aiolimiter and
  token-bucket, in the four rate-limiter scenarios where they have them, with which of
  them are thread-safe and exact (hyx's token bucket is neither: no lock):
  ``peers_limiters.py``;
* a full bulkhead's rejection (one slot, held by a parked call), for every bulkhead:
  ``peers_full.py``.

Each peer's guarded call is checked to go through its policy before it is timed: a
breaker is tripped by failures, a rejected row must reject, and the newer peers' other
policies are checked to act (a bulkhead refuses a nested call, a timeout fires, a
fallback answers, a rate limiter admits its burst of one and refuses the next).

Rows marked "(reference)" are not peers but the standard building block a policy uses
or replaces, in a wrapper function (a decorator adds that frame too).

Every scenario is a guarded call of ``fn(1)`` next to the bare call it guards, in the
same run. Samples are timeit-style: a loop of ``number`` calls (calibrated to about
``--sample-ms`` each) with the garbage collector off unless ``--gc``. Each round takes
one sample of every case, in a rotated order, so the implementations alternate and
drift hits them alike; the result is the median over rounds, and the overhead is the
median of each round's difference to the bare call of that round.

Awaited calls are timed inside one running asyncio loop (the loop awaits ``fn(1)``
``number`` times between two clock reads), so the event loop's own cost is not counted.
Rejections are ``try: fn(1) except <the library's error>: pass``; their baseline is still
the bare call, and "bare raise" shows the floor of raising and catching one exception.
The one-retry scenarios call a function that fails every other call; their bare row is
the same two attempts written by hand (``try: f(x) except: f(x)``).

After the table, a section of its own (``contention.py``, left out with
``--no-contention``) measures a contended bulkhead's time per call next to
``threading.Semaphore`` and ``asyncio.Semaphore``.

It prints the table (ns per call, overhead over the bare call, ratio to resilient's
overhead), a PASS/FAIL line per target of the project and per target of issue 16
(``issue16_targets.py``; ``--baseline PATH`` reads an earlier run's JSON for the "0.7x
today's" lines; the many-breakers target is ``scale.py``'s), and writes the results as JSON
and, when matplotlib is installed, as a PNG bar chart. ``--quick`` takes a few tiny
samples and writes no files unless asked (CI uses it as a smoke test: every case is
built, checked and timed, and no timing is asserted).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import timeit
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from itertools import repeat
from pathlib import Path
from typing import Any

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    RateLimitedError,
    RateLimiter,
    Retry,
    Timeout,
    compose,
)

if __name__ == "__main__":
    # peers_newer.py and peers_limiters.py import this module by name: one copy, not two.
    sys.modules.setdefault("peers", sys.modules[__name__])

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results.json"
DEFAULT_CHART = ROOT / "docs" / "img" / "benchmarks.png"
CHART_RANGE_NS = (10, 1_000_000)

OPEN_FOR = 3600.0
WARMUP = 1_000
LONG = 10.0  # seconds: a timeout that never fires during a run
HUGE_RATE = 1e9  # calls per second: every call is admitted
TINY_RATE = 1e-6  # one call per ~11.6 days: after a burst of one, every call is refused

SYNC_CLOSED = "sync call, CLOSED"
SYNC_OPEN = "sync call, OPEN (rejected)"
ASYNC_CLOSED = "awaited call (asyncio), CLOSED"
ASYNC_OPEN = "awaited call (asyncio), OPEN (rejected)"
RETRY_SYNC = "retry, sync call, first attempt succeeds"
RETRY_ASYNC = "retry, awaited (asyncio), first attempt succeeds"
RETRY_ONCE_SYNC = "retry, sync call, one retry (fails once), zero wait"
RETRY_ONCE_ASYNC = "retry, awaited (asyncio), one retry (fails once), zero wait"
RATE_SYNC = "rate limiter, sync call, admitted"
RATE_ASYNC = "rate limiter, awaited (asyncio), admitted"
RATE_REJECT_SYNC = "rate limiter, sync call, rejected"
RATE_REJECT_ASYNC = "rate limiter, awaited (asyncio), rejected"
BULKHEAD_SYNC = "bulkhead, sync call, uncontended"
BULKHEAD_ASYNC = "bulkhead, awaited (asyncio), uncontended"
BULKHEAD_FULL_SYNC = "bulkhead, sync call, full (rejected)"
BULKHEAD_FULL_ASYNC = "bulkhead, awaited (asyncio), full (rejected)"
TIMEOUT_SYNC = "timeout, sync call (runs in a worker thread)"
TIMEOUT_ASYNC = "timeout, awaited (asyncio)"
FALLBACK_SYNC = "fallback, sync call, no failure"
FALLBACK_ASYNC = "fallback, awaited (asyncio), no failure"
COMPOSE3_SYNC = "compose(Fallback, CircuitBreaker, Bulkhead), sync call"
COMPOSE4_SYNC = "compose(Fallback, CircuitBreaker, Timeout, Bulkhead), sync call"
COMPOSE4_ASYNC = "compose(Fallback, CircuitBreaker, Timeout, Bulkhead), awaited (asyncio)"
ORDER = [
    SYNC_CLOSED,
    SYNC_OPEN,
    ASYNC_CLOSED,
    ASYNC_OPEN,
    RETRY_SYNC,
    RETRY_ASYNC,
    RETRY_ONCE_SYNC,
    RETRY_ONCE_ASYNC,
    RATE_SYNC,
    RATE_ASYNC,
    RATE_REJECT_SYNC,
    RATE_REJECT_ASYNC,
    BULKHEAD_SYNC,
    BULKHEAD_ASYNC,
    BULKHEAD_FULL_SYNC,
    BULKHEAD_FULL_ASYNC,
    TIMEOUT_SYNC,
    TIMEOUT_ASYNC,
    FALLBACK_SYNC,
    FALLBACK_ASYNC,
    COMPOSE3_SYNC,
    COMPOSE4_SYNC,
    COMPOSE4_ASYNC,
]
POLICY_SCENARIOS = ORDER[4:]  # each with a bare row of its own, next to its cases
ASYNC_SCENARIOS = frozenset(s for s in ORDER if "awaited" in s)
REJECTING = frozenset(
    (
        SYNC_OPEN,
        ASYNC_OPEN,
        RATE_REJECT_SYNC,
        RATE_REJECT_ASYNC,
        BULKHEAD_FULL_SYNC,
        BULKHEAD_FULL_ASYNC,
    )
)
# Built in peers_full.py, resilient's rows too: every slot of the bulkhead is held.
FULL_SCENARIOS = (BULKHEAD_FULL_SYNC, BULKHEAD_FULL_ASYNC)
BASELINE = {
    SYNC_CLOSED: (SYNC_CLOSED, "bare"),
    SYNC_OPEN: (SYNC_CLOSED, "bare"),
    ASYNC_CLOSED: (ASYNC_CLOSED, "bare"),
    ASYNC_OPEN: (ASYNC_CLOSED, "bare"),
    **{scenario: (scenario, "bare") for scenario in POLICY_SCENARIOS},
}
REFERENCE = "resilient"
COMPOSED = "resilient compose()"
STACKED = "resilient, stacked decorators"
COMPOSITIONS = (COMPOSE3_SYNC, COMPOSE4_SYNC, COMPOSE4_ASYNC)
REFERENCE_OF = dict.fromkeys(COMPOSITIONS, COMPOSED)  # others: REFERENCE
PEERS = (
    "circuitbreaker",
    "pybreaker",
    "aiobreaker",
    "purgatory",
    "hyx",
    "pyresilience",
    "tenacity",
    "stamina",
    "backoff",
    "interlock-cb",
    "nopanic",
    "limits",
    "pyrate-limiter",
    "throttled-py",
    "limiter",
    "aiolimiter",
    "token-bucket",
)


class BoomError(Exception):
    """The failure of the protected function."""


def ident(x: int) -> int:
    return x


async def aident(x: int) -> int:
    return x


def boom(x: int) -> int:
    raise BoomError


async def aboom(x: int) -> int:
    raise BoomError


def flaky() -> Callable[[int], int]:
    """A fresh function whose every other call fails: a retried call takes two attempts."""
    failing = [False]

    def flaky(x: int) -> int:
        failing[0] = not failing[0]
        if failing[0]:
            raise BoomError
        return x

    return flaky


def aflaky() -> Callable[[int], Any]:
    """``flaky()`` as a coroutine function."""
    sync = flaky()

    async def aflaky(x: int) -> int:
        return sync(x)

    return aflaky


def by_hand_twice(fn: Callable[[int], int]) -> Callable[[int], int]:
    """The floor of a retry: ``fn`` called again once if it fails, written by hand."""

    def twice(x: int) -> int:
        try:
            return fn(x)
        except BoomError:
            return fn(x)

    return twice


def aby_hand_twice(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """``by_hand_twice`` for a coroutine function."""

    async def twice(x: int) -> int:
        try:
            return await fn(x)
        except BoomError:
            return await fn(x)

    return twice


def attempt(fn: Callable[[int], Any], error: type[BaseException]) -> bool:
    """Call ``fn(1)``; whether it raised ``error`` (a rejection, in a sync benchmark)."""
    try:
        fn(1)
    except error:
        return True
    return False


def fallback_value(exc: BaseException | None = None) -> int:
    return -1


@dataclass
class Case:
    scenario: str
    library: str
    fn: Any
    error: type[BaseException] | None = None  # the rejection to catch
    still_open: Any = None  # checked after the run: a tripped breaker must stay open
    verify: Callable[[], None] | None = None  # checked after the run: only fast paths ran
    number: int = 0
    samples: list[float] = field(default_factory=list)

    @property
    def is_async(self) -> bool:
        return self.scenario in ASYNC_SCENARIOS


def pick(scenario: str, sync: Any, asynchronous: Any) -> Any:
    """``sync`` or ``asynchronous``, whichever matches the scenario."""
    return asynchronous if scenario in ASYNC_SCENARIOS else sync


# -- building the cases --------------------------------------------------------------


def _trip(fn: Any, error: type[BaseException], loop: asyncio.AbstractEventLoop) -> None:
    """Call the failing ``fn`` until its breaker rejects a call."""
    for _ in range(1_000):
        try:
            if inspect.iscoroutinefunction(fn):
                loop.run_until_complete(fn(1))
            else:
                fn(1)
        except error:
            return
        except BoomError:
            continue
    raise AssertionError(f"{fn!r} never opened")


def breaker_cases(
    library: str,
    loop: asyncio.AbstractEventLoop,
    make: Callable[[bool], Any],
    error: type[BaseException],
    state: Callable[[Any], str],
    scenarios: tuple[str, ...] = (SYNC_CLOSED, SYNC_OPEN, ASYNC_CLOSED, ASYNC_OPEN),
) -> list[Case]:
    """A peer's breaker rows: ``make(tripped)`` returns a decorator with that breaker.

    ``state(decorator, guarded)`` names the breaker's state; a tripped one must say "open".
    """
    cases = []
    for scenario in scenarios:
        if scenario not in REJECTING:
            cases.append(
                Case(scenario, library, make(tripped=False)(pick(scenario, ident, aident)))
            )
            continue
        breaker = make(tripped=True)
        fn = breaker(pick(scenario, boom, aboom))
        _trip(fn, error, loop)
        cases.append(Case(scenario, library, fn, error, lambda b=breaker, f=fn: state(b, f)))
    return cases


def _resilient(loop: asyncio.AbstractEventLoop) -> list[Case]:
    cases = breaker_cases(
        "resilient",
        loop,
        lambda tripped: CircuitBreaker(open_duration=OPEN_FOR) if tripped else CircuitBreaker(),
        CircuitOpenError,
        lambda b, _: b.state.value,
    )
    for scenario in (SYNC_OPEN, ASYNC_OPEN):
        forced = CircuitBreaker()
        forced.force_open()
        cases.append(
            Case(
                scenario,
                "resilient (forced_open)",
                forced(pick(scenario, boom, aboom)),
                CircuitOpenError,
                lambda b=forced: b.state.value,
            )
        )
    return cases


def _circuitbreaker(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import circuitbreaker as cb  # noqa: PLC0415 -- an optional peer

    return breaker_cases(
        "circuitbreaker",
        loop,
        lambda tripped: (
            cb.CircuitBreaker(recovery_timeout=OPEN_FOR) if tripped else cb.CircuitBreaker()
        ),
        cb.CircuitBreakerError,
        lambda b, _: b.state,
    )


def _pybreaker(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import pybreaker as pb  # noqa: PLC0415 -- an optional peer

    return breaker_cases(
        "pybreaker",
        loop,
        lambda tripped: (
            pb.CircuitBreaker(reset_timeout=OPEN_FOR) if tripped else pb.CircuitBreaker()
        ),
        pb.CircuitBreakerError,
        lambda b, _: b.current_state,
        (SYNC_CLOSED, SYNC_OPEN),
    )


def _aiobreaker(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import aiobreaker  # noqa: PLC0415 -- an optional peer

    hour = datetime.timedelta(seconds=OPEN_FOR)
    return breaker_cases(
        "aiobreaker",
        loop,
        lambda tripped: aiobreaker.CircuitBreaker(timeout_duration=hour if tripped else None),
        aiobreaker.CircuitBreakerError,
        lambda b, _: b.current_state.name.lower(),
    )


def _purgatory(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import purgatory  # noqa: PLC0415 -- an optional peer
    from purgatory.domain.model import OpenedState  # noqa: PLC0415 -- its rejection

    def make(factory_type: Any) -> Callable[[bool], Any]:
        def decorator(tripped: bool) -> Any:
            # One factory per breaker: its default in-memory store, one circuit in it.
            factory = factory_type(default_ttl=OPEN_FOR) if tripped else factory_type()
            decorate = factory("circuit")
            decorate.factory = factory
            return decorate

        return decorator

    def state(decorate: Any, _: Any) -> str:
        contexts = decorate.factory.uow.contexts
        if inspect.iscoroutinefunction(contexts.get):
            context = loop.run_until_complete(contexts.get("circuit"))
        else:
            context = contexts.get("circuit")
        return "open" if context.state == "opened" else str(context.state)

    sync = breaker_cases(
        "purgatory",
        loop,
        make(purgatory.SyncCircuitBreakerFactory),
        OpenedState,
        state,
        (SYNC_CLOSED, SYNC_OPEN),
    )
    return sync + breaker_cases(
        "purgatory",
        loop,
        make(purgatory.AsyncCircuitBreakerFactory),
        OpenedState,
        state,
        (ASYNC_CLOSED, ASYNC_OPEN),
    )


def _hyx(loop: asyncio.AbstractEventLoop) -> list[Case]:
    from hyx.bulkhead import bulkhead  # noqa: PLC0415 -- an optional peer
    from hyx.circuitbreaker import consecutive_breaker  # noqa: PLC0415
    from hyx.circuitbreaker.exceptions import BreakerFailing  # noqa: PLC0415
    from hyx.circuitbreaker.states import FailingState  # noqa: PLC0415
    from hyx.fallback import fallback  # noqa: PLC0415
    from hyx.ratelimit import tokenbucket  # noqa: PLC0415
    from hyx.ratelimit.exceptions import RateLimitExceeded  # noqa: PLC0415
    from hyx.retry import retry  # noqa: PLC0415
    from hyx.timeout import timeout  # noqa: PLC0415

    cases = breaker_cases(
        "hyx",
        loop,
        lambda tripped: consecutive_breaker(recovery_time_secs=OPEN_FOR if tripped else 30),
        BreakerFailing,
        lambda b, _: "open" if isinstance(b.state, FailingState) else type(b.state).__name__,
        (ASYNC_CLOSED, ASYNC_OPEN),
    )

    def stacked(fn: Any) -> Any:
        for decorator in (
            bulkhead(10, 10),
            timeout(LONG),
            consecutive_breaker(),
            fallback(fallback_value),
        ):  # innermost first, as decorators apply
            fn = decorator(fn)
        return fn

    async def decorate() -> list[Case]:
        # hyx's token bucket and timeout bind to the running loop when they are created.
        refused = tokenbucket(1, 1 / TINY_RATE, bucket_size=1)(aident)
        await refused(1)  # the bucket of one, used up
        return [
            Case(RETRY_ASYNC, "hyx", retry(attempts=3)(aident)),
            Case(RETRY_ONCE_ASYNC, "hyx", retry(attempts=3, backoff=0)(aflaky())),
            Case(RATE_ASYNC, "hyx", tokenbucket(HUGE_RATE, 1.0)(aident)),
            Case(RATE_REJECT_ASYNC, "hyx", refused, RateLimitExceeded),
            Case(BULKHEAD_ASYNC, "hyx", bulkhead(10, 10)(aident)),
            Case(TIMEOUT_ASYNC, "hyx", timeout(LONG)(aident)),
            Case(FALLBACK_ASYNC, "hyx", fallback(fallback_value)(aident)),
            Case(COMPOSE4_ASYNC, "hyx, stacked decorators", stacked(aident)),
        ]

    return cases + loop.run_until_complete(decorate())


def _pyresilience(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import pyresilience as pr  # noqa: PLC0415 -- an optional peer

    def state(_: Any, guarded: Any) -> str:
        return str(guarded._executor._circuit_breaker.state.value)

    cases = breaker_cases(
        "pyresilience",
        loop,
        lambda tripped: pr.resilient(
            circuit_breaker=pr.CircuitBreakerConfig(recovery_timeout=OPEN_FOR)
            if tripped
            else pr.CircuitBreakerConfig()
        ),
        pr.CircuitOpenError,
        state,
    )
    no_wait = pr.RetryConfig(max_attempts=3, delay=0.0, jitter=False)
    for scenario in POLICY_SCENARIOS:
        if scenario in FULL_SCENARIOS:
            continue  # peers_full.py
        fn = pick(scenario, ident, aident)
        if scenario in (RETRY_ONCE_SYNC, RETRY_ONCE_ASYNC):
            fn = pick(scenario, flaky(), aflaky())
        options: dict[str, Any] = {
            RETRY_SYNC: {"retry": pr.RetryConfig(max_attempts=3)},
            RETRY_ONCE_SYNC: {"retry": no_wait},
            RATE_SYNC: {"rate_limiter": pr.RateLimiterConfig(max_calls=int(HUGE_RATE))},
            RATE_REJECT_SYNC: {
                "rate_limiter": pr.RateLimiterConfig(max_calls=1, period=1 / TINY_RATE)
            },
            BULKHEAD_SYNC: {"bulkhead": pr.BulkheadConfig(max_concurrent=10)},
            TIMEOUT_SYNC: {"timeout": pr.TimeoutConfig(seconds=LONG)},
            FALLBACK_SYNC: {"fallback": pr.FallbackConfig(handler=fallback_value)},
            COMPOSE3_SYNC: {
                "fallback": pr.FallbackConfig(handler=fallback_value),
                "circuit_breaker": pr.CircuitBreakerConfig(),
                "bulkhead": pr.BulkheadConfig(max_concurrent=10),
            },
        }.get(SYNC_TWIN.get(scenario, scenario), {})
        if scenario in (COMPOSE4_SYNC, COMPOSE4_ASYNC):
            options = {
                "fallback": pr.FallbackConfig(handler=fallback_value),
                "circuit_breaker": pr.CircuitBreakerConfig(),
                "timeout": pr.TimeoutConfig(seconds=LONG),
                "bulkhead": pr.BulkheadConfig(max_concurrent=10),
            }
        guarded = pr.resilient(**options)(fn)
        if scenario in (RATE_REJECT_SYNC, RATE_REJECT_ASYNC):
            call = pick(scenario, guarded, lambda x, g=guarded: loop.run_until_complete(g(x)))
            call(1)  # the one call of the period, used up
            cases.append(Case(scenario, "pyresilience", guarded, pr.RateLimitExceededError))
        else:
            cases.append(Case(scenario, "pyresilience", guarded))
    return cases


# Each async policy scenario and the sync one whose options it shares.
SYNC_TWIN = {
    RETRY_ASYNC: RETRY_SYNC,
    RETRY_ONCE_ASYNC: RETRY_ONCE_SYNC,
    RATE_ASYNC: RATE_SYNC,
    RATE_REJECT_ASYNC: RATE_REJECT_SYNC,
    BULKHEAD_ASYNC: BULKHEAD_SYNC,
    TIMEOUT_ASYNC: TIMEOUT_SYNC,
    FALLBACK_ASYNC: FALLBACK_SYNC,
}


def _expect(metrics: Callable[[], Any], **expected: int) -> Callable[[], None]:
    """A check that ``metrics()`` has the ``expected`` values after the run."""

    def check() -> None:
        snapshot = metrics()
        for name, value in expected.items():
            assert getattr(snapshot, name) == value, (snapshot, name, value)

    return check


def _untouched(policies: list[Any]) -> Callable[[], None]:
    """A check that a composition only took fast paths: no fallback, trip, timeout, leak."""

    def check() -> None:
        for policy in policies:
            if isinstance(policy, Fallback):
                assert policy.used == 0, policy
            elif isinstance(policy, CircuitBreaker):
                assert policy.metrics().failed_calls == 0, policy
            elif isinstance(policy, Timeout):
                assert policy.metrics().timeouts == 0, policy
            elif isinstance(policy, Bulkhead):
                assert policy.metrics().in_flight == 0, policy

    return check


def _composition_cases(scenario: str) -> list[Case]:
    """``compose(Fallback, CircuitBreaker, [Timeout,] Bulkhead)``, and the same stacked."""
    cases = []
    for library in (COMPOSED, STACKED):
        policies: list[Any] = [Fallback(fallback_value), CircuitBreaker()]
        if scenario != COMPOSE3_SYNC:
            policies.append(Timeout(LONG))
        policies.append(Bulkhead(10))
        guarded = pick(scenario, ident, aident)
        if library == COMPOSED:
            guarded = compose(*policies)(guarded)
        else:
            for policy in reversed(policies):  # innermost first, as decorators apply
                guarded = policy(guarded)
        cases.append(Case(scenario, library, guarded, verify=_untouched(policies)))
    return cases


def _policies(loop: asyncio.AbstractEventLoop) -> list[Case]:
    """The bare call of every policy scenario, and resilient's guarded calls."""
    cases = []
    for scenario in POLICY_SCENARIOS:
        if scenario in (RETRY_ONCE_SYNC, RETRY_ONCE_ASYNC):
            bare = pick(scenario, by_hand_twice(flaky()), aby_hand_twice(aflaky()))
        else:
            bare = pick(scenario, ident, aident)
        cases.append(Case(scenario, "bare", bare))
        if scenario in REJECTING:
            cases.append(Case(scenario, "bare raise", pick(scenario, boom, aboom), BoomError))
    for scenario in POLICY_SCENARIOS:
        fn = pick(scenario, ident, aident)
        twin = SYNC_TWIN.get(scenario, scenario)
        if twin == RETRY_SYNC:
            retry = Retry(3)
            cases.append(
                Case(scenario, "resilient", retry(fn), verify=_expect(retry.metrics, retries=0))
            )
        elif twin == RETRY_ONCE_SYNC:
            retry = Retry(3, wait=0)
            fn = pick(scenario, flaky(), aflaky())
            cases.append(
                Case(scenario, "resilient", retry(fn), verify=_expect(retry.metrics, exhausted=0))
            )
        elif twin == RATE_SYNC:
            limiter = RateLimiter(HUGE_RATE)
            cases.append(
                Case(
                    scenario, "resilient", limiter(fn), verify=_expect(limiter.metrics, rejected=0)
                )
            )
        elif twin == RATE_REJECT_SYNC:
            limiter = RateLimiter(TINY_RATE, burst=1)
            limiter(ident)(1)  # the burst of one, used up
            cases.append(
                Case(
                    scenario,
                    "resilient",
                    limiter(fn),
                    RateLimitedError,
                    verify=_expect(limiter.metrics, admitted=1),
                )
            )
        elif twin == BULKHEAD_SYNC:
            bulkhead = Bulkhead(10)
            cases.append(
                Case(
                    scenario,
                    "resilient",
                    bulkhead(fn),
                    verify=_expect(bulkhead.metrics, in_flight=0, rejected=0),
                )
            )
        elif twin == TIMEOUT_SYNC:
            timeout = Timeout(LONG)
            cases.append(
                Case(
                    scenario, "resilient", timeout(fn), verify=_expect(timeout.metrics, timeouts=0)
                )
            )
        elif twin == FALLBACK_SYNC:
            fallback = Fallback(fallback_value)
            cases.append(
                Case(scenario, "resilient", fallback(fn), verify=lambda f=fallback: _unused(f))
            )
        elif scenario in FULL_SCENARIOS:
            continue  # peers_full.py
        else:
            cases += _composition_cases(scenario)
    return cases


def _full_bulkheads(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import peers_full  # noqa: PLC0415 -- it imports this module

    return peers_full.resilient_cases(loop)


def _unused(fallback: Fallback[Any]) -> None:
    assert fallback.used == 0, fallback


def _references(loop: asyncio.AbstractEventLoop) -> tuple[list[Case], list[str]]:
    """The building blocks next to the bulkhead and the timeout (not peers)."""
    import anyio  # noqa: PLC0415 -- a dependency of resilient, needed here only

    notes = []
    lock = threading.BoundedSemaphore(10)
    semaphore = asyncio.Semaphore(10)

    def with_lock(x: int) -> int:
        with lock:
            return ident(x)

    async def with_semaphore(x: int) -> int:
        async with semaphore:
            return await aident(x)

    async def with_fail_after(x: int) -> int:
        with anyio.fail_after(LONG):
            return await aident(x)

    cases = [
        Case(BULKHEAD_SYNC, "threading.BoundedSemaphore (reference)", with_lock),
        Case(BULKHEAD_ASYNC, "asyncio.Semaphore (reference)", with_semaphore),
        Case(TIMEOUT_ASYNC, "anyio.fail_after (reference)", with_fail_after),
    ]
    if hasattr(asyncio, "timeout"):

        async def with_timeout(x: int) -> int:
            async with asyncio.timeout(LONG):
                return await aident(x)

        cases.append(Case(TIMEOUT_ASYNC, "asyncio.timeout (reference)", with_timeout))
    else:
        notes.append("asyncio.timeout needs Python 3.11: its reference row is left out.")
    return cases, notes


def retry_cases(library: str, first: Any, once: Any) -> list[Case]:
    """A retry peer's four rows: ``first()`` and ``once()`` each return a decorator."""
    return [
        Case(RETRY_SYNC, library, first()(ident)),
        Case(RETRY_ASYNC, library, first()(aident)),
        Case(RETRY_ONCE_SYNC, library, once()(flaky())),
        Case(RETRY_ONCE_ASYNC, library, once()(aflaky())),
    ]


def _tenacity(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import tenacity  # noqa: PLC0415 -- a peer (and a dependency of resilient)

    # On an async def, the decorator runs AsyncRetrying.
    stop = tenacity.stop_after_attempt(3)
    return retry_cases(
        "tenacity",
        lambda: tenacity.retry(stop=stop),
        lambda: tenacity.retry(stop=stop, wait=tenacity.wait_none()),
    )


def _stamina(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import stamina  # noqa: PLC0415 -- an optional peer
    import stamina.instrumentation  # noqa: PLC0415

    # By default stamina logs every scheduled retry (a warning, printed when logging is
    # not configured); resilient logs none, so neither does stamina here.
    stamina.instrumentation.set_on_retry_hooks([])
    return retry_cases(
        "stamina",
        lambda: stamina.retry(on=Exception, attempts=3),
        lambda: stamina.retry(
            on=Exception, attempts=3, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
        ),
    )


def _backoff(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import backoff  # noqa: PLC0415 -- an optional peer

    return retry_cases(
        "backoff",
        lambda: backoff.on_exception(backoff.expo, Exception, max_tries=3),
        lambda: backoff.on_exception(
            backoff.constant, Exception, max_tries=3, interval=0, jitter=None
        ),
    )


def pybreaker_async_check(loop: asyncio.AbstractEventLoop) -> str:
    """Whether pybreaker's decorator guards an ``async def`` (it does not; say how)."""
    import pybreaker as pb  # noqa: PLC0415 -- an optional peer

    breaker = pb.CircuitBreaker(fail_max=1)
    fn = breaker(aboom)
    raised = None
    try:
        loop.run_until_complete(fn(1))
    except BoomError as exc:
        raised = type(exc).__name__
    except pb.CircuitBreakerError as exc:
        raised = type(exc).__name__
    outcome = (
        f"awaiting a decorated async def that raises gave {raised} and left "
        f"fail_counter={breaker.fail_counter}, state={breaker.current_state!r} (fail_max=1)"
    )
    if breaker.fail_counter > 0 or breaker.current_state != "closed":
        return f"pybreaker {metadata.version('pybreaker')} guards async def: {outcome}."
    kind = "a coroutine function" if inspect.iscoroutinefunction(fn) else "a plain function"
    return (
        f"pybreaker {metadata.version('pybreaker')} does NOT guard async def: {outcome}. "
        f"Its wrapper is {kind} that calls the coroutine function under the breaker, which "
        "only creates the coroutine, and records a success; the coroutine runs later, "
        "outside the breaker. (Its only async API, CircuitBreaker.call_async, is built on "
        f"Tornado's gen.coroutine; Tornado is {'' if pb.HAS_TORNADO_SUPPORT else 'not '}"
        "installed here.) Its async rows are left out."
    )


# -- timing --------------------------------------------------------------------------


async def _await_loop(fn: Any, number: int, clock: Callable[[], int]) -> int:
    start = clock()
    for _ in repeat(None, number):
        await fn(1)
    return clock() - start


async def _await_rejected_loop(
    fn: Any, error: type[BaseException], number: int, clock: Callable[[], int]
) -> int:
    start = clock()
    for _ in repeat(None, number):
        try:  # noqa: SIM105 -- contextlib.suppress would add its own cost to each call
            await fn(1)
        except error:
            pass
    return clock() - start


class Runner:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, keep_gc: bool, cpu_time: bool) -> None:
        self.loop = loop
        self.keep_gc = keep_gc
        # Wall time by default, as timeit; the thread's CPU time leaves out the time other
        # processes hold the CPU, which helps on a shared machine.
        self.timer = time.thread_time if cpu_time else time.perf_counter
        self.timer_ns = time.thread_time_ns if cpu_time else time.perf_counter_ns

    def seconds(self, case: Case, number: int) -> float:
        """One sample: ``number`` calls of ``case``, in seconds."""
        if case.is_async:
            gc_was_on = gc.isenabled()
            if not self.keep_gc:
                gc.disable()
            try:
                if case.error is None:
                    coro = _await_loop(case.fn, number, self.timer_ns)
                else:
                    coro = _await_rejected_loop(case.fn, case.error, number, self.timer_ns)
                ns = self.loop.run_until_complete(coro)
            finally:
                if gc_was_on:
                    gc.enable()
            return float(ns) / 1e9
        setup = "gc.enable()" if self.keep_gc else "pass"
        stmt = "fn(1)" if case.error is None else "try:\n    fn(1)\nexcept error:\n    pass"
        names = {"fn": case.fn, "error": case.error, "gc": gc}
        return timeit.Timer(stmt, setup, timer=self.timer, globals=names).timeit(number)

    def calibrate(self, case: Case, target: float) -> int:
        """A call count whose sample takes about ``target`` seconds."""
        number = 100
        while True:
            took = self.seconds(case, number)
            if took >= target / 5 or number >= 10**8:
                return max(100, int(number * target / took))
            number *= 10


def check_case(case: Case, loop: asyncio.AbstractEventLoop) -> None:
    """Fail loudly if a case does not do what its row claims."""
    if case.error is None:
        result = loop.run_until_complete(case.fn(1)) if case.is_async else case.fn(1)
        assert result == 1, (case.library, result)
        return
    try:
        if case.is_async:
            loop.run_until_complete(case.fn(1))
        else:
            case.fn(1)
    except case.error:
        return
    raise AssertionError(f"{case.library} did not reject in {case.scenario}")


def measure(cases: list[Case], runner: Runner, rounds: int, sample: float) -> None:
    for case in cases:
        check_case(case, runner.loop)
        runner.seconds(case, WARMUP)
        case.number = runner.calibrate(case, sample)
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            case.samples.append(runner.seconds(case, case.number) / case.number * 1e9)
    for case in cases:
        if case.still_open is not None:
            state = case.still_open()
            assert state in {"open", "forced_open"}, (case.library, state)
        if case.verify is not None:
            case.verify()


# -- report --------------------------------------------------------------------------


def _find(cases: list[Case], scenario: str, library: str) -> Case | None:
    return next((c for c in cases if c.scenario == scenario and c.library == library), None)


def summarize(cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for case in cases:
        base = _find(cases, *BASELINE[case.scenario])
        assert base is not None
        overhead = statistics.median(a - b for a, b in zip(case.samples, base.samples, strict=True))
        q = statistics.quantiles(case.samples, n=4) if len(case.samples) > 1 else [0, 0, 0]
        rows.append(
            {
                "scenario": case.scenario,
                "library": case.library,
                "ns_per_call": statistics.median(case.samples),
                "ns_min": min(case.samples),
                "ns_iqr": q[2] - q[0],
                "overhead_ns": None if case is base else overhead,
                "overhead_ns_at_min": None
                if case is base
                else min(case.samples) - min(base.samples),
                "calls_per_sample": case.number,
                "samples_ns": [round(s, 2) for s in case.samples],
            }
        )
    for row in rows:
        reference = REFERENCE_OF.get(row["scenario"], REFERENCE)
        ref = next(
            (r for r in rows if r["scenario"] == row["scenario"] and r["library"] == reference),
            None,
        )
        ratio = None
        bare = row["library"].startswith("bare")
        if not bare and row["overhead_ns"] is not None and ref is not None and ref["overhead_ns"]:
            ratio = row["overhead_ns"] / ref["overhead_ns"]
        row["ratio_to_resilient"] = ratio
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "| scenario | library | ns/call median | IQR | overhead vs bare call, ns "
        "| overhead (fastest samples), ns | overhead ratio to resilient (compose: to compose) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")

    def ns(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}"

    for row in rows:
        ratio = "-" if row["ratio_to_resilient"] is None else f"{row['ratio_to_resilient']:.2f}x"
        print(
            f"| {row['scenario']} | {row['library']} | {ns(row['ns_per_call'])} "
            f"| {ns(row['ns_iqr'])} | {ns(row['overhead_ns'])} "
            f"| {ns(row['overhead_ns_at_min'])} | {ratio} |"
        )


def targets(rows: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    def get(scenario: str, library: str) -> dict[str, Any] | None:
        return next(
            (r for r in rows if r["scenario"] == scenario and r["library"] == library), None
        )

    out: list[tuple[str, bool | None, str]] = []
    res = get(SYNC_CLOSED, "resilient")
    assert res is not None
    out.append(
        (
            "CLOSED sync overhead < 450 ns",
            res["overhead_ns"] < 450,
            f"{res['overhead_ns']:.0f} ns",
        )
    )
    peer = get(SYNC_CLOSED, "circuitbreaker")
    if peer is None:
        out.append(("CLOSED sync overhead >= 2x lower than circuitbreaker's", None, "skipped"))
    else:
        ratio = peer["overhead_ns"] / res["overhead_ns"]
        out.append(
            (
                "CLOSED sync overhead >= 2x lower than circuitbreaker's",
                ratio >= 2,
                f"circuitbreaker {peer['overhead_ns']:.0f} ns = {ratio:.2f}x",
            )
        )
    res_async = get(ASYNC_CLOSED, "resilient")
    assert res_async is not None
    out.append(
        (
            "CLOSED async overhead < 530 ns",
            res_async["overhead_ns"] < 530,
            f"{res_async['overhead_ns']:.0f} ns",
        )
    )
    for scenario in (SYNC_OPEN, ASYNC_OPEN):
        mine = get(scenario, "resilient")
        theirs = get(scenario, "circuitbreaker")
        label = f"{scenario}: cheaper than circuitbreaker's"
        if mine is None or theirs is None:
            out.append((label, None, "skipped"))
        else:
            out.append(
                (
                    label,
                    mine["ns_per_call"] < theirs["ns_per_call"],
                    (
                        f"resilient {mine['ns_per_call']:.0f} ns, "
                        f"circuitbreaker {theirs['ns_per_call']:.0f} ns"
                    ),
                )
            )

    def others(scenario: str, libraries: tuple[str, ...]) -> str:
        found = [(lib, get(scenario, lib)) for lib in libraries]
        return "; ".join(
            f"{lib} {row['overhead_ns']:.0f} ns" if row else f"{lib} not measured"
            for lib, row in found
        )

    def under(label: str, scenario: str, limit: float, *, library: str = REFERENCE) -> None:
        row = get(scenario, library)
        if row is None:
            out.append((label, None, "skipped"))
            return
        out.append((label, row["overhead_ns"] < limit, f"{row['overhead_ns']:.0f} ns"))

    peers = ("tenacity", "stamina", "backoff", "hyx", "pyresilience")
    for scenario, limit in ((RETRY_SYNC, 1_000), (RETRY_ASYNC, 1_500)):
        under(f"{scenario}: overhead < {limit:,} ns", scenario, limit)
        out[-1] = (*out[-1][:2], f"{out[-1][2]} (peers: {others(scenario, peers)})")
    under(f"{RATE_SYNC}: overhead < 500 ns", RATE_SYNC, 500)
    under(f"{BULKHEAD_ASYNC}: overhead < 400 ns", BULKHEAD_ASYNC, 400)
    bulkheads = ("asyncio.Semaphore (reference)", "hyx", "pyresilience")
    out[-1] = (*out[-1][:2], f"{out[-1][2]} ({others(BULKHEAD_ASYNC, bulkheads)})")
    under(f"{TIMEOUT_ASYNC}: overhead < 2,000 ns", TIMEOUT_ASYNC, 2_000)
    refs = ("asyncio.timeout (reference)", "anyio.fail_after (reference)")
    out[-1] = (*out[-1][:2], f"{out[-1][2]} ({others(TIMEOUT_ASYNC, refs)})")
    under(f"{COMPOSE4_ASYNC}: overhead < 3,000 ns", COMPOSE4_ASYNC, 3_000, library=COMPOSED)
    for scenario in COMPOSITIONS:
        composed, stacked = get(scenario, COMPOSED), get(scenario, STACKED)
        label = f"{scenario}: compose() cheaper than stacked decorators"
        if composed is None or stacked is None:
            out.append((label, None, "skipped"))
            continue
        out.append(
            (
                label,
                composed["overhead_ns"] < stacked["overhead_ns"],
                (
                    f"compose {composed['overhead_ns']:.0f} ns, "
                    f"stacked {stacked['overhead_ns']:.0f} ns"
                ),
            )
        )
    return out


def issue16(
    rows: list[dict[str, Any]],
    baseline: list[dict[str, Any]] | None,
    contended: list[dict[str, Any]],
) -> list[tuple[str, bool | None, str]]:
    """The issue-16 lines: issue16_targets.py, and contention.py's when it ran."""
    import contention  # noqa: PLC0415 -- they import this module
    import issue16_targets  # noqa: PLC0415

    lines = issue16_targets.targets(rows, baseline)
    if contended:
        lines += contention.targets(contended)
    else:
        lines.append(("issue 16: contended bulkhead", None, "not measured (--no-contention)"))
    lines.append(
        ("issue 16: many breakers flat within 1.3x", None, "measured by benchmarks/scale.py")
    )
    return lines


def source() -> str:
    """The commit of the measured checkout, and whether ``src/`` differs from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit}{' with uncommitted changes in src/' if dirty else ''}"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("resilient-kit", *PEERS, "anyio", "trio", "matplotlib"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": versions,
        "source": source(),
    }


BUILDERS: tuple[tuple[str, Callable[[asyncio.AbstractEventLoop], list[Case]]], ...] = (
    ("circuitbreaker", _circuitbreaker),
    ("pybreaker", _pybreaker),
    ("aiobreaker", _aiobreaker),
    ("purgatory", _purgatory),
    ("hyx", _hyx),
    ("pyresilience", _pyresilience),
    ("tenacity", _tenacity),
    ("stamina", _stamina),
    ("backoff", _backoff),
)


def builders() -> tuple[tuple[str, Callable[[asyncio.AbstractEventLoop], list[Case]]], ...]:
    """Every peer's builder: this module's, then the newer toolkits' and the rate limiters'."""
    import peers_full  # noqa: PLC0415 -- they import this module
    import peers_limiters  # noqa: PLC0415
    import peers_newer  # noqa: PLC0415

    return BUILDERS + peers_newer.BUILDERS + peers_limiters.BUILDERS + peers_full.BUILDERS


def build(loop: asyncio.AbstractEventLoop, only: list[str] | None) -> tuple[list[Case], list[str]]:
    """Every case of resilient, the references and the importable peers, in table order."""
    notes: list[str] = []
    cases = [
        Case(SYNC_CLOSED, "bare", ident),
        Case(SYNC_OPEN, "bare raise", boom, BoomError),
        Case(ASYNC_CLOSED, "bare", aident),
        Case(ASYNC_OPEN, "bare raise", aboom, BoomError),
        *_resilient(loop),
        *_policies(loop),
        *_full_bulkheads(loop),
    ]
    references, reference_notes = _references(loop)
    cases += references
    notes += reference_notes
    unimportable: set[str] = set()
    for name, builder in builders():
        if (only is not None and name not in only) or name in unimportable:
            continue
        try:
            with warnings.catch_warnings():
                # circuitbreaker and backoff call asyncio.iscoroutinefunction (deprecated
                # in 3.14); aiobreaker calls datetime.utcnow() (deprecated in 3.12).
                warnings.simplefilter("ignore", DeprecationWarning)
                cases += builder(loop)
        except ImportError as exc:
            notes.append(f"{name} is not importable ({exc}): skipped (pip install -e '.[bench]').")
            unimportable.add(name)  # its other builders (peers_full.py) too
            continue
        if name == "pybreaker":
            notes.append(pybreaker_async_check(loop))
    if only is not None:
        keep = ("bare", "resilient", *only)
        cases = [c for c in cases if c.library.startswith(keep)]
    scenarios = {c.scenario for c in cases if not c.library.startswith("bare")}
    cases = [c for c in cases if c.scenario in scenarios or BASELINE[c.scenario][0] in scenarios]
    cases.sort(key=lambda c: ORDER.index(c.scenario))  # stable: bare first in each
    return cases, notes


def chart(rows: list[dict[str, Any]], info: dict[str, Any], path: Path) -> str:
    """Draw each scenario's overheads as horizontal bars, one panel each; say what was done."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 -- optional: the chart is skipped without it

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "matplotlib is not installed: no chart (pip install matplotlib)."
    scenarios = [s for s in ORDER if any(r["scenario"] == s for r in rows)]
    # resilient in one colour, the references in grey, each peer in a colour of its own.
    # tab20 without its blues (resilient's) and greys (the references'): 16 colours, and black.
    shades = (i for i in range(20) if i not in {0, 1, 14, 15})
    palette = iter([*(plt.get_cmap("tab20")(i) for i in shades), "black"])
    colours = {peer: next(palette) for peer in PEERS}

    def colour(library: str) -> Any:
        if library.startswith("resilient"):
            return "tab:blue"
        # A row is named after its peer, maybe with a variant: "limits (fixed window)".
        peer = max((p for p in PEERS if library.startswith(p)), key=len, default=None)
        return "lightgrey" if peer is None else colours[peer]

    columns = 3
    lines = (len(scenarios) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(18, 2.6 * lines), squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios, strict=False):
        shown = [
            r
            for r in rows
            if r["scenario"] == scenario
            and r["overhead_ns"] is not None
            and not r["library"].startswith("bare")
        ]
        shown.reverse()  # the first row of the table at the top
        values = [max(r["overhead_ns"], 1.0) for r in shown]
        ax.barh(
            [r["library"] for r in shown],
            values,
            color=[colour(r["library"]) for r in shown],
        )
        for y, value in enumerate(values):
            ax.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.set_xlim(CHART_RANGE_NS)  # one scale for every panel, bars from the same floor
        ax.set_title(scenario, fontsize=9)
        ax.tick_params(axis="both", labelsize=7)
    for ax in axes.flat[len(scenarios) :]:
        ax.axis("off")
    fig.suptitle(
        "Overhead over the bare call, ns per call (log scale; lower is better). "
        f"Python {info['python']}, {info['cpu']}, commit {info['source']}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return f"wrote {path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=25, help="samples per case (median)")
    parser.add_argument("--sample-ms", type=float, default=10.0, help="length of a sample")
    parser.add_argument("--gc", action="store_true", help="keep the garbage collector on")
    parser.add_argument(
        "--cpu-time",
        action="store_true",
        help="time with the thread's CPU time instead of wall time (for a busy machine)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help=f"write the results here (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--chart", type=Path, metavar="PATH", help=f"draw the chart here (default {DEFAULT_CHART})"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 rounds of 0.2 ms samples, no files unless --json/--chart: a smoke test",
    )
    parser.add_argument(
        "--only",
        metavar="PEER,...",
        help="measure resilient and these peers only (comma-separated names)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="PATH",
        help="a JSON of an earlier run: the issue-16 '<= 0.7x the baseline' lines read it",
    )
    parser.add_argument(
        "--no-contention",
        action="store_true",
        help="leave out the contended-bulkhead section (contention.py)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.sample_ms = 3, 0.2
    else:
        args.json = args.json or DEFAULT_JSON
        args.chart = args.chart or DEFAULT_CHART
    only = None if args.only is None else [name.strip() for name in args.only.split(",")]

    info = machine()
    print(
        f"Python {info['python']} ({info['implementation']}), {info['cpu']}, "
        f"nproc={info['nproc']}, load average {info['loadavg']}"
    )
    print(
        "versions:", ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    )
    print(f"source: {info['source']}")

    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    try:
        cases, notes = build(loop, only)
        runner = Runner(loop, keep_gc=args.gc, cpu_time=args.cpu_time)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # aiobreaker, on every call
            measure(cases, runner, args.rounds, args.sample_ms / 1e3)
    finally:
        loop.close()

    rows = summarize(cases)
    measured = round(time.perf_counter() - started, 1)
    print(
        f"\n{len(cases)} cases, {args.rounds} rounds, samples of ~{args.sample_ms:g} ms, "
        f"gc {'on' if args.gc else 'off'}, {'CPU' if args.cpu_time else 'wall'} time, "
        f"{measured:g} s\n"
    )
    print_table(rows)
    contended: list[dict[str, Any]] = []
    if not args.no_contention:
        import contention  # noqa: PLC0415 -- a section of its own, in its own module

        contention_rounds = 1 if args.quick else max(3, args.rounds // 5)
        print(
            f"\n## Contended bulkhead: time per call, {contention_rounds} alternating rounds, "
            f"{'CPU' if args.cpu_time else 'wall'} time decides (see contention.py)\n"
        )
        contended = contention.measure(
            quick=args.quick, rounds=contention_rounds, cpu_time=args.cpu_time
        )
        contention.print_rows(contended)
    info["loadavg_after"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    info["seconds"] = round(time.perf_counter() - started, 1)
    print()
    baseline = None
    if args.baseline is not None:
        baseline = json.loads(args.baseline.read_text())["results"]
    checks = targets(rows) + issue16(rows, baseline, contended)
    for label, ok, detail in checks:
        verdict = "skip" if ok is None else ("PASS" if ok else "FAIL")
        print(f"[{verdict}] {label}: {detail}")
    for note in notes:
        print(f"\nnote: {note}")
    if args.json is not None:
        payload = {
            "machine": info,
            "settings": {
                "rounds": args.rounds,
                "sample_ms": args.sample_ms,
                "gc": args.gc,
                "cpu_time": args.cpu_time,
                "only": only,
                "baseline": None if args.baseline is None else str(args.baseline),
            },
            "results": rows,
            "contention": contended,
            "targets": [{"target": t, "ok": ok, "detail": d} for t, ok, d in checks],
            "notes": notes,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.chart is not None:
        print(chart(rows, info, args.chart))
    return 0


if __name__ == "__main__":
    sys.exit(main())
