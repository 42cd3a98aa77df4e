"""Regression tests for bugs found in the Python circuit breakers we compare against.

Each test names the peer whose bug it guards against and runs the scenario on our
breaker. Waits are bounded by timeouts so that a regression fails instead of hanging.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilient import (
    CallFailed,
    CallSucceeded,
    CircuitBreaker,
    CircuitBreakerMetrics,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Event,
    MonotonicClock,
    StateTransition,
)
from resilient.testing import ManualClock


def windowed(metrics: CircuitBreakerMetrics) -> CircuitBreakerMetrics:
    """The metrics of the current window only (the totals since creation zeroed)."""
    return dataclasses.replace(
        metrics,
        total_successful_calls=0,
        total_failed_calls=0,
        total_ignored_calls=0,
        total_not_permitted_calls=0,
    )


WAIT = 10.0  # bound on every wait: reached only when something is broken
OPEN_DURATION = 30.0


class Boom(Exception):
    """The user's own failure."""


def fail() -> None:
    raise Boom


def succeed() -> str:
    return "ok"


def listen(breaker: CircuitBreaker) -> list[Event]:
    events: list[Event] = []
    breaker.add_listener(events.append)
    return events


def make_breaker(clock: ManualClock, **options: Any) -> CircuitBreaker:
    """A breaker that opens after 4 calls at >= 50 % failures, timed by ``clock``."""
    options.setdefault("half_open_calls", 1)
    return CircuitBreaker(
        "peer",
        window=CountWindow(4),
        minimum_calls=4,
        failure_rate_threshold=0.5,
        open_duration=OPEN_DURATION,
        clock=clock,
        **options,
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(4):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.state is CircuitState.OPEN


def tb_depth(exc: BaseException) -> int:
    depth = 0
    tb = exc.__traceback__
    while tb is not None:
        depth += 1
        tb = tb.tb_next
    return depth


# -- purgatory: one exception instance re-raised, its traceback growing without bound --


def test_purgatory_each_rejection_is_a_fresh_error_with_a_short_traceback() -> None:
    """Guards against purgatory's bug: it re-raises one instance, whose traceback grows."""
    breaker = make_breaker(ManualClock())
    trip(breaker)
    rejections: list[CircuitOpenError] = []
    for _ in range(100):
        try:
            breaker.call(succeed)
        except CircuitOpenError as exc:
            rejections.append(exc)

    assert len(rejections) == 100
    assert len({id(exc) for exc in rejections}) == 100  # all alive: ids are distinct
    first, last = rejections[0], rejections[-1]
    assert tb_depth(last) == tb_depth(first) <= 8
    assert len(traceback.format_exception(last)) == len(traceback.format_exception(first))
    assert len(traceback.format_exception(last)) <= 20
    for exc in rejections:
        assert exc.__cause__ is None
        assert exc.__context__ is None
        assert exc.retry_after == OPEN_DURATION
    assert breaker.metrics().not_permitted_calls == 100


async def test_purgatory_each_async_rejection_is_a_fresh_error_with_a_short_traceback() -> None:
    """Guards against purgatory's bug (async side): one instance re-raised, traceback grows."""
    breaker = make_breaker(ManualClock())
    trip(breaker)

    @breaker
    async def work() -> str:
        return "ok"

    rejections: list[CircuitOpenError] = []
    for _ in range(100):
        try:
            await work()
        except CircuitOpenError as exc:
            rejections.append(exc)

    assert len({id(exc) for exc in rejections}) == 100
    depths = {tb_depth(exc) for exc in rejections}
    assert len(depths) == 1
    assert depths.pop() <= 8
    lengths = {len(traceback.format_exception(exc)) for exc in rejections}
    assert len(lengths) == 1
    assert lengths.pop() <= 20


# -- pybreaker: a lock held across the user's call serialises every caller --------------


def run_in_threads(
    n: int, target: Callable[[], object]
) -> tuple[list[object], list[BaseException]]:
    """Run ``target`` in ``n`` threads started together; return results and errors."""
    start = threading.Barrier(n)
    results: list[object] = []
    errors: list[BaseException] = []

    def main() -> None:
        try:
            start.wait(timeout=WAIT)
            results.append(target())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=main, daemon=True) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * WAIT)
    assert not any(thread.is_alive() for thread in threads), "a caller hung"
    return results, errors


@pytest.mark.parametrize("state", ["closed", "half_open", "metrics_only", "timed", "listened"])
def test_pybreaker_no_lock_is_held_across_the_users_call(state: str) -> None:
    """Guards against pybreaker's bug: its lock is held across the call, serialising callers."""
    clock = ManualClock()
    options: dict[str, Any] = {"half_open_calls": 8}
    if state == "timed":
        options["slow_call_duration"] = 5.0
    breaker = make_breaker(clock, **options)
    if state == "half_open":
        trip(breaker)
        clock.advance(OPEN_DURATION)
    elif state == "metrics_only":
        breaker.metrics_only()
    elif state == "listened":
        listen(breaker)
    inside = threading.Barrier(8)

    def meet_the_others() -> str:
        # Passes only if all 8 callers are inside the breaker at the same time.
        inside.wait(timeout=5.0)
        return "met"

    results, errors = run_in_threads(8, lambda: breaker.call(meet_the_others))
    assert errors == []
    assert results == ["met"] * 8
    if state == "half_open":
        assert breaker.state is CircuitState.CLOSED  # 8 successful trials decided
    else:
        assert breaker.metrics().calls == 4  # the window holds the last 4


def test_pybreaker_listener_may_call_back_into_the_breaker() -> None:
    """Guards against pybreaker's bug: listeners run under its lock, so re-entry deadlocks."""
    clock = ManualClock()
    breaker = make_breaker(clock)
    seen: list[tuple[str, CircuitState]] = []

    def reentrant(event: Event) -> None:
        # Every read takes the breaker's lock (or may): it must not be held here.
        seen.append((type(event).__name__, breaker.metrics().state))
        _ = breaker.retry_after, breaker.state

    breaker.add_listener(reentrant)

    def scenario() -> str:
        trip(breaker)
        with pytest.raises(CircuitOpenError):
            breaker.call(succeed)
        clock.advance(OPEN_DURATION)
        return breaker.call(succeed)

    results, errors = run_in_threads(1, scenario)
    assert errors == []
    assert results == ["ok"]
    assert breaker.state is CircuitState.CLOSED
    assert breaker.listener_errors == 0
    assert ("StateTransition", CircuitState.OPEN) in seen
    assert ("CallRejected", CircuitState.OPEN) in seen


# -- pybreaker: `async def` functions wrapped as sync ones are not protected at all ------


async def test_pybreaker_async_function_is_rejected_when_open_and_its_failures_count() -> None:
    """Guards against pybreaker's bug: a decorated `async def` is never really protected."""
    breaker = make_breaker(ManualClock())
    ran = 0

    @breaker
    async def flaky(should_fail: bool) -> str:
        nonlocal ran
        ran += 1
        await anyio.lowlevel.checkpoint()  # the failure happens after a suspension
        if should_fail:
            raise Boom
        return "ok"

    assert inspect.iscoroutinefunction(flaky)
    assert await flaky(False) == "ok"
    for _ in range(3):
        with pytest.raises(Boom):
            await flaky(True)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (4, 3)  # failures were counted ...
    assert breaker.state is CircuitState.OPEN  # ... and opened the breaker

    with pytest.raises(CircuitOpenError):
        await flaky(False)
    assert ran == 4  # the rejected call never started the coroutine's body


async def test_pybreaker_async_method_and_call_async_are_protected() -> None:
    """Guards against pybreaker's bug, for async methods and `call_async`."""
    breaker = make_breaker(ManualClock())

    class Client:
        def __init__(self) -> None:
            self.ran = 0

        @breaker
        async def get(self) -> str:
            self.ran += 1
            await anyio.lowlevel.checkpoint()
            raise Boom

    client = Client()
    for _ in range(2):
        with pytest.raises(Boom):
            await client.get()

    async def broken() -> None:
        await anyio.lowlevel.checkpoint()
        raise Boom

    for _ in range(2):
        with pytest.raises(Boom):
            await breaker.call_async(broken)
    assert breaker.metrics().failed_calls == 4
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await client.get()
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(broken)
    assert client.ran == 2


# -- circuitbreaker 2.1: a slow call admitted while CLOSED closes an OPEN breaker --------


class HeldCall:
    """A call admitted now through ``breaker`` in a thread, held until :meth:`finish`."""

    def __init__(self, breaker: CircuitBreaker, *, succeed: bool) -> None:
        self._entered = threading.Event()
        self._release = threading.Event()
        self._succeed = succeed
        self.outcome: object = None
        self._thread = threading.Thread(target=self._run, args=(breaker,), daemon=True)
        self._thread.start()
        assert self._entered.wait(timeout=WAIT), "the held call was not admitted"

    def _work(self) -> str:
        self._entered.set()
        if not self._release.wait(timeout=WAIT):
            raise RuntimeError("never released")
        if not self._succeed:
            raise Boom
        return "late"

    def _run(self, breaker: CircuitBreaker) -> None:
        try:
            self.outcome = breaker.call(self._work)
        except BaseException as exc:
            self.outcome = exc

    def finish(self) -> object:
        self._release.set()
        self._thread.join(timeout=WAIT)
        assert not self._thread.is_alive()
        return self.outcome


# Both the lock-free CLOSED success path and the timed/`record_result` path.
CONFIGS = {
    "fast": {},
    "timed": {"slow_call_duration": 100.0},
    "record_result": {"record_result": lambda result: result == "bad"},
}


@pytest.mark.parametrize("late_succeeds", [True, False], ids=["late_success", "late_failure"])
@pytest.mark.parametrize("config", CONFIGS)
def test_circuitbreaker_late_call_admitted_in_closed_does_not_touch_open_breaker(
    config: str, late_succeeds: bool
) -> None:
    """Guards against circuitbreaker 2.1's bug: a late success admitted in CLOSED closes OPEN."""
    clock = ManualClock()
    breaker = make_breaker(clock, **CONFIGS[config])
    held = HeldCall(breaker, succeed=late_succeeds)  # admitted while CLOSED
    trip(breaker)  # four failures open the breaker while the call is in flight
    clock.advance(OPEN_DURATION / 2)
    before = breaker.metrics()
    events = listen(breaker)

    outcome = held.finish()

    if late_succeeds:
        assert outcome == "late"  # the caller still gets its result
    else:
        assert isinstance(outcome, Boom)
    assert breaker.state is CircuitState.OPEN
    # Not counted in the OPEN window; the totals since creation do count it.
    assert windowed(breaker.metrics()) == windowed(before)
    after = breaker.metrics()
    if late_succeeds:
        assert after.total_successful_calls == before.total_successful_calls + 1
    else:
        assert after.total_failed_calls == before.total_failed_calls + 1
    assert breaker.retry_after == OPEN_DURATION / 2  # and the open timer is unchanged
    [event] = events
    assert isinstance(event, (CallSucceeded, CallFailed))
    assert event.recorded is False
    with pytest.raises(CircuitOpenError):
        breaker.call(succeed)


async def test_circuitbreaker_late_async_call_admitted_in_closed_does_not_close_open() -> None:
    """Guards against circuitbreaker 2.1's bug, for a coroutine held across the opening."""
    breaker = make_breaker(ManualClock())
    entered = anyio.Event()
    release = anyio.Event()
    late: list[str] = []

    async def slow() -> str:
        entered.set()
        await release.wait()
        return "late"

    async def held() -> None:
        late.append(await breaker.call_async(slow))

    async with anyio.create_task_group() as tg:
        tg.start_soon(held)
        with anyio.fail_after(WAIT):
            await entered.wait()
        trip(breaker)
        before = breaker.metrics()
        release.set()
    assert late == ["late"]
    assert breaker.state is CircuitState.OPEN
    assert windowed(breaker.metrics()) == windowed(before)


@pytest.mark.parametrize("late_succeeds", [True, False], ids=["late_success", "late_failure"])
@pytest.mark.parametrize("config", CONFIGS)
def test_circuitbreaker_call_admitted_in_closed_is_not_a_half_open_trial(
    config: str, late_succeeds: bool
) -> None:
    """Guards against circuitbreaker 2.1's bug: a call from CLOSED decides in HALF_OPEN."""
    clock = ManualClock()
    breaker = make_breaker(clock, half_open_calls=2, **CONFIGS[config])
    held = HeldCall(breaker, succeed=late_succeeds)  # admitted while CLOSED
    trip(breaker)
    clock.advance(OPEN_DURATION)
    assert breaker.call(succeed) == "ok"  # trial 1 of 2
    assert breaker.state is CircuitState.HALF_OPEN

    held.finish()

    # Counted as trial 2, a late success would close the breaker and a late failure
    # (1 of 2 = 50 %) would reopen it; it must do neither.
    assert breaker.state is CircuitState.HALF_OPEN
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (1, 0)
    assert breaker.call(succeed) == "ok"  # the real trial 2 is still admitted ...
    assert breaker.state is CircuitState.CLOSED  # ... and decides


# -- five peers: every concurrent caller in HALF_OPEN reaches the dependency -------------


def test_half_open_with_one_trial_lets_exactly_one_of_20_threads_through() -> None:
    """Guards against the bug of five peers: all 20 concurrent HALF_OPEN callers get through."""
    clock = ManualClock()
    breaker = make_breaker(clock, half_open_calls=1)
    trip(breaker)
    clock.advance(OPEN_DURATION)
    rejected = threading.Semaphore(0)
    reached = 0
    lock = threading.Lock()

    def dependency() -> str:
        nonlocal reached
        with lock:
            reached += 1
        # Hold the trial until every other caller has been turned away.
        for _ in range(19):
            if not rejected.acquire(timeout=WAIT):
                break
        return "ok"

    def caller() -> object:
        try:
            return breaker.call(dependency)
        except CircuitOpenError as exc:
            rejected.release()
            return exc

    results, errors = run_in_threads(20, caller)

    assert errors == []
    assert reached == 1
    assert results.count("ok") == 1
    rejections = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(rejections) == 19
    assert all(r.retry_after is None for r in rejections)
    assert breaker.state is CircuitState.CLOSED


async def test_half_open_with_one_trial_lets_exactly_one_of_20_tasks_through() -> None:
    """Guards against the five peers' bug (async): all 20 HALF_OPEN callers get through."""
    clock = ManualClock()
    breaker = make_breaker(clock, half_open_calls=1)
    trip(breaker)
    clock.advance(OPEN_DURATION)
    go = anyio.Event()
    release = anyio.Event()
    reached = 0
    rejections: list[CircuitOpenError] = []

    async def dependency() -> str:
        nonlocal reached
        reached += 1
        await release.wait()
        return "ok"

    async def caller() -> None:
        await go.wait()
        try:
            await breaker.call_async(dependency)
        except CircuitOpenError as exc:
            rejections.append(exc)
            if len(rejections) == 19:
                release.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(caller)
            await anyio.lowlevel.checkpoint()
            go.set()

    assert reached == 1
    assert len(rejections) == 19
    assert all(r.retry_after is None for r in rejections)
    assert breaker.state is CircuitState.CLOSED


# -- peers that read the wall clock (time.time, datetime.now) -----------------------------


@pytest.mark.parametrize("start", [0.0, 1e9])
def test_time_comes_only_from_the_injected_monotonic_clock(start: float) -> None:
    """Guards against peers reading the wall clock: only the injected clock moves OPEN on."""
    clock = ManualClock(start)
    breaker = make_breaker(clock, half_open_calls=2)
    trip(breaker)
    assert breaker.retry_after == OPEN_DURATION

    # Real time passes (both wall and monotonic); the manual clock does not.
    wall, mono = time.time(), time.monotonic()
    while time.monotonic() - mono < 0.02 or time.time() - wall < 0.02:
        pass
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == OPEN_DURATION
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(succeed)
    assert info.value.retry_after == OPEN_DURATION

    clock.advance(OPEN_DURATION - 0.5)  # not yet
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(succeed)
    assert info.value.retry_after == 0.5
    assert breaker.state is CircuitState.OPEN

    clock.advance(0.5)  # now: the next call is the first trial
    assert breaker.retry_after == 0.0
    events = listen(breaker)
    assert breaker.call(succeed) == "ok"
    assert breaker.state is CircuitState.HALF_OPEN
    assert [(e.from_state, e.to_state) for e in events if isinstance(e, StateTransition)] == [
        (CircuitState.OPEN, CircuitState.HALF_OPEN)
    ]


def test_default_clock_is_monotonic_not_wall_time() -> None:
    """Guards against peers timing OPEN with time.time(), which jumps with the wall clock."""
    assert MonotonicClock.monotonic is time.monotonic
    breaker = CircuitBreaker("peer", window=CountWindow(1), minimum_calls=1, open_duration=3600)
    with pytest.raises(Boom):
        breaker.call(fail)
    retry_after = breaker.retry_after
    assert retry_after is not None
    assert 3599 < retry_after <= 3600
