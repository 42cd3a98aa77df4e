"""The Python rate limiters in ``peers.py``'s comparison, in its four rate-limiter scenarios.

Every limiter is configured like resilient's rows: the admitted rows at 10^9 calls per
second with a burst as large (so no call is ever refused), the rejected rows at one call
per 10^6 seconds (about 11.6 days) with a burst of one, used up before the run, so that
every call is refused. Each rejected row is first checked to admit its first call and to
refuse the next, which shows the guarded call goes through the limiter.

Libraries that only answer whether a call may pass (``limits``' ``hit()``,
``pyrate-limiter``'s non-blocking ``try_acquire()``, ``token-bucket``'s ``consume()``,
``aiolimiter``'s ``has_capacity()``) are used in the wrapper a user writes around them:
``if not admit(): raise Refused`` then the call. Where the library has a decorator that
refuses (``throttled-py``), it is used as is; ``pyrate-limiter``'s and ``limiter``'s
decorators wait for their slot instead of refusing, so they appear in the admitted rows
only (``pyrate-limiter``'s rejected rows use ``try_acquire(blocking=False)``; ``limiter``
has no way to refuse a call and no rejected rows).

What each one is (read from their sources, for the "thread-safe and exact" comparison):

* ``limits`` (in-memory storage; sync and ``limits.aio``): the moving window keeps one
  timestamp per admitted call for the window's length, inserted at the head of a list
  under a per-key ``RLock`` (exact, thread-safe; its admitted cost grows with the calls of
  the last second, here those of the sample itself); the fixed window is a counter under
  that lock, which admits up to twice the rate across a window's edge (not exact). The
  sync storage starts a ``threading.Timer`` every 10 ms of use to expire entries.
* ``pyrate-limiter``: a ``Limiter`` (an ``RLock``; an ``asyncio.Lock`` per thread for
  awaited calls) over either its constant-state GCRA bucket or its default in-memory
  sliding-window log (one entry per call, trimmed by a background leaker thread). Both
  exact and thread-safe. GCRA's state is in whole microseconds, so 10^9/s runs as 10^6/s
  with the same burst (still never refusing here).
* ``throttled-py``: ``Throttled`` with its in-memory store (a ``threading.Lock``; the
  asyncio flavour an ``asyncio.Lock``), GCRA and token bucket. Exact, thread-safe (sync).
* ``limiter``: a decorator over ``token-bucket``, that waits (sleeps) for a token.
* ``aiolimiter``: asyncio only; a leaky bucket bound to one event loop, no lock (exact on
  one loop, not thread-safe).
* ``token-bucket``: no lock; its docstring says races are "mitigated but not completely
  eliminated" (not exact under threads).

hyx's asyncio token bucket (in ``peers.py``) has no lock either: not thread-safe.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from functools import partial
from typing import Any

from peers import (
    HUGE_RATE,
    RATE_ASYNC,
    RATE_REJECT_ASYNC,
    RATE_REJECT_SYNC,
    RATE_SYNC,
    REJECTING,
    TINY_RATE,
    Case,
    aident,
    ident,
    pick,
)

LIMITER_SCENARIOS = (RATE_SYNC, RATE_ASYNC, RATE_REJECT_SYNC, RATE_REJECT_ASYNC)
SYNC_SCENARIOS = (RATE_SYNC, RATE_REJECT_SYNC)
BIG = int(HUGE_RATE)
PERIOD = 1 / TINY_RATE  # seconds per call in the rejected rows

# Rate limiters in the sync rows that are thread-safe and exact; the target "the cheapest
# thread-safe exact limiter" is read against these (and pyresilience's and nopanic's).
THREAD_SAFE_EXACT = (
    "pyresilience",
    "nopanic",
    "limits (moving window)",
    "pyrate-limiter (GCRA)",
    "pyrate-limiter (sliding log)",
    "throttled-py (GCRA)",
    "throttled-py (token bucket)",
)


class RefusedError(Exception):
    """What a user's wrapper raises when a limiter that only answers yes or no says no."""


def gate(admit: Callable[[], bool], fn: Callable[[int], int]) -> Callable[[int], int]:
    """``fn`` behind a limiter that answers synchronously whether a call may pass."""

    def guarded(x: int) -> int:
        if not admit():
            raise RefusedError
        return fn(x)

    return guarded


def agate(admit: Callable[[], bool], fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """``gate`` for a coroutine function (the limiter still answers synchronously)."""

    async def guarded(x: int) -> int:
        if not admit():
            raise RefusedError
        return await fn(x)

    return guarded


def aagate(admit: Callable[[], Any], fn: Callable[[int], Any]) -> Callable[[int], Any]:
    """``gate`` for a coroutine function behind a limiter whose answer is awaited."""

    async def guarded(x: int) -> int:
        if not await admit():
            raise RefusedError
        return await fn(x)

    return guarded


def limiter_cases(
    library: str,
    loop: asyncio.AbstractEventLoop,
    make: Callable[[str, bool], Any],
    error: type[BaseException] = RefusedError,
    scenarios: tuple[str, ...] = LIMITER_SCENARIOS,
) -> list[Case]:
    """A limiter's rows: ``make(scenario, admit_all)`` returns the guarded ``fn(x)``.

    A rejected row's limiter must admit its first call (the burst of one) and refuse the
    next (checked again by ``peers.check_case`` before timing).
    """
    cases = []
    for scenario in scenarios:
        rejecting = scenario in REJECTING
        fn = make(scenario, not rejecting)
        if rejecting:
            first = fn(1)
            if asyncio.iscoroutine(first):
                first = loop.run_until_complete(first)
            assert first == 1, f"{library} refused the first call of its burst of one"
            cases.append(Case(scenario, library, fn, error))
        else:
            cases.append(Case(scenario, library, fn))
    return cases


def _limits(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import limits  # noqa: PLC0415 -- an optional peer
    import limits.aio.storage  # noqa: PLC0415
    import limits.aio.strategies  # noqa: PLC0415
    import limits.storage  # noqa: PLC0415
    import limits.strategies  # noqa: PLC0415

    def item(admit_all: bool) -> Any:
        days = round(PERIOD / 86_400)  # about 11.6 days: 12
        return (
            limits.RateLimitItemPerSecond(BIG) if admit_all else limits.RateLimitItemPerDay(1, days)
        )

    def make(window: str) -> Callable[[str, bool], Any]:
        def made(scenario: str, admit_all: bool) -> Any:
            if scenario in SYNC_SCENARIOS:
                strategy = getattr(limits.strategies, window)(limits.storage.MemoryStorage())
                return gate(partial(strategy.hit, item(admit_all)), ident)
            storage = limits.aio.storage.MemoryStorage()
            strategy = getattr(limits.aio.strategies, window)(storage)
            return aagate(partial(strategy.hit, item(admit_all)), aident)

        return made

    return limiter_cases(
        "limits (moving window)", loop, make("MovingWindowRateLimiter")
    ) + limiter_cases("limits (fixed window)", loop, make("FixedWindowRateLimiter"))


def _pyrate_limiter(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import pyrate_limiter as pr  # noqa: PLC0415 -- an optional peer

    def rate(admit_all: bool) -> Any:
        if admit_all:
            return pr.Rate(BIG, pr.Duration.SECOND, burst=BIG)
        return pr.Rate(1, int(PERIOD * 1000), burst=1)

    def make(kind: str) -> Callable[[str, bool], Any]:
        def made(scenario: str, admit_all: bool) -> Any:
            if kind == "GCRA":
                bucket = pr.StateBucket([rate(admit_all)], pr.GCRA())
            else:
                bucket = pr.InMemoryBucket([rate(admit_all)])
            limiter = pr.Limiter(bucket)
            fn = pick(scenario, ident, aident)
            if admit_all:  # its decorator waits for a slot: it never refuses
                return limiter.as_decorator(name="bench")(fn)
            if scenario in SYNC_SCENARIOS:
                return gate(partial(limiter.try_acquire, "bench", blocking=False), fn)
            return aagate(partial(limiter.try_acquire_async, "bench", blocking=False), fn)

        return made

    # The admitted rows use its decorator, which waits rather than refuse: check that a
    # decorated call takes the burst of one (a non-blocking try after it is refused).
    for fn in (ident, aident):
        probe = pr.Limiter(pr.StateBucket([rate(admit_all=False)], pr.GCRA()))
        first = probe.as_decorator(name="bench")(fn)(1)
        if asyncio.iscoroutine(first):
            first = loop.run_until_complete(first)
        assert first == 1, "pyrate-limiter's decorator changed the result"
        assert probe.try_acquire("bench", blocking=False) is False, "its decorator took no slot"
    return limiter_cases("pyrate-limiter (GCRA)", loop, make("GCRA")) + limiter_cases(
        "pyrate-limiter (sliding log)", loop, make("log")
    )


def _throttled(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import throttled  # noqa: PLC0415 -- an optional peer
    import throttled.asyncio  # noqa: PLC0415

    def quota(admit_all: bool) -> Any:
        if admit_all:
            return throttled.per_sec(BIG, burst=BIG)
        return throttled.per_duration(datetime.timedelta(seconds=PERIOD), 1, burst=1)

    def make(using: str) -> Callable[[str, bool], Any]:
        def made(scenario: str, admit_all: bool) -> Any:
            flavour = throttled if scenario in SYNC_SCENARIOS else throttled.asyncio
            decorator = flavour.Throttled(
                key="bench", using=using, quota=quota(admit_all), store=flavour.MemoryStore()
            )
            return decorator(pick(scenario, ident, aident))

        return made

    error = throttled.exceptions.LimitedError
    return limiter_cases("throttled-py (GCRA)", loop, make("gcra"), error) + limiter_cases(
        "throttled-py (token bucket)", loop, make("token_bucket"), error
    )


def _limiter(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import limiter  # noqa: PLC0415 -- an optional peer

    # It waits for a token and never refuses: check that a call takes one.
    probe = limiter.Limiter(rate=TINY_RATE, capacity=1)
    probe(ident)(1)
    tokens = probe.limiter._storage.get_token_count(b"default")
    assert tokens < 1, f"limiter left {tokens} tokens after a call with a capacity of one"

    def made(scenario: str, admit_all: bool) -> Any:
        return limiter.Limiter(rate=HUGE_RATE, capacity=BIG)(pick(scenario, ident, aident))

    return limiter_cases("limiter", loop, made, scenarios=(RATE_SYNC, RATE_ASYNC))


def _aiolimiter(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import aiolimiter  # noqa: PLC0415 -- an optional peer

    def made(scenario: str, admit_all: bool) -> Any:
        if admit_all:
            bucket = aiolimiter.AsyncLimiter(HUGE_RATE, 1.0)

            async def admitted(x: int) -> int:
                async with bucket:
                    return await aident(x)

            return admitted
        bucket = aiolimiter.AsyncLimiter(1, PERIOD)

        async def checked(x: int) -> int:  # has_capacity() is its non-blocking check
            if not bucket.has_capacity():
                raise RefusedError
            async with bucket:
                return await aident(x)

        return checked

    return limiter_cases("aiolimiter", loop, made, scenarios=(RATE_ASYNC, RATE_REJECT_ASYNC))


def _token_bucket(loop: asyncio.AbstractEventLoop) -> list[Case]:
    import token_bucket  # noqa: PLC0415 -- an optional peer

    def made(scenario: str, admit_all: bool) -> Any:
        if admit_all:
            bucket = token_bucket.Limiter(HUGE_RATE, BIG, token_bucket.MemoryStorage())
        else:
            bucket = token_bucket.Limiter(TINY_RATE, 1, token_bucket.MemoryStorage())
        admit = partial(bucket.consume, b"bench")
        if scenario in SYNC_SCENARIOS:
            return gate(admit, ident)
        return agate(admit, aident)

    return limiter_cases("token-bucket", loop, made)


BUILDERS: tuple[tuple[str, Callable[[asyncio.AbstractEventLoop], list[Case]]], ...] = (
    ("limits", _limits),
    ("pyrate-limiter", _pyrate_limiter),
    ("throttled-py", _throttled),
    ("limiter", _limiter),
    ("aiolimiter", _aiolimiter),
    ("token-bucket", _token_bucket),
)
