"""Per-call cost of every policy alone, and of compositions, next to a bare call.

Same layout as ``test_breaker_bench.py``: each group holds the bare call and the guarded
ones side by side, so a policy's overhead is a difference within one group. Async
groups run batches of awaits (``conftest.py``): divide a round by its batch size. Tests
taking the ``run_batch`` fixture run once on asyncio and once on trio, each in a group
of its own.
``peers.py`` measures the same scenarios in one process, alternating
implementations, and prints the tables of ``docs/benchmarks.md``.

Rows named ``ref-...`` are references, not peers: the standard building block a policy
is made of or replaces (``asyncio.Semaphore`` for a bulkhead, ``asyncio.timeout`` for a
timeout), each in an ``async def`` wrapper, since a decorator adds that frame too.
Peer retry libraries (tenacity, a dependency; stamina and backoff, from the ``bench``
extra) are skipped through ``pytest.importorskip`` when not installed.

Every policy is built so that nothing but its fast path runs: a bulkhead with free
slots, a timeout of 10 s that never fires, a fallback whose function never fails, a
limiter with a rate so high that every call is admitted (or, to measure a rejection,
so low that after its burst of one every call is refused), a breaker warmed up past its
100-call window. After each benchmark the policy's metrics are checked to show that.
The contended bulkhead is measured twice: full (its only slot held for the whole
benchmark, so every call is rejected) and queued (bursts of concurrent callers, each
yielding once, for fewer slots than callers, so most callers wait their turn).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from peers import (
    HUGE_RATE,
    LONG,
    TINY_RATE,
    BoomError,
    aboom,
    aby_hand_twice,
    aflaky,
    aident,
    attempt,
    boom,
    by_hand_twice,
    fallback_value,
    flaky,
    ident,
)
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    Fallback,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    Retry,
    Timeout,
    compose,
)

# backoff calls asyncio.iscoroutinefunction, which Python 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*asyncio.iscoroutinefunction.*:DeprecationWarning")

WARMUP = 200

BULKHEAD = ["bare", "resilient", "ref-semaphore"]
TIMEOUT_ASYNCIO = ["bare", "resilient", "ref-asyncio-timeout", "ref-anyio-fail-after"]
TIMEOUT_TRIO = ["bare", "resilient", "ref-trio-fail-after"]
RETRY_FIRST = ["bare", "resilient", "tenacity", "stamina", "backoff"]
RETRY_ONCE = ["bare", "resilient", "tenacity"]
PLAIN = ["bare", "resilient"]
COMPOSED = ["bare", "compose", "stacked"]


def _warm(fn: Callable[[int], Any]) -> Callable[[int], Any]:
    for _ in range(WARMUP):
        assert fn(1) == 1
    return fn


# -- Bulkhead --------------------------------------------------------------------------


@pytest.mark.benchmark(group="bulkhead, sync call, uncontended")
@pytest.mark.parametrize("impl", BULKHEAD)
def test_bulkhead_sync(benchmark, impl: str) -> None:
    bulkhead = Bulkhead(10)
    if impl == "bare":
        fn: Callable[[int], Any] = ident
    elif impl == "resilient":
        fn = bulkhead(ident)
    else:
        sem = threading.BoundedSemaphore(10)

        def fn(x: int) -> int:
            with sem:
                return ident(x)

    assert benchmark(_warm(fn), 1) == 1
    assert bulkhead.metrics().in_flight == 0


@pytest.mark.benchmark(group="bulkhead, asyncio, 1000 awaits per round, uncontended")
@pytest.mark.parametrize("impl", BULKHEAD)
def test_bulkhead_asyncio(run_asyncio_batch, impl: str) -> None:
    bulkhead = Bulkhead(10)
    if impl == "bare":
        fn: Callable[[int], Awaitable[Any]] = aident
    elif impl == "resilient":
        fn = bulkhead(aident)
    else:
        sem = asyncio.Semaphore(10)

        async def fn(x: int) -> int:
            async with sem:
                return await aident(x)

    assert run_asyncio_batch(fn) == 1
    assert bulkhead.metrics().in_flight == 0


@pytest.mark.benchmark(group="bulkhead, trio, 10000 awaits per trio.run, uncontended")
@pytest.mark.parametrize("impl", BULKHEAD)
def test_bulkhead_trio(run_trio_batch, impl: str) -> None:
    trio = pytest.importorskip("trio")
    bulkhead = Bulkhead(10)
    if impl == "bare":
        fn: Callable[[int], Awaitable[Any]] = aident
    elif impl == "resilient":
        fn = bulkhead(aident)
    else:
        sem = trio.Semaphore(10)

        async def fn(x: int) -> int:
            async with sem:
                return await aident(x)

    assert run_trio_batch(fn) == 1
    assert bulkhead.metrics().in_flight == 0


@pytest.mark.benchmark(group="bulkhead, sync call, full (rejected)")
@pytest.mark.parametrize("impl", ["bare-raise", "resilient"])
def test_bulkhead_full_sync(benchmark, impl: str) -> None:
    bulkhead = Bulkhead(1)
    if impl == "bare-raise":  # the floor of any rejection: raising and catching
        fn: Callable[[int], Any] = boom
        error: type[BaseException] = BoomError
    else:
        fn, error = bulkhead(ident), BulkheadFullError

    with bulkhead:  # the one slot, held by "another caller" for the whole benchmark
        assert benchmark(attempt, fn, error)
    metrics = bulkhead.metrics()
    assert metrics.in_flight == 0
    assert (metrics.rejected > 0) is (impl == "resilient")


@pytest.mark.benchmark(group="bulkhead, awaited call, full (rejected)")
@pytest.mark.parametrize("impl", ["bare-raise", "resilient"])
def test_bulkhead_full_async(run_batch, impl: str) -> None:
    bulkhead = Bulkhead(1)
    if impl == "bare-raise":
        run_batch(aboom, BoomError)
        return
    with bulkhead:  # a sync holder is a holder for async callers too
        run_batch(bulkhead(aident), BulkheadFullError)
    assert bulkhead.metrics().in_flight == 0


BURST = 8  # concurrent callers per burst in the contended bulkhead benchmark


def _burst(fn: Callable[[int], Awaitable[Any]]) -> Callable[[int], Awaitable[Any]]:
    """One "call" that runs ``BURST`` concurrent calls of ``fn`` in an anyio task group."""
    import anyio  # noqa: PLC0415 -- a dependency of resilient, imported where used

    async def burst(x: int) -> int:
        async with anyio.create_task_group() as tg:
            for _ in range(BURST):
                tg.start_soon(fn, x)
        return x

    return burst


async def ayield(x: int) -> int:
    """A call that lets the other tasks run once, as a real I/O call would."""
    import anyio.lowlevel  # noqa: PLC0415 -- a dependency of resilient, imported where used

    await anyio.lowlevel.checkpoint()
    return x


@pytest.mark.benchmark(
    group=f"bulkhead, awaited call, contended: bursts of {BURST} callers for 2 slots, "
    "max_wait=10 s (divide by the burst size)"
)
@pytest.mark.parametrize("impl", ["bare", "resilient"])
def test_bulkhead_contended_async(run_batch, impl: str) -> None:
    bulkhead = Bulkhead(2, max_wait=LONG)
    fn = ayield if impl == "bare" else bulkhead(ayield)
    assert run_batch(_burst(fn), n=100) == 1
    metrics = bulkhead.metrics()
    assert metrics.in_flight == metrics.waiting == metrics.rejected == 0
    assert metrics.max_observed == (0 if impl == "bare" else 2)


# -- Timeout ---------------------------------------------------------------------------


@pytest.mark.benchmark(group="timeout, sync call (runs in a worker thread)")
@pytest.mark.parametrize("impl", PLAIN)
def test_timeout_sync(benchmark, impl: str) -> None:
    timeout = Timeout(LONG)
    fn = ident if impl == "bare" else timeout(ident)
    assert benchmark(_warm(fn), 1) == 1
    assert timeout.metrics().timeouts == 0


@pytest.mark.benchmark(group="timeout, asyncio, 1000 awaits per round")
@pytest.mark.parametrize("impl", TIMEOUT_ASYNCIO)
def test_timeout_asyncio(run_asyncio_batch, impl: str) -> None:
    timeout = Timeout(LONG)
    if impl == "bare":
        fn: Callable[[int], Awaitable[Any]] = aident
    elif impl == "resilient":
        fn = timeout(aident)
    elif impl == "ref-asyncio-timeout":
        if not hasattr(asyncio, "timeout"):
            pytest.skip("asyncio.timeout needs Python 3.11")

        async def fn(x: int) -> int:
            async with asyncio.timeout(LONG):  # type: ignore[attr-defined]
                return await aident(x)

    else:
        import anyio  # noqa: PLC0415 -- a dependency of resilient, imported where used

        async def fn(x: int) -> int:
            with anyio.fail_after(LONG):
                return await aident(x)

    assert run_asyncio_batch(fn) == 1
    assert timeout.metrics().timeouts == 0


@pytest.mark.benchmark(group="timeout, trio, 10000 awaits per trio.run")
@pytest.mark.parametrize("impl", TIMEOUT_TRIO)
def test_timeout_trio(run_trio_batch, impl: str) -> None:
    trio = pytest.importorskip("trio")
    timeout = Timeout(LONG)
    if impl == "bare":
        fn: Callable[[int], Awaitable[Any]] = aident
    elif impl == "resilient":
        fn = timeout(aident)
    else:

        async def fn(x: int) -> int:
            with trio.fail_after(LONG):
                return await aident(x)

    assert run_trio_batch(fn) == 1
    assert timeout.metrics().timeouts == 0


# -- Fallback --------------------------------------------------------------------------


@pytest.mark.benchmark(group="fallback, sync call, no failure")
@pytest.mark.parametrize("impl", PLAIN)
def test_fallback_sync(benchmark, impl: str) -> None:
    fallback = Fallback(fallback_value)
    fn = ident if impl == "bare" else fallback(ident)
    assert benchmark(_warm(fn), 1) == 1
    assert fallback.used == 0


@pytest.mark.benchmark(group="fallback, awaited call, no failure")
@pytest.mark.parametrize("impl", PLAIN)
def test_fallback_async(run_batch, impl: str) -> None:
    fallback = Fallback(fallback_value)
    fn = aident if impl == "bare" else fallback(aident)
    assert run_batch(fn) == 1
    assert fallback.used == 0


# -- Retry -----------------------------------------------------------------------------


def _retrying(impl: str, fn: Callable[..., Any]) -> tuple[Any, Retry | None]:
    """``fn`` under ``impl``'s retry, 3 attempts, default waits; and resilient's policy."""
    if impl == "resilient":
        retry = Retry(3)
        return retry(fn), retry
    if impl == "tenacity":
        tenacity = pytest.importorskip("tenacity")
        return tenacity.retry(stop=tenacity.stop_after_attempt(3))(fn), None
    if impl == "stamina":
        stamina = pytest.importorskip("stamina")
        return stamina.retry(on=Exception, attempts=3)(fn), None
    if impl == "backoff":
        backoff = pytest.importorskip("backoff")
        return backoff.on_exception(backoff.expo, Exception, max_tries=3)(fn), None
    raise AssertionError(impl)


@pytest.mark.benchmark(group="retry, sync call, first attempt succeeds")
@pytest.mark.parametrize("impl", RETRY_FIRST)
def test_retry_first_success_sync(benchmark, impl: str) -> None:
    fn, retry = (ident, None) if impl == "bare" else _retrying(impl, ident)
    assert benchmark(_warm(fn), 1) == 1
    if retry is not None:
        assert retry.metrics().retries == 0


@pytest.mark.benchmark(group="retry, awaited call, first attempt succeeds")
@pytest.mark.parametrize("impl", RETRY_FIRST)
def test_retry_first_success_async(run_batch, impl: str) -> None:
    fn, retry = (aident, None) if impl == "bare" else _retrying(impl, aident)
    assert run_batch(fn) == 1
    if retry is not None:
        assert retry.metrics().retries == 0


def _retry_once(impl: str, fn: Callable[..., Any]) -> tuple[Any, Retry | None]:
    """``fn`` under ``impl``'s retry, 3 attempts, no wait; and resilient's policy."""
    if impl == "resilient":
        retry = Retry(3, wait=0)
        return retry(fn), retry
    tenacity = pytest.importorskip("tenacity")
    return tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(fn), None


def _check_retried_once(retry: Retry | None) -> None:
    if retry is not None:
        metrics = retry.metrics()
        assert metrics.retries == metrics.recovered > 0
        assert metrics.exhausted == 0


@pytest.mark.benchmark(group="retry, sync call, one retry (fails once), zero wait")
@pytest.mark.parametrize("impl", RETRY_ONCE)
def test_retry_once_sync(benchmark, impl: str) -> None:
    # The bare row is the floor: two attempts and one caught exception, by hand.
    fn, retry = (by_hand_twice(flaky()), None) if impl == "bare" else _retry_once(impl, flaky())
    assert benchmark(_warm(fn), 1) == 1
    _check_retried_once(retry)


@pytest.mark.benchmark(group="retry, awaited call, one retry (fails once), zero wait")
@pytest.mark.parametrize("impl", RETRY_ONCE)
def test_retry_once_async(run_batch, impl: str) -> None:
    bare = impl == "bare"
    fn, retry = (aby_hand_twice(aflaky()), None) if bare else _retry_once(impl, aflaky())
    assert run_batch(fn) == 1
    _check_retried_once(retry)


# -- RateLimiter -----------------------------------------------------------------------


@pytest.mark.benchmark(group="rate limiter, sync call, admitted")
@pytest.mark.parametrize("impl", PLAIN)
def test_ratelimiter_admit_sync(benchmark, impl: str) -> None:
    limiter = RateLimiter(HUGE_RATE)
    fn = ident if impl == "bare" else limiter(ident)
    assert benchmark(_warm(fn), 1) == 1
    assert limiter.metrics().rejected == 0


@pytest.mark.benchmark(group="rate limiter, awaited call, admitted")
@pytest.mark.parametrize("impl", PLAIN)
def test_ratelimiter_admit_async(run_batch, impl: str) -> None:
    limiter = RateLimiter(HUGE_RATE)
    fn = aident if impl == "bare" else limiter(aident)
    assert run_batch(fn) == 1
    assert limiter.metrics().rejected == 0


@pytest.mark.benchmark(group="rate limiter, sync call, rejected")
@pytest.mark.parametrize("impl", ["bare-raise", "resilient"])
def test_ratelimiter_reject_sync(benchmark, impl: str) -> None:
    limiter = RateLimiter(TINY_RATE, burst=1)
    if impl == "bare-raise":  # the floor of any rejection: raising and catching
        fn: Callable[[int], Any] = boom
        error: type[BaseException] = BoomError
    else:
        fn, error = limiter(ident), RateLimitedError
        assert fn(1) == 1  # the burst of one, used up

    assert benchmark(attempt, fn, error)
    if impl == "resilient":
        metrics = limiter.metrics()
        assert metrics.admitted == 1
        assert metrics.rejected >= 1


@pytest.mark.benchmark(group="rate limiter, awaited call, rejected")
@pytest.mark.parametrize("impl", ["bare-raise", "resilient"])
def test_ratelimiter_reject_async(run_batch, impl: str) -> None:
    if impl == "bare-raise":
        run_batch(aboom, BoomError)
        return
    limiter = RateLimiter(TINY_RATE, burst=1)
    fn = limiter(aident)
    assert limiter(ident)(1) == 1  # the burst of one, used up (one limiter for both)
    run_batch(fn, RateLimitedError)
    assert limiter.metrics().admitted == 1


@pytest.mark.benchmark(group="keyed rate limiter, sync call, admitted")
@pytest.mark.parametrize("impl", PLAIN)
def test_keyed_ratelimiter_admit_sync(benchmark, impl: str) -> None:
    limiter = KeyedRateLimiter(HUGE_RATE, key=lambda x: x)
    fn = ident if impl == "bare" else limiter(ident)
    assert benchmark(_warm(fn), 1) == 1
    assert limiter.metrics().rejected == 0


# -- compositions ----------------------------------------------------------------------


def _policies(*, timeout: bool) -> list[Any]:
    """Fresh Fallback, CircuitBreaker, (Timeout,) Bulkhead: the recommended order."""
    policies: list[Any] = [Fallback(fallback_value), CircuitBreaker()]
    if timeout:
        policies.append(Timeout(LONG))
    policies.append(Bulkhead(10))
    return policies


def _composed(impl: str, fn: Callable[..., Any], *, timeout: bool) -> tuple[Any, list[Any]]:
    """``fn`` under ``compose(...)`` or under the same policies as stacked decorators."""
    if impl == "bare":
        return fn, []
    policies = _policies(timeout=timeout)
    if impl == "compose":
        return compose(*policies)(fn), policies
    for policy in reversed(policies):  # innermost first, as decorators apply
        fn = policy(fn)
    return fn, policies


def _check_untouched(policies: list[Any]) -> None:
    """Only fast paths ran: no fallback, no breaker trip, no timeout, no slot leak."""
    for policy in policies:
        if isinstance(policy, Fallback):
            assert policy.used == 0
        elif isinstance(policy, CircuitBreaker):
            assert policy.metrics().failed_calls == 0
        elif isinstance(policy, Timeout):
            assert policy.metrics().timeouts == 0
        elif isinstance(policy, Bulkhead):
            assert policy.metrics().in_flight == 0


@pytest.mark.benchmark(group="compose(Fallback, CircuitBreaker, Bulkhead), sync call")
@pytest.mark.parametrize("impl", COMPOSED)
def test_compose3_sync(benchmark, impl: str) -> None:
    fn, policies = _composed(impl, ident, timeout=False)
    assert benchmark(_warm(fn), 1) == 1
    _check_untouched(policies)


@pytest.mark.benchmark(
    group="compose(Fallback, CircuitBreaker, Timeout, Bulkhead), sync call "
    "(the Timeout runs it in a worker thread)"
)
@pytest.mark.parametrize("impl", COMPOSED)
def test_compose4_sync(benchmark, impl: str) -> None:
    fn, policies = _composed(impl, ident, timeout=True)
    assert benchmark(_warm(fn), 1) == 1
    _check_untouched(policies)


@pytest.mark.benchmark(group="compose(Fallback, CircuitBreaker, Timeout, Bulkhead), awaited call")
@pytest.mark.parametrize("impl", COMPOSED)
def test_compose4_async(run_batch, impl: str) -> None:
    fn, policies = _composed(impl, aident, timeout=True)
    assert run_batch(fn) == 1
    _check_untouched(policies)


# Two-step chains: where compose() has the least to save (one frame), and so where it
# is likeliest to lose to the stacked policies' own inlined guards.
PAIRS: dict[str, Callable[[], list[Any]]] = {
    "CircuitBreaker, Bulkhead": lambda: [CircuitBreaker(), Bulkhead(10)],
    "Bulkhead, CircuitBreaker": lambda: [Bulkhead(10), CircuitBreaker()],
    "Fallback, CircuitBreaker": lambda: [Fallback(fallback_value), CircuitBreaker()],
    "CircuitBreaker, RateLimiter": lambda: [CircuitBreaker(), RateLimiter(HUGE_RATE)],
}


def _pair(impl: str, chain: str, fn: Callable[..., Any]) -> tuple[Any, list[Any]]:
    if impl == "bare":
        return fn, []
    policies = PAIRS[chain]()
    if impl == "compose":
        return compose(*policies)(fn), policies
    for policy in reversed(policies):
        fn = policy(fn)
    return fn, policies


@pytest.mark.parametrize("impl", COMPOSED)
@pytest.mark.parametrize("chain", list(PAIRS))
def test_compose2_sync(benchmark, chain: str, impl: str) -> None:
    benchmark.group = f"compose({chain}), sync call"
    fn, policies = _pair(impl, chain, ident)
    assert benchmark(_warm(fn), 1) == 1
    _check_untouched(policies)


@pytest.mark.parametrize("impl", COMPOSED)
@pytest.mark.parametrize("chain", list(PAIRS))
def test_compose2_async(benchmark, run_asyncio_batch, chain: str, impl: str) -> None:
    benchmark.group = f"compose({chain}), asyncio, 1000 awaits per round"
    fn, policies = _pair(impl, chain, aident)
    assert run_asyncio_batch(fn) == 1
    _check_untouched(policies)
