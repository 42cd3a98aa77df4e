"""reconfigure(): options changed in place, state kept, one event listing the changes.

Every option a guard reads is checked through a decorated function (the signature-matched
guards, the compose runners with their inline admission), not only through the core:
an option captured at decoration time would be missed there.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import resilient
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Fallback,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    Reconfigured,
    Retry,
    RetryBudget,
    Timeout,
    TimeoutExceededError,
    TimeWindow,
    compose,
)
from resilient.testing import ManualClock, capture_events


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom


def ok(x: int = 1) -> int:
    return x


def outcomes(breaker: CircuitBreaker, pattern: str) -> None:
    """Run one call per letter: ``s`` a success, ``f`` a failure."""
    for letter in pattern:
        if letter == "s":
            breaker.call(ok)
        else:
            with pytest.raises(Boom):
                breaker.call(fail)


def reconfigured(events: list[Any]) -> list[Reconfigured]:
    return [event for event in events if isinstance(event, Reconfigured)]


# -- the circuit breaker ---------------------------------------------------------------


def test_the_same_values_change_nothing_and_emit_nothing() -> None:
    breaker = CircuitBreaker("b", window=CountWindow(10), minimum_calls=5, open_duration=30)
    outcomes(breaker, "ssfsf")
    before = breaker.metrics()
    with capture_events() as events:
        changed = breaker.reconfigure(
            window=CountWindow(10),
            minimum_calls=5,
            open_duration=datetime.timedelta(seconds=30),
            failure_rate_threshold=0.5,
        )
    assert changed is False
    assert events == []
    assert breaker.metrics() == before


def test_a_threshold_change_keeps_window_and_state_and_names_only_the_change() -> None:
    breaker = CircuitBreaker("b", window=CountWindow(10), minimum_calls=4)
    outcomes(breaker, "sfss")
    before = breaker.metrics()
    with capture_events() as events:
        assert breaker.reconfigure(failure_rate_threshold=0.3, minimum_calls=4) is True
    (event,) = events
    assert isinstance(event, Reconfigured)
    assert (event.policy, event.kind) == ("b", "circuit_breaker")
    assert dict(event.changes) == {"failure_rate_threshold": (0.5, 0.3)}
    assert event.options == ("failure_rate_threshold",)
    after = breaker.metrics()
    assert after == before  # window, state and totals kept
    assert breaker.state is CircuitState.CLOSED
    outcomes(breaker, "f")  # 2 of 5 = 0.4 >= 0.3: the new threshold decides
    assert breaker.state is CircuitState.OPEN


def test_a_lowered_threshold_that_the_window_meets_opens_after_the_event() -> None:
    breaker = CircuitBreaker("b", window=CountWindow(10), minimum_calls=4)
    outcomes(breaker, "ssfs")
    with capture_events() as events:
        breaker.reconfigure(failure_rate_threshold=0.25)
    assert [type(e).__name__ for e in events] == ["Reconfigured", "StateTransition"]
    assert breaker.state is CircuitState.OPEN
    assert breaker.transition_counts() == {(CircuitState.CLOSED, CircuitState.OPEN): 1}


def test_a_resized_count_window_keeps_its_most_recent_outcomes() -> None:
    breaker = CircuitBreaker("b", window=CountWindow(6), minimum_calls=6)
    outcomes(breaker, "ffssss")  # oldest first
    breaker.reconfigure(window=CountWindow(4))
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (4, 0)  # the last four
    assert metrics.total_successful_calls == 4
    assert metrics.total_failed_calls == 2  # totals since creation are kept
    assert breaker.state is CircuitState.CLOSED
    outcomes(breaker, "ff")  # evicts the two oldest carried successes first
    assert breaker.metrics().failed_calls == 2
    assert breaker.state is CircuitState.OPEN  # 2 of 4 at minimum_calls 4 (capped)


def test_a_grown_count_window_keeps_everything_and_counts_on() -> None:
    breaker = CircuitBreaker("b", window=CountWindow(3), minimum_calls=3)
    outcomes(breaker, "sfs")
    breaker.reconfigure(window=CountWindow(5), minimum_calls=5)
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls, metrics.buffered_calls_needed) == (3, 1, 2)
    outcomes(breaker, "ff")
    assert breaker.state is CircuitState.OPEN  # 3 of 5 with the carried ones


def test_a_change_of_window_kind_starts_empty() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("b", window=CountWindow(5), minimum_calls=2, clock=clock)
    outcomes(breaker, "ss")
    breaker.reconfigure(window=TimeWindow(10))
    assert breaker.metrics().calls == 0
    outcomes(breaker, "ff")
    assert breaker.state is CircuitState.OPEN


def test_open_keeps_its_deadline_and_the_new_duration_counts_from_the_next_opening() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "b", window=CountWindow(2), minimum_calls=1, open_duration=10, clock=clock
    )
    outcomes(breaker, "f")
    breaker.reconfigure(open_duration=100, half_open_calls=1)
    assert breaker.state is CircuitState.OPEN
    assert breaker.retry_after == pytest.approx(10)
    clock.advance(10)
    with pytest.raises(Boom):
        breaker.call(fail)  # the trial fails: open again, now for 100 s
    assert breaker.retry_after == pytest.approx(100)


def test_half_open_decides_at_once_when_its_finished_trials_reach_fewer_calls() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "b", window=CountWindow(2), minimum_calls=1, open_duration=1, half_open_calls=3, clock=clock
    )
    outcomes(breaker, "f")
    clock.advance(1)
    outcomes(breaker, "ss")  # two of three trials
    assert breaker.state is CircuitState.HALF_OPEN
    breaker.reconfigure(half_open_calls=2)
    assert breaker.state is CircuitState.CLOSED


def test_half_open_with_more_trials_keeps_the_finished_ones() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "b", window=CountWindow(2), minimum_calls=1, open_duration=1, half_open_calls=2, clock=clock
    )
    outcomes(breaker, "f")
    clock.advance(1)
    outcomes(breaker, "f")
    breaker.reconfigure(half_open_calls=4)
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics().calls == 1
    outcomes(breaker, "sss")  # 1 of 4 failed: below 0.5
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"failure_rate_threshold": 2}, ValueError, "failure_rate_threshold"),
        ({"window": 100}, TypeError, "window"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls"),
        ({"failure_rate_threshold": 0.1, "slow_call_duration": "x"}, TypeError, "slow_call"),
        ({"open_duration": -1}, ValueError, "open_duration"),
        ({"record": 3}, TypeError, "record"),
        ({"nonsense": 1}, TypeError, "nonsense"),
        ({"name": "other"}, TypeError, "'name' cannot be changed"),
        ({"clock": ManualClock()}, TypeError, "'clock' cannot be changed"),
    ],
)
def test_a_bad_value_raises_like_construction_and_changes_nothing(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    breaker = CircuitBreaker("b", window=CountWindow(4), minimum_calls=3)
    outcomes(breaker, "sf")
    before = breaker.metrics()
    with capture_events() as events, pytest.raises(error, match=match):
        breaker.reconfigure(half_open_calls=3, **options)
    assert events == []
    assert breaker.metrics() == before
    outcomes(breaker, "f")  # the options in force: 2 of 3 failed
    assert breaker.state is CircuitState.OPEN
    assert breaker._core._half_open_calls == 10


@pytest.mark.parametrize("how", ["decorated", "composed", "async"])
async def test_a_decorated_breaker_sees_new_thresholds_and_slow_calls(how: str) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("b", window=CountWindow(4), minimum_calls=4, clock=clock)

    def slow(x: int) -> int:
        clock.advance(2.0)
        return x

    async def aslow(x: int) -> int:
        clock.advance(2.0)
        return x

    if how == "decorated":
        guarded: Callable[[int], Any] = breaker(slow)
    elif how == "composed":
        guarded = compose(Retry(1), breaker, Bulkhead(5))(slow)
    else:
        guarded = breaker(aslow)

    async def call(x: int) -> Any:
        result = guarded(x)
        return await result if how == "async" else result

    assert await call(1) == 1
    breaker.reconfigure(slow_call_duration=1.0, slow_call_rate_threshold=0.5, minimum_calls=2)
    assert await call(2) == 2  # now measured: slow (2 s > 1 s), 2 of 2 slow
    assert breaker.state is CircuitState.OPEN
    assert breaker.metrics().slow_calls == 1  # the call before the change was not timed
    with pytest.raises(CircuitOpenError):
        await call(3)


@pytest.mark.parametrize("how", ["decorated", "composed"])
def test_a_decorated_breaker_sees_a_record_result_added_later(how: str) -> None:
    breaker = CircuitBreaker("b", window=CountWindow(2), minimum_calls=2)
    guarded = breaker(ok) if how == "decorated" else compose(breaker, RateLimiter(1000))(ok)
    for _ in range(3):
        guarded(0)  # the lock-free path: a window full of successes
    breaker.reconfigure(record_result=lambda value: value < 0)
    assert guarded(-1) == -1  # returned, and counted as a failure: 1 of 2
    assert breaker.state is CircuitState.OPEN


# -- the bulkhead ----------------------------------------------------------------------


class Held:
    """Calls parked inside a guarded function, on threads, until released."""

    def __init__(self) -> None:
        self.inside = threading.Semaphore(0)
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, guarded: Callable[[], Any], count: int) -> None:
        self.threads = [threading.Thread(target=guarded) for _ in range(count)]
        for thread in self.threads:
            thread.start()
        for _ in range(count):
            assert self.inside.acquire(timeout=30)

    def park(self) -> None:
        self.inside.release()
        assert self.release.wait(timeout=30)

    def finish(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.mark.parametrize("how", ["decorated", "composed", "with"])
def test_a_shrink_admits_nobody_until_the_calls_in_flight_are_under_the_new_limit(
    how: str,
) -> None:
    bulkhead = Bulkhead(4, name="b")
    held = Held()
    guarded = (
        bulkhead(held.park) if how != "composed" else compose(CircuitBreaker(), bulkhead)(held.park)
    )
    held.start(guarded, 4)
    bulkhead.reconfigure(max_concurrent=2)
    assert bulkhead.metrics().in_flight == 4

    def attempt() -> bool:
        try:
            if how == "with":
                with bulkhead:
                    return True
            (bulkhead(ok) if how == "decorated" else compose(CircuitBreaker(), bulkhead)(ok))()
        except BulkheadFullError:
            return False
        return True

    assert attempt() is False
    held.finish()
    metrics = bulkhead.metrics()
    assert (metrics.in_flight, metrics.max_concurrent, metrics.max_observed) == (0, 2, 4)
    assert attempt() is True
    with bulkhead, bulkhead:
        assert attempt() is False  # two in flight: the new limit


@pytest.mark.parametrize("how", ["decorated", "composed"])
def test_a_grow_beyond_the_first_limit_admits_more_through_decorated_functions(how: str) -> None:
    bulkhead = Bulkhead(1)
    held = Held()
    guarded = bulkhead(held.park) if how == "decorated" else compose(Retry(1), bulkhead)(held.park)
    bulkhead.reconfigure(max_concurrent=3)
    held.start(guarded, 3)
    assert bulkhead.metrics().in_flight == 3
    with pytest.raises(BulkheadFullError):
        bulkhead.call(ok)
    held.finish()
    metrics = bulkhead.metrics()
    assert (metrics.in_flight, metrics.max_observed, metrics.admitted) == (0, 3, 3)


def test_max_wait_set_later_makes_a_decorated_caller_wait() -> None:
    bulkhead = Bulkhead(1)
    guarded = bulkhead(ok)
    admitted = threading.Event()
    with bulkhead:
        with pytest.raises(BulkheadFullError):
            guarded()  # refused at once: max_wait 0
        bulkhead.reconfigure(max_wait=30.0)
        thread = threading.Thread(target=lambda: guarded() and admitted.set())
        thread.start()
        deadline = threading.Event()
        while bulkhead.metrics().waiting == 0:
            deadline.wait(0.001)
    thread.join(timeout=30)
    assert admitted.is_set()
    assert bulkhead.metrics().rejected == 1


# -- the rate limiters -----------------------------------------------------------------


def admitted(limiter: Callable[[], Any], tries: int) -> int:
    count = 0
    for _ in range(tries):
        try:
            limiter()
        except RateLimitedError:
            continue
        count += 1
    return count


@pytest.mark.parametrize("how", ["decorated", "composed", "with"])
def test_a_limiter_keeps_its_tokens_capped_at_the_new_burst(how: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(10, burst=10, clock=clock)

    def with_block() -> None:
        with limiter:
            pass

    guarded = {
        "decorated": limiter(ok),
        "composed": compose(CircuitBreaker(), limiter, Bulkhead(3))(ok),
        "with": with_block,
    }[how]
    assert admitted(guarded, 4) == 4  # 6 tokens left
    limiter.reconfigure(rate=2, burst=5)  # 6 tokens, capped at the new burst
    assert admitted(guarded, 10) == 5
    clock.advance(1.0)
    assert admitted(guarded, 10) == 2  # the new rate refills
    limiter.reconfigure(burst=8)  # a larger burst keeps the (zero) tokens
    assert admitted(guarded, 10) == 0
    clock.advance(1.0)
    assert admitted(guarded, 10) == 2
    assert limiter.metrics().rejected > 0
    assert (limiter.rate, limiter.burst) == (2, 8)


@pytest.mark.parametrize("how", ["decorated", "composed"])
def test_max_wait_set_later_makes_a_decorated_call_wait_its_turn(how: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    guarded = limiter(ok) if how == "decorated" else compose(Retry(1), limiter)(ok)
    guarded()
    with pytest.raises(RateLimitedError):
        guarded()
    limiter.reconfigure(max_wait=5.0)
    start = clock.monotonic()
    assert guarded(7) == 7  # waited for its slot (the manual clock sleeps at once)
    assert clock.monotonic() - start == pytest.approx(1.0)
    limiter.reconfigure(max_wait=0)
    with pytest.raises(RateLimitedError):
        guarded()  # refused at once again, before the lock


def test_a_keyed_limiter_keeps_each_keys_tokens_and_takes_a_new_key() -> None:
    clock = ManualClock()
    limiter = KeyedRateLimiter(5, burst=2, key=lambda user, **_: user, clock=clock)
    guarded = limiter(lambda user: user)
    assert [guarded("a"), guarded("a")] == ["a", "a"]
    with pytest.raises(RateLimitedError):
        guarded("a")
    limiter.reconfigure(burst=3)
    with pytest.raises(RateLimitedError):
        guarded("a")  # no token left for "a": kept, not refilled by the larger burst
    clock.advance(0.2)
    assert guarded("a") == "a"  # one token at 5 a second
    limiter.reconfigure(key=lambda user, **_: user.upper())  # read at each call
    assert admitted(lambda: guarded("a"), 5) == 3  # "A": a new key, the new burst
    assert limiter.metrics().keys == 2


# -- retry, timeout, fallback ----------------------------------------------------------


def test_a_decorated_retry_sees_attempts_on_result_and_budget() -> None:
    retry = Retry(2, wait=0.0)
    calls: list[int] = []

    @retry
    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) % 4:
            raise Boom
        return value

    with pytest.raises(Boom):
        flaky(1)
    assert len(calls) == 2
    retry.reconfigure(attempts=4)
    calls.clear()
    assert flaky(1) == 1
    assert len(calls) == 4
    results = iter([-1, 5])
    retry.reconfigure(on_result=lambda value: value < 0)
    assert retry(lambda: next(results))() == 5
    budget = RetryBudget()
    retry.reconfigure(budget=budget)
    calls.clear()
    assert flaky(1) == 1
    assert retry.budget is budget
    assert budget.snapshot().first_attempts == 1  # deposited by the decorated function
    assert budget.snapshot().retries == 3


async def test_a_decorated_async_timeout_sees_new_seconds(anyio_backend: str) -> None:
    timeout = Timeout(10.0)

    @timeout
    async def sleepy() -> int:
        await anyio.sleep(0.2)
        return 1

    assert await sleepy() == 1
    timeout.reconfigure(seconds=0.01)
    with pytest.raises(TimeoutExceededError):
        await sleepy()
    with pytest.raises(TypeError, match="'max_workers' cannot be changed"):
        timeout.reconfigure(max_workers=2)
    with pytest.raises(ValueError, match="seconds"):
        timeout.reconfigure(seconds=0)
    assert timeout.seconds == 0.01


def test_a_sync_timeout_sees_new_seconds() -> None:
    timeout = Timeout(0.01)
    event = threading.Event()
    guarded = timeout(lambda: event.wait(0.3))
    with pytest.raises(TimeoutExceededError):
        guarded()
    timeout.reconfigure(seconds=datetime.timedelta(seconds=20))
    assert guarded() is False  # waited its 0.3 s


def test_a_decorated_fallback_sees_a_new_handler_and_matcher() -> None:
    fallback = Fallback(lambda exc: "old", on=Boom)

    @fallback
    def broken() -> str:
        raise Boom

    assert broken() == "old"
    fallback.reconfigure(handler=lambda exc: "new")
    assert broken() == "new"
    fallback.reconfigure(on=KeyError)
    with pytest.raises(Boom):
        broken()

    async def handler(exc: BaseException) -> str:
        return "async"  # pragma: no cover - refused

    with pytest.raises(TypeError, match="handler must stay a sync callable"):
        fallback.reconfigure(handler=handler)
    with pytest.raises(TypeError, match="'with_args' cannot be changed"):
        fallback.reconfigure(with_args=True)


def test_the_event_record_is_public_frozen_and_read_only() -> None:
    assert resilient.Reconfigured.__module__ == "resilient"
    bulkhead = Bulkhead(2, name="pool")
    seen: list[Any] = []
    bulkhead.add_listener(seen.append)
    bulkhead.reconfigure(max_concurrent=3, max_wait=0.5)
    (event,) = reconfigured(seen)
    assert dict(event.changes) == {"max_concurrent": (2, 3), "max_wait": (0.0, 0.5)}
    with pytest.raises(TypeError):
        event.changes["fair"] = (False, True)  # type: ignore[index]
    with pytest.raises(AttributeError):
        event.policy = "other"  # type: ignore[misc]
