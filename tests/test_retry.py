"""Retry: attempts, waits, deadlines, non-retryable errors, per-call state, composition.

Every wait goes through a ``ManualClock`` (its sleeps advance it at once), so no test
sleeps for real; every random draw comes from a seeded ``random.Random`` (or from the
global ``random`` module, seeded and restored, where tenacity's strategies draw from it).
Contract points are checked for sync calls and for async calls on asyncio and trio
through the ``flavor`` fixture, which runs one scripted function through ``call()`` or
through ``call_async()`` under ``anyio.run``.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import math
import random
import statistics
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import tenacity

import resilient
from resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    DecorrelatedJitter,
    Event,
    ExponentialJitter,
    Fallback,
    RejectedError,
    ResilienceError,
    RetriesExhausted,
    Retry,
    RetryMetrics,
    RetryScheduled,
    Timeout,
    compose,
)
from resilient.testing import ManualClock, capture_events, instant_retries

# -- helpers ------------------------------------------------------------------------------


class Boom(Exception):
    pass


class Other(Exception):
    pass


class RecordingClock(ManualClock):
    """A ManualClock that also records every sleep asked of it (sync and async)."""

    __slots__ = ("sleeps",)

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start)
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().asleep(seconds)


class Script:
    """A function whose n-th call (from 1) plays ``outcomes[n - 1]`` (the last repeats).

    An exception *class* is raised as a fresh instance ``cls(n)``, an exception instance
    is raised as is, anything else is returned. Every exception raised is kept in
    ``raised`` so that tests can check which object reached the caller.
    """

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self.raised: list[BaseException] = []
        self.remaining: list[float | None] = []

    def __call__(self) -> Any:
        self.calls += 1
        self.remaining.append(resilient.remaining())
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, type) and issubclass(outcome, BaseException):
            outcome = outcome(self.calls)
        if isinstance(outcome, BaseException):
            self.raised.append(outcome)
            raise outcome
        return outcome


class Flavor:
    """Runs a function through a policy: ``call()``, or ``call_async()`` on a backend."""

    def __init__(self, backend: str | None) -> None:
        self.backend = backend

    def __repr__(self) -> str:
        return self.backend or "sync"

    def run(self, policy: Any, fn: Callable[[], Any]) -> Any:
        """Return what the guarded call returns, or raise what it raises (same object)."""
        if self.backend is None:
            return policy.call(fn)

        async def target() -> Any:
            await anyio.lowlevel.checkpoint()
            return fn()

        async def main() -> tuple[bool, Any]:
            # Interrupts are caught here, inside the task, so that the event loop never
            # sees them and the test gets the very object the policy let through.
            try:
                return True, await policy.call_async(target)
            except BaseException as exc:
                return False, exc

        ok, value = anyio.run(main, backend=self.backend)
        if ok:
            return value
        raise value


@pytest.fixture(params=["sync", "asyncio", "trio"])
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return Flavor(None if request.param == "sync" else str(request.param))


@pytest.fixture
def global_random() -> Iterator[None]:
    """Tenacity's random strategies draw from the ``random`` module: restore it after."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def scheduled(events: list[Event]) -> list[RetryScheduled]:
    return [e for e in events if isinstance(e, RetryScheduled)]


def exhausted(events: list[Event]) -> list[RetriesExhausted]:
    return [e for e in events if isinstance(e, RetriesExhausted)]


def run_failing(retry: Retry, calls: int) -> dict[int, list[float]]:
    """Make ``calls`` always-failing sync calls; return the delays per attempt number."""
    delays: dict[int, list[float]] = defaultdict(list)

    def listen(event: Event) -> None:
        if isinstance(event, RetryScheduled):
            delays[event.attempt].append(event.delay)

    retry.add_listener(listen)
    try:
        for _ in range(calls):
            with pytest.raises(Boom):
                retry.call(Script(Boom))
    finally:
        retry.remove_listener(listen)
    return delays


def call_state(attempt: int, exc: BaseException) -> tenacity.RetryCallState:
    """The RetryCallState tenacity itself would hand its wait strategy after ``attempt``."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, exc.__traceback__))
    return state


# -- attempts, results, exhaustion ----------------------------------------------------------


def test_success_at_once_calls_once_without_waiting_or_events(flavor: Flavor) -> None:
    clock = RecordingClock()
    retry = Retry(3, wait=5, clock=clock)
    script = Script("ok")
    with capture_events() as events:
        assert flavor.run(retry, script) == "ok"
    assert script.calls == 1
    assert clock.sleeps == []
    assert events == []
    assert retry.metrics() == RetryMetrics(0, 0, 0, 0, 0, first_attempt=1)


@pytest.mark.parametrize("attempts", [1, 2, 3, 5])
def test_attempts_count_the_first_call(flavor: Flavor, attempts: int) -> None:
    clock = ManualClock()
    retry = Retry(attempts, wait=2, clock=clock)
    script = Script(Boom)
    with pytest.raises(Boom):
        flavor.run(retry, script)
    assert script.calls == attempts
    assert clock.monotonic() == 2 * (attempts - 1)
    assert retry.attempts == attempts
    assert retry.metrics() == RetryMetrics(
        retries=attempts - 1, recovered=0, exhausted=1, deadline_give_ups=0, budget_refusals=0
    )


def test_recovers_on_a_retry_and_reports_each_scheduled_retry(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(5, wait=lambda attempt: attempt * 1.5, clock=clock, name="quotes")
    script = Script(Boom, Boom, "ok")
    with capture_events() as events:
        assert flavor.run(retry, script) == "ok"
    assert script.calls == 3
    assert clock.monotonic() == 1.5 + 3.0
    assert events == [
        RetryScheduled("quotes", "retry", 1, 1.5, script.raised[0], None),
        RetryScheduled("quotes", "retry", 2, 3.0, script.raised[1], None),
    ]
    assert retry.metrics() == RetryMetrics(2, 1, 0, 0, 0)


def test_exhaustion_reraises_the_last_exception_object_unchanged(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(3, wait=1, clock=clock, name="svc")
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(retry, script)
    assert len(script.raised) == 3
    assert info.value is script.raised[-1]  # the same object: no wrapper, no copy
    assert type(info.value) is Boom
    assert info.value.args == (3,)
    assert info.value.__cause__ is None
    assert not isinstance(info.value, ResilienceError)
    assert exhausted(events) == [RetriesExhausted("svc", "retry", 3, "attempts", info.value, None)]
    assert [e.attempt for e in scheduled(events)] == [1, 2]
    assert retry.metrics() == RetryMetrics(2, 0, 1, 0, 0)


def test_a_single_attempt_never_retries(flavor: Flavor) -> None:
    clock = RecordingClock()
    retry = Retry(1, wait=1, clock=clock)
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(retry, script)
    assert info.value is script.raised[0]
    assert script.calls == 1
    assert clock.sleeps == []
    assert scheduled(events) == []
    assert [(e.attempts, e.reason) for e in exhausted(events)] == [(1, "attempts")]


def test_on_result_retries_then_returns_the_matching_result_as_is(flavor: Flavor) -> None:
    clock = ManualClock()
    pending = {"status": "pending"}
    retry = Retry(
        3, wait=1, on_result=lambda r: r.get("status") == "pending", clock=clock, name="poll"
    )
    script = Script(pending)
    with capture_events() as events:
        result = flavor.run(retry, script)
    assert result is pending
    assert script.calls == 3
    assert clock.monotonic() == 2
    assert scheduled(events) == [
        RetryScheduled("poll", "retry", 1, 1.0, None, pending),
        RetryScheduled("poll", "retry", 2, 1.0, None, pending),
    ]
    assert exhausted(events) == [RetriesExhausted("poll", "retry", 3, "attempts", None, pending)]
    assert retry.metrics() == RetryMetrics(2, 0, 1, 0, 0)


def test_on_result_recovers_when_the_result_stops_matching(flavor: Flavor) -> None:
    retry = Retry(5, wait=1, on_result=lambda r: r is None, clock=ManualClock())
    script = Script(None, Boom, None, "done")
    assert flavor.run(retry, script) == "done"
    assert script.calls == 4
    assert retry.metrics() == RetryMetrics(3, 1, 0, 0, 0)


def test_a_result_is_not_retried_without_on_result(flavor: Flavor) -> None:
    retry = Retry(3, wait=1, clock=ManualClock())
    script = Script(None)
    assert flavor.run(retry, script) is None
    assert script.calls == 1


@pytest.mark.parametrize(
    "on",
    [ValueError, (KeyError, ValueError), lambda exc: isinstance(exc, ValueError)],
    ids=["type", "tuple", "predicate"],
)
def test_on_selects_what_is_retried(flavor: Flavor, on: Any) -> None:
    retry = Retry(4, wait=1, on=on, clock=ManualClock())
    retried = Script(ValueError, ValueError, "ok")
    assert flavor.run(retry, retried) == "ok"
    assert retried.calls == 3

    not_retried = Script(Boom)
    with pytest.raises(Boom) as info:
        flavor.run(retry, not_retried)
    assert info.value is not_retried.raised[0]
    assert not_retried.calls == 1


def test_a_non_retryable_exception_on_a_retry_propagates_at_once(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(5, wait=1, on=Boom, clock=clock)
    script = Script(Boom, Other)
    with capture_events() as events, pytest.raises(Other) as info:
        flavor.run(retry, script)
    assert info.value is script.raised[1]
    assert script.calls == 2
    assert clock.monotonic() == 1
    assert exhausted(events) == []  # nothing was exhausted: the error was not retryable
    assert retry.metrics() == RetryMetrics(1, 0, 0, 0, 0, stopped=1)


def test_listeners_on_the_policy_receive_its_events(flavor: Flavor) -> None:
    retry = Retry(2, wait=0.25, clock=ManualClock(), name="own")
    received: list[Event] = []
    retry.add_listener(received.append)
    with pytest.raises(Boom):
        flavor.run(retry, Script(Boom))
    assert [type(e) for e in received] == [RetryScheduled, RetriesExhausted]
    assert all(e.policy == "own" and e.kind == "retry" for e in received)
    retry.remove_listener(received.append)
    with pytest.raises(Boom):
        flavor.run(retry, Script(Boom))
    assert len(received) == 2


def test_metrics_accumulate_over_calls(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(3, wait=1, clock=clock)
    flavor.run(retry, Script("ok"))  # nothing to count
    flavor.run(retry, Script(Boom, "ok"))  # 1 retry, recovered
    flavor.run(retry, Script(Boom, Boom, "ok"))  # 2 retries, recovered
    with pytest.raises(Boom):
        flavor.run(retry, Script(Boom))  # 2 retries, exhausted
    with pytest.raises(Boom):
        flavor.run(compose(Timeout(0.5, clock=clock), retry), Script(Boom))  # deadline
    assert retry.metrics() == RetryMetrics(
        retries=5,
        recovered=2,
        exhausted=1,
        deadline_give_ups=1,
        budget_refusals=0,
        first_attempt=1,
    )
    assert retry.metrics().calls == 5


def test_decorates_sync_and_async_functions() -> None:
    clock = ManualClock()
    retry = Retry(3, wait=1, clock=clock)
    sync_script = Script(Boom, "sync")

    @retry
    def fetch() -> Any:
        return sync_script()

    assert fetch() == "sync"

    async_script = Script(Boom, Boom, "async")

    @retry
    async def afetch() -> Any:
        await anyio.lowlevel.checkpoint()
        return async_script()

    assert anyio.run(afetch) == "async"
    assert clock.monotonic() == 3
    assert retry.metrics() == RetryMetrics(3, 2, 0, 0, 0)


def test_retry_is_not_a_context_manager() -> None:
    retry = Retry()
    with pytest.raises(TypeError, match="for attempt in retry"), retry:
        pass

    async def main() -> None:
        async with retry:
            pass

    with pytest.raises(TypeError, match="async for attempt in retry"):
        anyio.run(main)


# -- the sleeps taken are the schedule ------------------------------------------------------


WAITS: dict[str, Callable[[], Any]] = {
    "seconds": lambda: 0.75,
    "timedelta": lambda: datetime.timedelta(milliseconds=250),
    "callable": lambda: lambda attempt: 0.1 * attempt**2,
    "exponential_jitter": lambda: ExponentialJitter(0.3, max=2.0, random=random.Random(11)),
    "decorrelated_jitter": lambda: DecorrelatedJitter(0.2, max=3.0, random=random.Random(12)),
    "tenacity_exponential_jitter": lambda: tenacity.wait_exponential_jitter(
        multiplier=0.5, max=4, jitter=0.5
    ),
    "tenacity_random_exponential": lambda: tenacity.wait_random_exponential(multiplier=0.5, max=3),
    "tenacity_fixed_plus_random": lambda: tenacity.wait_fixed(1) + tenacity.wait_random(0, 1),
    "tenacity_chain": lambda: tenacity.wait_chain(tenacity.wait_fixed(0.5), tenacity.wait_fixed(2)),
}


@pytest.mark.parametrize("make_wait", list(WAITS.values()), ids=list(WAITS))
@pytest.mark.usefixtures("global_random")
def test_the_sleeps_taken_are_exactly_the_scheduled_waits(
    flavor: Flavor, make_wait: Callable[[], Any]
) -> None:
    random.seed(99)
    clock = RecordingClock(start=100.0)
    retry = Retry(7, wait=make_wait(), clock=clock)
    with capture_events() as events, pytest.raises(Boom):
        flavor.run(retry, Script(Boom))
    delays = [e.delay for e in scheduled(events)]
    assert len(delays) == 6
    assert all(d >= 0 for d in delays)
    # A zero wait may be skipped; every other wait is slept once, in order, as scheduled.
    assert [s for s in clock.sleeps if s > 0] == [d for d in delays if d > 0]
    expected = 100.0
    for delay in delays:
        expected += delay  # the clock adds the sleeps one by one, exactly as here
    assert clock.monotonic() == expected


# -- wait strategies ----------------------------------------------------------------------


def test_fixed_seconds_and_timedelta_waits() -> None:
    clock = ManualClock()
    with pytest.raises(Boom):
        Retry(3, wait=datetime.timedelta(seconds=1.5), clock=clock).call(Script(Boom))
    assert clock.monotonic() == 3.0
    with pytest.raises(Boom):
        Retry(4, wait=0, clock=clock).call(Script(Boom))
    assert clock.monotonic() == 3.0


def test_a_callable_wait_receives_the_attempt_that_just_failed() -> None:
    seen: list[int] = []

    def wait(attempt: int) -> float:
        seen.append(attempt)
        return float(attempt)

    clock = ManualClock()
    retry = Retry(5, wait=wait, clock=clock)
    seen.clear()  # construction may probe wait(1)
    with pytest.raises(Boom):
        retry.call(Script(Boom))
    assert seen == [1, 2, 3, 4]
    assert clock.monotonic() == 1 + 2 + 3 + 4


def test_a_callable_wait_may_return_a_timedelta() -> None:
    """Durations are seconds or timedeltas everywhere; wait(1) is accepted as one."""
    clock = ManualClock()
    retry = Retry(3, wait=lambda attempt: datetime.timedelta(seconds=attempt), clock=clock)
    script = Script(Boom)
    with pytest.raises(Boom) as info:
        retry.call(script)
    assert info.value is script.raised[-1]
    assert clock.monotonic() == 1 + 2


def test_the_default_wait_is_exponential_full_jitter() -> None:
    clock = ManualClock()
    retry = Retry(clock=clock)
    assert retry.attempts == 3
    delays = run_failing(retry, 200)
    assert all(0.0 <= d <= 0.1 for d in delays[1])
    assert all(0.0 <= d <= 0.2 for d in delays[2])
    assert max(delays[2]) > 0.1  # the second ceiling is larger than the first


def test_exponential_jitter_draws_uniform_up_to_the_capped_exponential_ceiling() -> None:
    base, cap = 0.25, 3.0
    retry = Retry(
        10,
        wait=ExponentialJitter(base, max=cap, random=random.Random(5)),
        clock=ManualClock(),
    )
    delays = run_failing(retry, 300)
    for attempt in range(1, 10):
        ceiling = min(cap, base * 2 ** (attempt - 1))
        samples = delays[attempt]
        assert len(samples) == 300
        assert all(0.0 <= d <= ceiling for d in samples)
        # The whole range is used: some draws near 0, some near the ceiling, mean ~ half.
        assert min(samples) < 0.05 * ceiling
        assert max(samples) > 0.95 * ceiling
        assert statistics.fmean(samples) == pytest.approx(ceiling / 2, rel=0.15)


def test_exponential_jitter_is_exactly_awss_full_jitter() -> None:
    """Same seed, same draws: uniform(0, min(max, base * 2 ** (n - 1))) for retry n."""
    base, cap = 0.1, 1.0
    retry = Retry(
        8, wait=ExponentialJitter(base, max=cap, random=random.Random(42)), clock=ManualClock()
    )
    reference = random.Random(42)
    expected = [
        [reference.uniform(0.0, min(cap, base * 2 ** (n - 1))) for n in range(1, 8)]
        for _ in range(20)
    ]
    with capture_events() as events:
        for _ in range(20):
            with pytest.raises(Boom):
                retry.call(Script(Boom))
    delays = [e.delay for e in scheduled(events)]
    assert delays == [d for call in expected for d in call]


def test_exponential_jitter_survives_very_many_attempts() -> None:
    """The ceiling is capped at ``max`` however far the exponent goes (no overflow)."""
    clock = ManualClock()
    retry = Retry(1100, wait=ExponentialJitter(0.1, max=0.5, random=random.Random(3)), clock=clock)
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        retry.call(script)
    assert info.value is script.raised[-1]
    assert script.calls == 1100
    assert all(0.0 <= e.delay <= 0.5 for e in scheduled(events))


def _polly_v2(median_first: float, cap: float, draws: list[float]) -> list[float]:
    """Polly's DecorrelatedJitterBackoffV2, written out from its published source."""
    previous, delays = 0.0, []
    for i, draw in enumerate(draws):
        t = i + draw
        value = 2.0**t * math.tanh(math.sqrt(4.0 * t))
        delays.append(min((value - previous) * median_first / 1.4, cap))
        previous = value
    return delays


class ConstantRandom(random.Random):
    """Every draw is ``value``: makes a jitter's schedule a known sequence."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def test_decorrelated_jitter_follows_pollys_v2_formula() -> None:
    retry = Retry(
        8, wait=DecorrelatedJitter(0.3, max=5.0, random=ConstantRandom(0.5)), clock=ManualClock()
    )
    delays = run_failing(retry, 1)
    got = [delays[n][0] for n in range(1, 8)]
    assert got == pytest.approx(_polly_v2(0.3, 5.0, [0.5] * 7), rel=1e-12)
    assert got[-1] == 5.0  # capped


def test_decorrelated_jitter_medians_start_near_median_first_and_grow() -> None:
    median_first = 0.2
    retry = Retry(
        7,
        wait=DecorrelatedJitter(median_first, max=1e6, random=random.Random(2024)),
        clock=ManualClock(),
    )
    delays = run_failing(retry, 1001)
    medians = [statistics.median(delays[n]) for n in range(1, 7)]
    # Each call starts its own schedule, so every call's first retry is a "first" one.
    assert medians[0] == pytest.approx(median_first, rel=0.25)
    assert all(later > earlier for earlier, later in itertools.pairwise(medians))
    assert all(later > 1.5 * earlier for earlier, later in itertools.pairwise(medians[1:]))
    assert all(d >= 0.0 for samples in delays.values() for d in samples)


def test_decorrelated_jitter_is_non_negative_and_capped() -> None:
    cap = 0.5
    retry = Retry(
        12, wait=DecorrelatedJitter(0.1, max=cap, random=random.Random(8)), clock=ManualClock()
    )
    delays = run_failing(retry, 200)
    samples = [d for values in delays.values() for d in values]
    assert len(samples) == 200 * 11
    assert all(0.0 <= d <= cap for d in samples)
    assert delays[11] == [cap] * 200  # late retries all hit the cap
    assert min(delays[1]) > 0.0


TENACITY_WAITS: dict[str, Callable[[], tenacity.wait.wait_base]] = {
    "wait_fixed": lambda: tenacity.wait_fixed(2),
    "wait_exponential": lambda: tenacity.wait_exponential(multiplier=0.5, max=6),
    "wait_exponential_jitter": lambda: tenacity.wait_exponential_jitter(
        multiplier=1, max=10, jitter=1
    ),
    "wait_random_exponential": lambda: tenacity.wait_random_exponential(multiplier=1, max=20),
    "wait_fixed_plus_wait_random": lambda: tenacity.wait_fixed(1) + tenacity.wait_random(0, 1),
    "wait_incrementing": lambda: tenacity.wait_incrementing(start=1, increment=0.5, max=3),
    "wait_chain": lambda: tenacity.wait_chain(
        *[tenacity.wait_fixed(1)] * 3, tenacity.wait_fixed(4)
    ),
    "wait_exception": lambda: tenacity.wait_exception(lambda exc: exc.args[0] / 4),
    "sum_of_three": lambda: (
        tenacity.wait_random(0, 0.5) + tenacity.wait_exponential(max=8) + tenacity.wait_fixed(0.1)
    ),
}


@pytest.mark.parametrize("make_wait", list(TENACITY_WAITS.values()), ids=list(TENACITY_WAITS))
@pytest.mark.usefixtures("global_random")
def test_tenacity_strategies_give_the_waits_tenacity_would(
    make_wait: Callable[[], tenacity.wait.wait_base],
) -> None:
    clock = ManualClock()
    retry = Retry(9, wait=make_wait(), clock=clock)
    scripts = [Script(Boom) for _ in range(5)]
    random.seed(1234)
    with capture_events() as events:
        for script in scripts:
            with pytest.raises(Boom):
                retry.call(script)
    got = [e.delay for e in scheduled(events)]

    strategy = make_wait()
    random.seed(1234)
    expected = [
        strategy(call_state(attempt, exc))
        for script in scripts
        for attempt, exc in enumerate(script.raised[:-1], start=1)
    ]
    assert got == expected
    assert clock.monotonic() == pytest.approx(math.fsum(expected))


@pytest.mark.usefixtures("global_random")
def test_tenacity_strategy_bounds() -> None:
    random.seed(7)
    delays = run_failing(
        Retry(8, wait=tenacity.wait_fixed(1) + tenacity.wait_random(0, 1), clock=ManualClock()),
        200,
    )
    samples = [d for values in delays.values() for d in values]
    assert all(1.0 <= d <= 2.0 for d in samples)
    assert min(samples) < 1.05
    assert max(samples) > 1.95

    delays = run_failing(
        Retry(
            8,
            wait=tenacity.wait_exponential_jitter(multiplier=1, max=10, jitter=1),
            clock=ManualClock(),
        ),
        100,
    )
    for n, values in delays.items():
        low = min(10.0, 2.0 ** (n - 1))
        assert all(low <= d <= min(10.0, low + 1.0) for d in values)

    delays = run_failing(
        Retry(8, wait=tenacity.wait_random_exponential(multiplier=1, max=20), clock=ManualClock()),
        100,
    )
    for n, values in delays.items():
        ceiling = min(20.0, 2.0 ** (n - 1))
        assert all(0.0 <= d <= ceiling for d in values)
        assert max(values) > 0.9 * ceiling


def test_tenacity_strategies_see_the_result_that_is_retried() -> None:
    class WaitForResult(tenacity.wait.wait_base):
        def __call__(self, retry_state: tenacity.RetryCallState) -> float:
            assert retry_state.outcome is not None
            return float(retry_state.outcome.result()["retry_after"])

    clock = ManualClock()
    retry = Retry(3, wait=WaitForResult(), on_result=lambda r: r["retry_after"] > 0, clock=clock)
    assert retry.call(Script({"retry_after": 2}, {"retry_after": 5}, {"retry_after": 0})) == {
        "retry_after": 0
    }
    assert clock.monotonic() == 7


# -- deadlines -------------------------------------------------------------------------------


def test_without_a_deadline_long_waits_are_slept(flavor: Flavor) -> None:
    clock = ManualClock()
    script = Script(Boom)
    with pytest.raises(Boom):
        flavor.run(Retry(3, wait=1000, clock=clock), script)
    assert script.remaining == [None, None, None]
    assert clock.monotonic() == 2000


def test_gives_up_at_once_when_the_next_wait_would_pass_the_deadline(flavor: Flavor) -> None:
    clock = RecordingClock()
    retry = Retry(5, wait=10, clock=clock, name="r")
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(compose(Timeout(5, clock=clock), retry), script)
    assert info.value is script.raised[0]
    assert script.calls == 1
    assert script.remaining == [5.0]
    assert clock.sleeps == []  # not even a partial wait
    assert clock.monotonic() == 0.0
    assert scheduled(events) == []
    assert exhausted(events) == [RetriesExhausted("r", "retry", 1, "deadline", info.value, None)]
    assert retry.metrics() == RetryMetrics(0, 0, 0, 1, 0)


def test_retries_while_waits_fit_in_what_the_deadline_leaves(flavor: Flavor) -> None:
    clock = RecordingClock()
    retry = Retry(10, wait=2, clock=clock)
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom) as info:
        flavor.run(compose(Timeout(5, clock=clock), retry), script)
    assert info.value is script.raised[-1]
    assert script.remaining == [5.0, 3.0, 1.0]  # exact: the Timeout reads the ManualClock
    assert script.calls == 3
    assert clock.monotonic() == 4.0
    assert [s for s in clock.sleeps if s > 0] == [2.0, 2.0]
    assert [(e.attempts, e.reason) for e in exhausted(events)] == [(3, "deadline")]
    assert retry.metrics() == RetryMetrics(2, 0, 0, 1, 0)


def test_the_deadline_check_uses_each_scheduled_wait(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(10, wait=lambda attempt: [1.0, 2.0, 8.0, 1.0][attempt - 1], clock=clock)
    script = Script(Boom)
    with pytest.raises(Boom):
        flavor.run(compose(Timeout(10, clock=clock), retry), script)
    # 1 s and 2 s fit (7 s left after them); the third wait, 8 s, does not.
    assert script.calls == 3
    assert script.remaining == [10.0, 9.0, 7.0]
    assert clock.monotonic() == 3.0


def test_a_deadline_give_up_returns_a_retryable_result(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(4, wait=3, on_result=lambda r: r == "busy", clock=clock)
    with capture_events() as events:
        assert flavor.run(compose(Timeout(4, clock=clock), retry), Script("busy")) == "busy"
    assert clock.monotonic() == 3.0
    assert [(e.attempts, e.reason, e.result) for e in exhausted(events)] == [
        (2, "deadline", "busy")
    ]


# -- never retried: open circuits, cancellation, interrupts ----------------------------------


@pytest.mark.parametrize(
    ("on", "retried"),
    [
        (Exception, False),
        (ResilienceError, False),
        ((ValueError, Boom), False),
        (CircuitOpenError, True),
        (RejectedError, True),
        ((ValueError, CircuitOpenError), True),
        (lambda exc: True, True),
    ],
    ids=[
        "default",
        "ResilienceError",
        "other-types",
        "CircuitOpenError",
        "RejectedError",
        "tuple-with-CircuitOpenError",
        "predicate",
    ],
)
def test_an_open_circuit_is_retried_only_when_on_asks_for_it(
    flavor: Flavor, on: Any, retried: bool
) -> None:
    clock = ManualClock()
    retry = Retry(3, wait=1, on=on, clock=clock)
    script = Script(CircuitOpenError("open", retry_after=1.0), "ok")
    if retried:
        assert flavor.run(retry, script) == "ok"
        assert script.calls == 2
    else:
        with pytest.raises(CircuitOpenError) as info:
            flavor.run(retry, script)
        assert info.value is script.raised[0]
        assert script.calls == 1
        assert clock.monotonic() == 0


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupts_are_never_retried(flavor: Flavor, interrupt: type[BaseException]) -> None:
    clock = ManualClock()
    retry = Retry(5, wait=1, on=lambda exc: True, clock=clock)
    first = Script(interrupt)
    with pytest.raises(interrupt) as info:
        flavor.run(retry, first)
    assert info.value is first.raised[0]
    assert first.calls == 1

    later = Script(Boom, interrupt, "never")
    with capture_events() as events, pytest.raises(interrupt) as info:
        flavor.run(retry, later)
    assert info.value is later.raised[1]
    assert later.calls == 2
    assert exhausted(events) == []
    assert clock.monotonic() == 1


async def test_cancellation_raised_by_the_function_is_not_retried() -> None:
    retry = Retry(5, wait=1, on=lambda exc: True, clock=ManualClock())
    calls = 0

    async def cancels_itself() -> None:
        nonlocal calls
        calls += 1
        scope.cancel()
        await anyio.lowlevel.checkpoint()

    with anyio.CancelScope() as scope:
        await retry.call_async(cancels_itself)
    assert scope.cancelled_caught
    assert calls == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_cancelled_error_is_not_retried() -> None:
    retry = Retry(5, wait=1, on=lambda exc: True, clock=ManualClock())
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry.call_async(fn)
    assert calls == 1


class BlockingClock(ManualClock):
    """A clock whose async sleep blocks until cancelled, announcing that it started."""

    __slots__ = ("sleeping",)

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = anyio.Event()

    async def asleep(self, seconds: float) -> None:
        self.sleeping.set()
        await anyio.sleep_forever()


async def test_cancellation_during_the_wait_stops_retrying_and_propagates() -> None:
    clock = BlockingClock()
    retry = Retry(5, wait=1, clock=clock)
    script = Script(Boom)
    outcome: list[str] = []

    async def target() -> Any:
        await anyio.lowlevel.checkpoint()
        return script()

    async def caller() -> None:
        try:
            await retry.call_async(target)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("returned")  # pragma: no cover - the call is cancelled

    with capture_events() as events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await clock.sleeping.wait()
            tg.cancel_scope.cancel()
    assert outcome == ["cancelled"]
    assert script.calls == 1
    assert exhausted(events) == []
    assert retry.metrics().exhausted == 0


async def test_cancellation_at_the_wait_checkpoint_stops_retrying() -> None:
    """The cancel arrives during the attempt; the wait's checkpoint delivers it."""
    retry = Retry(5, wait=1, clock=ManualClock())
    calls = 0

    async def fails_after_cancel() -> None:
        nonlocal calls
        calls += 1
        scope.cancel()
        raise Boom

    with anyio.CancelScope() as scope:
        await retry.call_async(fails_after_cancel)
    assert scope.cancelled_caught
    assert calls == 1


# -- per-call state -----------------------------------------------------------------------------


def test_concurrent_threads_each_see_their_own_attempt_numbers() -> None:
    """Two threads retry through one policy in lockstep; each sees attempts 1..n in order.

    tenacity keeps a call's ``attempt_number`` in a statistics dict shared by every call
    of a decorated function (``wrapped_f.statistics``: each call clears it and writes its
    own numbers into the same dict), so a thread reading it while another retries sees the
    other's attempts. Here the attempt number lives in the call's own generator flow, so
    the wait callable (and the events) get each call's own numbering.
    """
    seen: dict[int, list[int]] = defaultdict(list)
    order: list[int] = []
    lock = threading.Lock()

    def wait(attempt: int) -> float:
        with lock:
            seen[threading.get_ident()].append(attempt)
            order.append(threading.get_ident())
        return 0.5

    retry = Retry(6, wait=wait, clock=ManualClock())
    seen.clear()
    order.clear()
    barrier = threading.Barrier(2)

    def attempt() -> None:
        barrier.wait(timeout=10)  # both calls are in flight at every attempt
        raise Boom

    outcomes: list[BaseException] = []

    def worker() -> None:
        try:
            retry.call(attempt)
        except BaseException as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [type(exc) for exc in outcomes] == [Boom, Boom]
    assert len(seen) == 2
    assert list(seen.values()) == [[1, 2, 3, 4, 5]] * 2
    assert order != sorted(order)  # the two calls really were interleaved
    assert retry.metrics() == RetryMetrics(10, 0, 2, 0, 0)


def test_concurrent_threads_each_get_their_own_decorrelated_jitter_schedule() -> None:
    jitter = DecorrelatedJitter(0.1, max=100.0, random=ConstantRandom(0.25))
    expected = _polly_v2(0.1, 100.0, [0.25] * 5)
    retry = Retry(6, wait=jitter, clock=ManualClock())
    delays: dict[int, list[float]] = defaultdict(list)
    retry.add_listener(
        lambda e: (
            delays[threading.get_ident()].append(e.delay) if isinstance(e, RetryScheduled) else None
        )
    )
    barrier = threading.Barrier(3)

    def attempt() -> None:
        barrier.wait(timeout=10)
        raise Boom

    def worker() -> None:
        with pytest.raises(Boom):
            retry.call(attempt)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(delays) == 3
    for got in delays.values():
        assert got == pytest.approx(expected, rel=1e-12)


async def test_concurrent_tasks_each_see_their_own_attempt_numbers() -> None:
    clock = ManualClock()
    jitter = DecorrelatedJitter(0.1, max=100.0, random=ConstantRandom(0.75))
    retry = Retry(5, wait=jitter, clock=clock)
    seen: dict[str, list[tuple[int, float]]] = defaultdict(list)
    retry.add_listener(
        lambda e: (
            seen[e.exception.args[0]].append((e.attempt, e.delay))
            if isinstance(e, RetryScheduled)
            else None
        )
    )
    labels = ["a", "b", "c"]
    arrived: dict[int, int] = defaultdict(int)
    everyone: dict[int, anyio.Event] = defaultdict(anyio.Event)

    async def attempt(label: str, state: list[int]) -> None:
        state[0] += 1
        n = state[0]
        arrived[n] += 1
        if arrived[n] == len(labels):
            everyone[n].set()
        await everyone[n].wait()  # all calls are in flight at every attempt
        raise Boom(label)

    async def caller(label: str) -> None:
        with pytest.raises(Boom):
            await retry.call_async(attempt, label, [0])

    async with anyio.create_task_group() as tg:
        for label in labels:
            tg.start_soon(caller, label)
    expected = _polly_v2(0.1, 100.0, [0.75] * 4)
    assert sorted(seen) == labels
    for label in labels:
        assert [a for a, _ in seen[label]] == [1, 2, 3, 4]
        assert [d for _, d in seen[label]] == pytest.approx(expected, rel=1e-12)


# -- instant_retries ----------------------------------------------------------------------------


def test_instant_retries_waits_zero_and_keeps_attempts(flavor: Flavor) -> None:
    clock = ManualClock()
    retry = Retry(4, wait=10, clock=clock)
    script = Script(Boom)
    with instant_retries(), capture_events() as events, pytest.raises(Boom):
        flavor.run(retry, script)
    assert script.calls == 4
    assert clock.monotonic() == 0
    assert [e.delay for e in scheduled(events)] == [0.0, 0.0, 0.0]


def test_instant_retries_caps_attempts(flavor: Flavor) -> None:
    retry = Retry(5, wait=10, clock=ManualClock())
    with instant_retries(attempts=2):
        script = Script(Boom)
        with pytest.raises(Boom):
            flavor.run(retry, script)
        assert script.calls == 2
    with instant_retries(attempts=50):  # a cap above the policy's own changes nothing
        script = Script(Boom)
        with pytest.raises(Boom):
            flavor.run(retry, script)
        assert script.calls == 5


def _attempts_and_time(retry: Retry, clock: ManualClock) -> tuple[int, float]:
    start = clock.monotonic()
    script = Script(Boom)
    with pytest.raises(Boom):
        retry.call(script)
    return script.calls, clock.monotonic() - start


def test_instant_retries_nests_and_restores_the_previous_state() -> None:
    clock = ManualClock()
    retry = Retry(5, wait=10, clock=clock)
    assert _attempts_and_time(retry, clock) == (5, 40)
    with instant_retries(attempts=3):
        assert _attempts_and_time(retry, clock) == (3, 0)
        with instant_retries():
            assert _attempts_and_time(retry, clock) == (5, 0)
            with instant_retries(attempts=2):
                assert _attempts_and_time(retry, clock) == (2, 0)
            assert _attempts_and_time(retry, clock) == (5, 0)
        assert _attempts_and_time(retry, clock) == (3, 0)
    assert _attempts_and_time(retry, clock) == (5, 40)


def test_instant_retries_restores_on_an_exception() -> None:
    clock = ManualClock()
    retry = Retry(3, wait=1, clock=clock)
    with pytest.raises(RuntimeError), instant_retries(attempts=1):
        raise RuntimeError
    assert _attempts_and_time(retry, clock) == (3, 2)


def test_instant_retries_is_exported_from_testing() -> None:
    assert resilient.testing.instant_retries is instant_retries


@pytest.mark.parametrize(
    ("attempts", "error"), [(0, ValueError), (-1, ValueError), (1.5, TypeError)]
)
def test_instant_retries_rejects_bad_attempts(attempts: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="attempts"), instant_retries(attempts=attempts):
        pass  # pragma: no cover
    clock = ManualClock()
    assert _attempts_and_time(Retry(2, wait=1, clock=clock), clock) == (2, 1)


# -- options -----------------------------------------------------------------------------------


def _raising_wait(attempt: int) -> float:
    raise RuntimeError("no")


@pytest.mark.parametrize(
    ("options", "error", "option"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": -1}, ValueError, "attempts"),
        ({"attempts": 1.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"attempts": "3"}, TypeError, "attempts"),
        ({"wait": -1}, ValueError, "wait"),
        ({"wait": "x"}, TypeError, "wait"),
        ({"wait": math.nan}, ValueError, "wait"),
        ({"wait": math.inf}, ValueError, "wait"),
        ({"wait": datetime.timedelta(seconds=-1)}, ValueError, "wait"),
        ({"wait": _raising_wait}, ValueError, "wait"),
        ({"wait": lambda attempt: -1.0}, ValueError, "wait"),
        ({"wait": lambda attempt: "x"}, TypeError, "wait"),
        ({"on": "x"}, TypeError, "on"),
        ({"on": 3}, TypeError, "on"),
        ({"on": int}, TypeError, "on"),
        ({"on": (ValueError, "x")}, TypeError, "on"),
        ({"on_result": 3}, TypeError, "on_result"),
        ({"on_result": "x"}, TypeError, "on_result"),
        ({"budget": object()}, TypeError, "budget"),
        ({"budget": 0.2}, TypeError, "budget"),
        ({"name": 3}, TypeError, "name"),
    ],
)
def test_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    with pytest.raises(error, match=rf"\b{option}\b"):
        Retry(**options)


@pytest.mark.parametrize(
    ("build", "error", "option"),
    [
        (lambda: ExponentialJitter(0), ValueError, "base"),
        (lambda: ExponentialJitter(-1), ValueError, "base"),
        (lambda: ExponentialJitter(0.1, max=0), ValueError, "max"),
        (lambda: ExponentialJitter("x"), TypeError, "base"),
        (lambda: DecorrelatedJitter(0), ValueError, "median_first"),
        (lambda: DecorrelatedJitter(0.1, max=-2), ValueError, "max"),
        (lambda: DecorrelatedJitter(None), TypeError, "median_first"),
    ],
)
def test_bad_jitter_options_raise_naming_the_option(
    build: Callable[[], object], error: type[Exception], option: str
) -> None:
    with pytest.raises(error, match=rf"\b{option}\b"):
        build()


def test_good_options_are_kept() -> None:
    retry = Retry(4, name="n")
    assert retry.attempts == 4
    assert retry.name == "n"
    assert retry.budget is None
    assert "attempts=4" in repr(retry)
    assert Retry().attempts == 3


# -- composition ---------------------------------------------------------------------------


def test_retries_stop_once_an_inner_breaker_opens(flavor: Flavor) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "dep", window=CountWindow(2), minimum_calls=2, open_duration=60, clock=clock
    )
    retry = Retry(10, wait=1, clock=clock)
    script = Script(Boom)
    with capture_events() as events, pytest.raises(CircuitOpenError):
        flavor.run(compose(retry, breaker), script)
    assert script.calls == 2  # the breaker opened on the second failure
    assert breaker.state is CircuitState.OPEN
    assert [e.attempt for e in scheduled(events)] == [1, 2]
    assert exhausted(events) == []
    assert clock.monotonic() == 2

    again = Script(Boom)
    with pytest.raises(CircuitOpenError):
        flavor.run(compose(retry, breaker), again)
    assert again.calls == 0  # still open: rejected at once, and not retried
    assert clock.monotonic() == 2
    # Each call ends in one outcome: the first stopped by the open circuit after its
    # retries (it used to be in none), the second rejected on its first attempt.
    assert retry.metrics() == RetryMetrics(2, 0, 0, 0, 0, stopped=1, first_attempt=1)
    assert retry.metrics().calls == 2


def test_retry_through_an_open_breaker_when_asked_waits_for_it(flavor: Flavor) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "dep",
        window=CountWindow(2),
        minimum_calls=2,
        open_duration=30,
        half_open_calls=1,
        clock=clock,
    )
    retry = Retry(4, wait=40, on=(Boom, CircuitOpenError), clock=clock)
    script = Script(Boom, Boom, "ok")
    assert flavor.run(compose(retry, breaker), script) == "ok"
    # 2 failures open it; after 40 s the third attempt is the half-open trial, and passes.
    assert script.calls == 3
    assert breaker.state is CircuitState.CLOSED


def test_a_fallback_outside_gets_the_last_exception(flavor: Flavor) -> None:
    clock = ManualClock()
    handled: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        handled.append(exc)
        return "cached"

    script = Script(Boom)
    policy = compose(Fallback(handler), Retry(3, wait=2, clock=clock))
    assert flavor.run(policy, script) == "cached"
    assert script.calls == 3
    assert handled == script.raised[-1:]
    assert handled[0] is script.raised[-1]
    assert clock.monotonic() == 4


def test_fallback_retry_breaker_stack(flavor: Flavor) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker("dep", window=CountWindow(3), minimum_calls=3, clock=clock)
    handled: list[BaseException] = []
    policy = compose(
        Fallback(lambda exc: handled.append(exc) or "cached"),
        Retry(5, wait=1, clock=clock),
        breaker,
    )
    script = Script(Boom)
    assert flavor.run(policy, script) == "cached"
    assert script.calls == 3
    assert len(handled) == 1
    assert isinstance(handled[0], CircuitOpenError)
