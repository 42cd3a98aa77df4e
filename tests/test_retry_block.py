"""Retrying a block: ``for attempt in retry: with attempt: ...`` (issue 13, item 9).

The block form is driven by the same retry flow as the decorator, so every scenario is
run both ways and the outcomes, waits, events and counts must be the same. Waits go
through a ``ManualClock``; nothing sleeps for real.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from resilient import (
    Attempt,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    DecorrelatedJitter,
    Event,
    RetriesExhausted,
    Retry,
    RetryBudget,
    RetryMetrics,
    RetryScheduled,
    Timeout,
)
from resilient.testing import ManualClock, capture_events, instant_retries


class Boom(Exception):
    pass


class Fatal(Exception):
    pass


class RecordingClock(ManualClock):
    __slots__ = ("sleeps",)

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().asleep(seconds)


class Script:
    """The n-th call (from 1) plays ``outcomes[n - 1]``; the last outcome repeats."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self) -> Any:
        self.calls += 1
        outcome = self.outcomes[min(self.calls, len(self.outcomes)) - 1]
        if isinstance(outcome, type) and issubclass(outcome, BaseException):
            outcome = outcome(self.calls)
        if isinstance(outcome, BaseException):
            self.raised.append(outcome)
            raise outcome
        return outcome


def run_block(retry: Retry, fn: Callable[[], Any], backend: str | None) -> Any:
    """``for attempt in retry: with attempt:`` (sync), or its async form on ``backend``."""
    if backend is None:
        for attempt in retry:
            with attempt:
                result = fn()
        return result

    async def main() -> Any:
        async for attempt in retry:
            async with attempt:
                await anyio.lowlevel.checkpoint()
                result = fn()
        return result

    return anyio.run(main, backend=backend)


def run_decorated(retry: Retry, fn: Callable[[], Any], backend: str | None) -> Any:
    if backend is None:
        return retry.call(fn)

    async def target() -> Any:
        await anyio.lowlevel.checkpoint()
        return fn()

    async def main() -> Any:
        return await retry.call_async(target)

    return anyio.run(main, backend=backend)


BACKENDS = [None, "asyncio", "trio"]


def outcome(run: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "returned", run()
    except Exception as exc:
        return "raised", exc


def shape(events: list[Event]) -> list[tuple[Any, ...]]:
    """Events without object identity: the same scenario run twice gives equal shapes."""
    out: list[tuple[Any, ...]] = []
    for e in events:
        if isinstance(e, RetryScheduled):
            exc = None if e.exception is None else repr(e.exception)
            out.append(("scheduled", e.policy, e.attempt, e.delay, exc))
        elif isinstance(e, RetriesExhausted):
            exc = None if e.exception is None else repr(e.exception)
            out.append(("exhausted", e.policy, e.attempts, e.reason, exc))
        else:
            out.append((type(e).__name__, e.policy))
    return out


# -- the idiom ------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_success_after_failures(backend: str | None) -> None:
    clock = RecordingClock()
    retry = Retry(4, wait=2, clock=clock)
    script = Script(Boom, Boom, "ok")
    assert run_block(retry, script, backend) == "ok"
    assert script.calls == 3
    assert clock.sleeps == [2, 2]
    assert retry.metrics() == RetryMetrics(2, 1, 0, 0, 0)
    assert retry.attempts == 4  # still the int it was


@pytest.mark.parametrize("backend", BACKENDS)
def test_success_at_once_waits_for_nothing(backend: str | None) -> None:
    clock = RecordingClock()
    retry = Retry(3, wait=2, clock=clock)
    with capture_events() as events:
        assert run_block(retry, Script("ok"), backend) == "ok"
    assert events == []
    assert clock.sleeps == []
    assert retry.metrics() == RetryMetrics(0, 0, 0, 0, 0, first_attempt=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_exhaustion_reraises_the_last_exception_unchanged(backend: str | None) -> None:
    retry = Retry(3, wait=1, clock=ManualClock())
    script = Script(Boom)
    with pytest.raises(Boom) as info:
        run_block(retry, script, backend)
    assert info.value is script.raised[-1]
    assert script.calls == 3
    assert retry.metrics() == RetryMetrics(2, 0, 1, 0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_exception_not_retried_is_raised_at_once(backend: str | None) -> None:
    retry = Retry(5, wait=1, on=Boom, clock=ManualClock())
    first = Script(Fatal)
    with pytest.raises(Fatal) as info:
        run_block(retry, first, backend)
    assert info.value is first.raised[0]
    assert first.calls == 1
    later = Script(Boom, Fatal)
    with pytest.raises(Fatal):
        run_block(retry, later, backend)
    assert later.calls == 2
    assert retry.metrics() == RetryMetrics(1, 0, 0, 0, 0, stopped=1, first_attempt=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attempts_are_numbered_from_one(backend: str | None) -> None:
    seen: list[int] = []
    retry = Retry(3, wait=0)
    if backend is None:
        with pytest.raises(Boom):
            for attempt in retry:
                with attempt:
                    seen.append(attempt.number)
                    raise Boom
    else:

        async def main() -> None:
            async for attempt in retry:
                async with attempt:
                    seen.append(attempt.number)
                    raise Boom

        with pytest.raises(Boom):
            anyio.run(main, backend=backend)
    assert seen == [1, 2, 3]
    assert repr(Attempt.__name__) == "'Attempt'"


def test_interrupts_pass_through_and_are_not_retried() -> None:
    retry = Retry(5, wait=0)
    calls = 0
    with pytest.raises(KeyboardInterrupt):
        for attempt in retry:
            with attempt:
                calls += 1
                raise KeyboardInterrupt
    assert calls == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_budget_stops_the_block(backend: str | None) -> None:
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=0, ratio=0.5, clock=clock)
    retry = Retry(5, wait=0, budget=budget, clock=clock)
    script = Script(Boom)
    with capture_events() as events, pytest.raises(Boom):
        run_block(retry, script, backend)
    assert script.calls == 1  # half a retry deposited by one first attempt: refused
    assert [e.reason for e in events if isinstance(e, RetriesExhausted)] == ["budget"]
    assert retry.metrics() == RetryMetrics(0, 0, 0, 0, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_deadline_stops_the_block(backend: str | None) -> None:
    clock = ManualClock()
    retry = Retry(5, wait=1, clock=clock)
    script = Script(Boom)

    def guarded() -> None:
        # The block runs inside a 2.5 s timeout: two waits of 1 s fit, a third does not.
        def body() -> Any:
            return run_block(retry, script, None)

        Timeout(2.5, clock=clock).call(body)

    if backend is None:
        with pytest.raises(Boom):
            guarded()
    else:

        async def main() -> None:
            async def body() -> Any:
                async for attempt in retry:
                    async with attempt:
                        await anyio.lowlevel.checkpoint()
                        script()

            await Timeout(2.5, clock=clock).call_async(body)

        with pytest.raises(Boom):
            anyio.run(main, backend=backend)
    assert script.calls == 3
    assert retry.metrics().deadline_give_ups == 1


def test_instant_retries_applies_to_blocks() -> None:
    clock = RecordingClock()
    retry = Retry(10, wait=5, clock=clock)
    with instant_retries(attempts=2), pytest.raises(Boom):
        run_block(retry, Script(Boom), None)
    assert clock.sleeps == []
    assert retry.metrics().exhausted == 1


def test_a_retry_is_still_not_a_context_manager() -> None:
    with pytest.raises(TypeError, match="for attempt in retry"), Retry():
        pass


# -- the same as the decorator --------------------------------------------------------

SCENARIOS: dict[str, tuple[Callable[[Any], Retry], tuple[object, ...]]] = {
    "recovers": (lambda clock: Retry(4, wait=1.5, clock=clock, name="r"), (Boom, Boom, "ok")),
    "exhausted": (lambda clock: Retry(3, wait=1, clock=clock, name="r"), (Boom,)),
    "not-retried": (lambda clock: Retry(3, on=Boom, clock=clock, name="r"), (Fatal,)),
    "stopped": (lambda clock: Retry(3, on=Boom, wait=1, clock=clock, name="r"), (Boom, Fatal)),
    "jitter": (
        lambda clock: Retry(
            5,
            wait=DecorrelatedJitter(0.2, random=random.Random(7)),
            clock=clock,
            name="r",
        ),
        (Boom, Boom, Boom, "ok"),
    ),
    "budget": (
        lambda clock: Retry(
            6,
            wait=0,
            budget=RetryBudget(ttl=10, min_retries_per_second=0.2, ratio=0.1, clock=clock),
            clock=clock,
            name="r",
        ),
        (Boom,),
    ),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_block_reports_what_the_decorator_reports(scenario: str, backend: str | None) -> None:
    make, outcomes = SCENARIOS[scenario]
    seen = []
    for run in (run_decorated, run_block):
        clock = RecordingClock()
        retry = make(clock)
        script = Script(*outcomes)
        with capture_events() as events:
            kind, value = outcome(lambda: run(retry, script, backend))  # noqa: B023
        if kind == "raised":
            assert value is script.raised[-1]  # unchanged, either way
            value = repr(value)
        seen.append((kind, value, script.calls, clock.sleeps, shape(events), retry.metrics()))
    assert seen[0] == seen[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_open_circuit_stops_the_block_as_it_stops_the_decorator(backend: str | None) -> None:
    seen = []
    for run in (run_decorated, run_block):
        clock = ManualClock()
        breaker = CircuitBreaker(
            "dep", window=CountWindow(2), minimum_calls=2, open_duration=60, clock=clock
        )
        retry = Retry(10, wait=1, clock=clock, name="r")
        script = Script(Boom)

        def through_breaker(script: Script = script, breaker: CircuitBreaker = breaker) -> Any:
            return breaker.call(script)

        with capture_events() as events, pytest.raises(CircuitOpenError):
            run(retry, through_breaker, backend)
        retry_events = [e for e in events if e.kind == "retry"]
        seen.append((script.calls, shape(retry_events), retry.metrics()))
    assert seen[0] == seen[1]
    assert seen[0][2] == RetryMetrics(2, 0, 0, 0, 0, stopped=1)


# -- one policy, many callers ---------------------------------------------------------


def test_concurrent_blocks_in_threads_keep_their_own_state() -> None:
    retry = Retry(3, wait=0.5, clock=ManualClock())
    barrier = threading.Barrier(8)
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        numbers: list[int] = []
        try:
            barrier.wait()
            for attempt in retry:
                with attempt:
                    numbers.append(attempt.number)
                    if attempt.number < 1 + n % 3:
                        raise Boom(n)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        results[n] = numbers

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == {n: list(range(1, 2 + n % 3)) for n in range(8)}
    metrics = retry.metrics()
    assert metrics.calls == 8
    assert metrics.first_attempt == 3
    assert metrics.recovered == 5


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_concurrent_async_blocks_keep_their_own_state(backend: str) -> None:
    retry = Retry(3, wait=1, clock=ManualClock())
    results: dict[int, list[int]] = {}

    async def worker(n: int) -> None:
        numbers: list[int] = []
        with pytest.raises(Boom) as info:
            async for attempt in retry:
                async with attempt:
                    numbers.append(attempt.number)
                    await anyio.lowlevel.checkpoint()
                    raise Boom(n)
        assert info.value.args == (n,)
        results[n] = numbers

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for n in range(20):
                tg.start_soon(worker, n)

    anyio.run(main, backend=backend)
    assert results == {n: [1, 2, 3] for n in range(20)}
    assert retry.metrics() == RetryMetrics(40, 0, 20, 0, 0)


def test_return_or_break_inside_the_attempt_counts_as_a_success() -> None:
    retry = Retry(3, wait=0, clock=ManualClock())

    def first_try() -> str:
        for attempt in retry:
            with attempt:
                return "at once"
        raise AssertionError("unreachable")  # pragma: no cover

    async def after_a_failure() -> str:
        async for attempt in retry:
            async with attempt:
                if attempt.number == 1:
                    raise Boom
                return "second"
        raise AssertionError("unreachable")  # pragma: no cover

    assert first_try() == "at once"
    assert anyio.run(after_a_failure) == "second"
    for attempt in retry:
        with attempt:
            break
    assert retry.metrics() == RetryMetrics(1, 1, 0, 0, 0, first_attempt=2)


def test_a_failed_wait_ends_the_block_with_its_own_exception() -> None:
    class Broken(ManualClock):
        __slots__ = ()

        def sleep(self, seconds: float) -> None:
            raise OSError("clock broke")

    retry = Retry(3, wait=1, clock=Broken())
    with pytest.raises(Boom) as info:
        for attempt in retry:
            with attempt:
                raise Boom(attempt.number)
    assert info.value.args == (1,)
    assert isinstance(info.value.__context__, OSError)
