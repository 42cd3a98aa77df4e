"""reconfigure() while calls run: threads and tasks, invariants held; same values, no change.

The invariants are the policies' promises, checked from inside the guarded functions:
a bulkhead never has more than its limit in flight once a shrink's debt is paid (the
calls in flight at the shrink finished), a limiter on a frozen clock never admits more
after a change than the new burst allows, and a breaker's counts add up to the calls
made, with only transitions its table has.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    RateLimitedError,
    RateLimiter,
    Reconfigured,
    Retry,
    compose,
)
from resilient._core._breaker_state import TRANSITIONS
from resilient.testing import ManualClock, capture_events

THREADS = 8


class InFlight:
    """Counts the calls inside a guarded function; keeps the most seen per phase."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.phase = 0
        self.most: dict[int, int] = {}

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.most[self.phase] = max(self.most.get(self.phase, 0), self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def settled(bulkhead: Bulkhead) -> None:
    """Wait (polling, no sleep) until a shrink's debt is paid by the calls in flight."""
    core = bulkhead._core
    while core._debt:
        bulkhead.metrics()  # takes back free slots for the debt
        threading.Event().wait(0.0005)


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("how", ["decorated", "composed"])
def test_threads_never_exceed_a_new_limit_once_its_debt_is_paid(how: str) -> None:
    bulkhead = Bulkhead(8, max_wait=0.001)
    counter = InFlight()
    stop = threading.Event()

    def work() -> None:
        counter.enter()
        for _ in range(50):  # a little work, with thread switches inside
            pass
        counter.leave()

    guarded = bulkhead(work) if how == "decorated" else compose(Retry(1), bulkhead)(work)
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                guarded()
            except BulkheadFullError:
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    limits = [2, 6, 1, 8, 3, 5, 2]
    try:
        for phase, limit in enumerate(limits, start=1):
            bulkhead.reconfigure(max_concurrent=limit)
            settled(bulkhead)
            with counter.lock:
                counter.phase = phase  # from here on, never more than `limit`
                counter.most[phase] = counter.now
            for _ in range(200):
                threading.Event().wait(0.0001)
            with counter.lock:
                assert counter.most[phase] <= limit, (phase, limit, counter.most)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == []
    metrics = bulkhead.metrics()
    assert (metrics.in_flight, metrics.waiting, metrics.max_concurrent) == (0, 0, 2)
    assert metrics.max_observed <= 8


@pytest.mark.parametrize("limits", [[3, 1, 5, 2], [6, 2, 2, 4]])
async def test_tasks_never_exceed_a_new_limit_once_its_debt_is_paid(
    anyio_backend: str, limits: list[int]
) -> None:
    bulkhead = Bulkhead(4, max_wait=5.0)
    inside = 0
    most: dict[int, int] = {}
    phase = 0
    finished = 0

    @bulkhead
    async def work() -> None:
        nonlocal inside
        inside += 1
        most[phase] = max(most.get(phase, 0), inside)
        await anyio.sleep(0)
        await anyio.sleep(0)
        inside -= 1

    async def caller() -> None:
        nonlocal finished
        for _ in range(40):
            await work()
        finished += 1

    async with anyio.create_task_group() as group:
        for _ in range(12):
            group.start_soon(caller)
        for number, limit in enumerate(limits, start=1):
            await anyio.sleep(0)
            bulkhead.reconfigure(max_concurrent=limit)
            while bulkhead._core._debt:
                bulkhead.metrics()
                await anyio.sleep(0)
            phase = number
            most[phase] = inside
            for _ in range(20):
                await anyio.sleep(0)
            assert most[phase] <= limit, (phase, limit, most)
    assert finished == 12
    assert bulkhead.metrics().in_flight == 0


@pytest.mark.usefixtures("fast_switching")
def test_a_limiter_on_a_frozen_clock_admits_no_more_than_the_new_burst() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1000, burst=1000, clock=clock)
    guarded = limiter(lambda: None)
    stop = threading.Event()
    admitted = [0] * THREADS

    def loop(index: int) -> None:
        while not stop.is_set():
            try:
                guarded()
            except RateLimitedError:
                continue
            admitted[index] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        while sum(admitted) < 100:
            threading.Event().wait(0.0005)
        limiter.reconfigure(rate=5, burst=5)
        after_change = limiter.metrics().admitted
        for _ in range(50):
            threading.Event().wait(0.0005)
        assert limiter.metrics().admitted - after_change <= 5
        clock.advance(1.0)  # one second at 5 a second
        before = limiter.metrics().admitted
        for _ in range(50):
            threading.Event().wait(0.0005)
        assert limiter.metrics().admitted - before <= 5
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert limiter.metrics().admitted == sum(admitted) <= 1000 + 5


@pytest.mark.usefixtures("fast_switching")
def test_a_breaker_reconfigured_under_load_counts_every_call_and_moves_by_its_table() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "load", window=CountWindow(20), minimum_calls=10, open_duration=0.5, clock=clock
    )
    seen: list[Any] = []
    breaker.add_listener(seen.append)
    rng = random.Random(7)
    made = [0] * THREADS
    stop = threading.Event()
    unexpected: list[BaseException] = []

    @breaker
    def call(fails: bool) -> None:
        if fails:
            raise ValueError

    def loop(index: int) -> None:
        local = random.Random(index)
        while not stop.is_set():
            made[index] += 1
            try:
                call(local.random() < 0.4)
            except (ValueError, CircuitOpenError):
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(40):
            breaker.reconfigure(
                failure_rate_threshold=rng.choice([0.2, 0.5, 0.9]),
                window=CountWindow(rng.choice([5, 20, 50])),
                minimum_calls=rng.choice([1, 10, 30]),
                half_open_calls=rng.choice([1, 3]),
            )
            clock.advance(rng.choice([0.0, 0.6]))
            threading.Event().wait(0.0005)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert unexpected == []
    metrics = breaker.metrics()
    total = (
        metrics.total_successful_calls
        + metrics.total_failed_calls
        + metrics.total_ignored_calls
        + metrics.total_not_permitted_calls
    )
    assert total == sum(made)
    for (before, after), count in breaker.transition_counts().items():
        assert count > 0
        assert after in TRANSITIONS[before].values()
    assert any(isinstance(event, Reconfigured) for event in seen)


# -- reconfiguring to the same values changes nothing ----------------------------------

CONFIGS = st.fixed_dictionaries(
    {
        "failure_rate_threshold": st.sampled_from([0.25, 0.5, 1.0]),
        "window": st.sampled_from([3, 5, 10]).map(CountWindow),
        "minimum_calls": st.integers(1, 6),
        "open_duration": st.sampled_from([1.0, 2.5]),
        "half_open_calls": st.integers(1, 3),
    }
)
STEPS = st.lists(
    st.one_of(st.sampled_from(["ok", "fail", "same"]), st.floats(0.0, 3.0)), max_size=40
)


def drive(breaker: CircuitBreaker, clock: ManualClock, step: object) -> str:
    if isinstance(step, float):
        clock.advance(step)
        return "tick"
    try:
        breaker.call(lambda: None) if step == "ok" else breaker.call(_fail)
    except CircuitOpenError:
        return "rejected"
    except ValueError:
        return "failed"
    return "ok"


def _fail() -> None:
    raise ValueError


@settings(max_examples=60, deadline=None)
@given(config=CONFIGS, steps=STEPS)
def test_reconfiguring_a_breaker_to_its_own_options_changes_nothing(
    config: dict[str, Any], steps: list[object]
) -> None:
    clocks = ManualClock(), ManualClock()
    twins = [CircuitBreaker("t", clock=clock, **config) for clock in clocks]
    with capture_events() as events:
        for step in steps:
            if step == "same":
                same = {**config, "window": CountWindow(config["window"].size)}
                assert twins[1].reconfigure(**same) is False
                continue
            decisions = [drive(b, c, step) for b, c in zip(twins, clocks, strict=True)]
            assert decisions[0] == decisions[1]
            assert twins[0].metrics() == twins[1].metrics()
    assert not any(isinstance(event, Reconfigured) for event in events)
    assert twins[0].transition_counts() == twins[1].transition_counts()


@settings(max_examples=40, deadline=None)
@given(
    rate=st.sampled_from([1, 2.5, 10]),
    burst=st.integers(1, 5),
    steps=st.lists(st.one_of(st.just("call"), st.just("same"), st.floats(0, 1)), max_size=30),
)
def test_reconfiguring_a_limiter_or_bulkhead_to_its_own_options_changes_nothing(
    rate: float, burst: int, steps: list[object]
) -> None:
    clocks = ManualClock(), ManualClock()
    limiters = [RateLimiter(rate, burst=burst, clock=c) for c in clocks]
    bulkheads = [Bulkhead(burst, name="b"), Bulkhead(burst, name="b")]
    held: list[list[Callable[[], Any]]] = [[], []]
    with capture_events() as events:
        for step in steps:
            if step == "same":
                assert limiters[1].reconfigure(rate=rate, burst=burst, per=1.0) is False
                assert bulkheads[1].reconfigure(max_concurrent=burst, max_wait=0) is False
            elif step == "call":
                outcomes = []
                for limiter, bulkhead, mine in zip(limiters, bulkheads, held, strict=True):
                    try:
                        limiter.call(lambda: None)
                        outcomes.append("admitted")
                    except RateLimitedError:
                        outcomes.append("refused")
                    if bulkhead._core.take():  # a slot held until the pool is full
                        mine.append(bulkhead._core.release)
                        outcomes.append("slot")
                    else:
                        while mine:
                            mine.pop()()
                        outcomes.append("full")
                assert outcomes[:2] == outcomes[2:]
            else:
                for clock in clocks:
                    clock.advance(step)  # type: ignore[arg-type]
            assert limiters[0].metrics() == limiters[1].metrics()
            assert bulkheads[0].metrics() == bulkheads[1].metrics()
    for mine in held:
        while mine:
            mine.pop()()
    assert not any(isinstance(event, Reconfigured) for event in events)
