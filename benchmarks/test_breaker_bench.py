"""Per-call cost of a circuit breaker, next to a bare call and to peer libraries.

``python -m pytest benchmarks`` times every scenario (pytest-benchmark); CI runs
``python -m pytest benchmarks -q -p no:cacheprovider --benchmark-disable``, which runs each
benchmark once as a smoke test and asserts no timing. Each group holds the bare call and
the guarded ones side by side, so the overhead is a difference within one group. The
peers (``pip install -e '.[bench]'``) are skipped when not installed. ``peers.py`` in
this directory measures the same scenarios in one process, alternating implementations,
and prints the overhead table of ``docs/benchmarks.md``.

Every breaker uses its default options, except that a tripped breaker stays open for an
hour so that a long benchmark session can never see it half-open. Each guarded function
is warmed up first: resilient's default window holds 100 calls, and the first 100
successes take the locked path that fills it; the steady state is the lock-free one.

pybreaker is absent from the async groups: its decorator does not guard coroutine
functions (the wrapper returns the coroutine unawaited, so the call counts as a success
before it runs and exceptions raised on ``await`` are never recorded; see peers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from peers import OPEN_FOR, BoomError, aboom, aident, attempt, boom, ident
from resilient import CircuitBreaker, CircuitOpenError, CircuitState
from resilient.testing import ManualClock

# circuitbreaker calls asyncio.iscoroutinefunction, which Python 3.14 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:.*asyncio.iscoroutinefunction.*:DeprecationWarning")

WARMUP = 200

SYNC_CLOSED = ["bare", "resilient", "circuitbreaker", "pybreaker"]
SYNC_OPEN = ["bare-raise", "resilient", "resilient-forced", "circuitbreaker", "pybreaker"]
ASYNC_CLOSED = ["bare", "resilient", "circuitbreaker"]
ASYNC_OPEN = ["bare-raise", "resilient", "resilient-forced", "circuitbreaker"]
PLAIN = ["bare", "resilient"]


def _guard(impl: str, fn: Callable[..., Any], *, tripped: bool = False) -> Any:
    """Decorate ``fn`` with ``impl``'s breaker; return (wrapper, its rejection, breaker)."""
    if impl.startswith("resilient"):
        breaker = CircuitBreaker(open_duration=OPEN_FOR) if tripped else CircuitBreaker()
        if impl == "resilient-forced":
            breaker.force_open()
        return breaker(fn), CircuitOpenError, breaker
    if impl == "circuitbreaker":
        cb = pytest.importorskip("circuitbreaker")
        breaker = cb.CircuitBreaker(recovery_timeout=OPEN_FOR) if tripped else cb.CircuitBreaker()
        return breaker(fn), cb.CircuitBreakerError, breaker
    if impl == "pybreaker":
        pb = pytest.importorskip("pybreaker")
        breaker = pb.CircuitBreaker(reset_timeout=OPEN_FOR) if tripped else pb.CircuitBreaker()
        return breaker(fn), pb.CircuitBreakerError, breaker
    raise AssertionError(impl)


def _is_open(impl: str, breaker: Any) -> bool:
    if impl == "resilient":
        return bool(breaker.state is CircuitState.OPEN)
    if impl == "resilient-forced":
        return bool(breaker.state is CircuitState.FORCED_OPEN)
    if impl == "circuitbreaker":
        return bool(breaker.state == "open")
    return bool(breaker.current_state == "open")  # pybreaker


def _trip(fn: Callable[[int], Any], error: type[BaseException]) -> None:
    """Call the failing ``fn`` until the breaker rejects a call."""
    for _ in range(1_000):
        try:
            fn(1)
        except error:
            return
        except BoomError:
            continue
    raise AssertionError("the breaker never opened")


# -- sync ------------------------------------------------------------------------------


@pytest.mark.benchmark(group="sync call, CLOSED breaker")
@pytest.mark.parametrize("impl", SYNC_CLOSED)
def test_sync_closed(benchmark, impl: str) -> None:
    if impl == "bare":
        fn = ident
    else:
        fn, _, _ = _guard(impl, ident)
        for _ in range(WARMUP):
            fn(1)
    assert benchmark(fn, 1) == 1


@pytest.mark.benchmark(group="sync call, OPEN breaker (rejected)")
@pytest.mark.parametrize("impl", SYNC_OPEN)
def test_sync_open(benchmark, impl: str) -> None:
    if impl == "bare-raise":  # the floor of any rejection: raising and catching
        fn: Callable[[int], Any] = boom
        error: type[BaseException] = BoomError
        breaker = None
    else:
        fn, error, breaker = _guard(impl, boom, tripped=True)
        if impl != "resilient-forced":
            _trip(fn, error)
        assert _is_open(impl, breaker)

    assert benchmark(attempt, fn, error)
    if breaker is not None:
        assert _is_open(impl, breaker)


# -- async ---------------------------------------------------------------------------


@pytest.mark.benchmark(group="awaited call, CLOSED breaker")
@pytest.mark.parametrize("impl", ASYNC_CLOSED)
def test_async_closed(run_batch, impl: str) -> None:
    fn = aident if impl == "bare" else _guard(impl, aident)[0]
    assert run_batch(fn) == 1


@pytest.mark.benchmark(group="awaited call, OPEN breaker (rejected)")
@pytest.mark.parametrize("impl", ASYNC_OPEN)
def test_async_open(run_batch, impl: str) -> None:
    if impl == "bare-raise":
        fn: Callable[[int], Any] = aboom
        error: type[BaseException] = BoomError
        breaker = None
    else:
        fn, error, breaker = _guard(impl, aboom, tripped=True)
        if impl != "resilient-forced":
            asyncio.run(_atrip(fn, error))  # neither breaker binds to an event loop
        assert _is_open(impl, breaker)
    run_batch(fn, error)
    if breaker is not None:
        assert _is_open(impl, breaker)


async def _atrip(fn: Callable[[int], Any], error: type[BaseException]) -> None:
    for _ in range(1_000):
        try:
            await fn(1)
        except error:
            return
        except BoomError:
            continue
    raise AssertionError("the breaker never opened")


# -- HALF_OPEN -------------------------------------------------------------------------
#
# A breaker admits ``half_open_calls`` trials and decides once they have all finished.
# With 10 million trials it stays HALF_OPEN for the whole benchmark, so every measured
# call is an admitted trial (the half-open window is one byte per trial: 10 MB). The
# peers have no such state to stay in: circuitbreaker and pybreaker close on the first
# successful trial, so they have no rows here.

HALF_OPEN_TRIALS = 10_000_000


def _half_open(fn: Callable[..., Any]) -> tuple[Callable[..., Any], CircuitBreaker]:
    """``fn`` guarded by a breaker that is tripped, then moved to HALF_OPEN by a clock."""
    clock = ManualClock()
    breaker = CircuitBreaker(open_duration=1.0, half_open_calls=HALF_OPEN_TRIALS, clock=clock)
    for _ in range(1_000):
        if breaker.state is CircuitState.OPEN:
            break
        with contextlib.suppress(BoomError):
            breaker.call(boom, 1)
    assert breaker.state is CircuitState.OPEN
    clock.advance(1.0)  # the next call moves it to HALF_OPEN, as the first trial
    return breaker(fn), breaker


@pytest.mark.benchmark(group="sync call, HALF_OPEN breaker (admitted trial)")
@pytest.mark.parametrize("impl", PLAIN)
def test_sync_half_open(benchmark, impl: str) -> None:
    if impl == "bare":
        assert benchmark(ident, 1) == 1
        return
    fn, breaker = _half_open(ident)
    assert fn(1) == 1
    assert breaker.state is CircuitState.HALF_OPEN
    assert benchmark(fn, 1) == 1
    assert breaker.state is CircuitState.HALF_OPEN


@pytest.mark.benchmark(group="awaited call, HALF_OPEN breaker (admitted trial)")
@pytest.mark.parametrize("impl", PLAIN)
def test_async_half_open(run_batch, impl: str) -> None:
    if impl == "bare":
        assert run_batch(aident) == 1
        return
    fn, breaker = _half_open(aident)
    assert run_batch(fn) == 1
    assert breaker.state is CircuitState.HALF_OPEN
