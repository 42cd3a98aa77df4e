"""Unit and property tests for ``RateLimiter`` and ``KeyedRateLimiter`` (GCRA).

Time comes from ``resilient.testing.ManualClock`` or from small clocks defined here, so
every decision is deterministic:

* ``GateClock``: time stands still; every sleep is recorded and blocks until the test
  opens a gate (or, for tasks, until cancelled). It shows the wait each caller reserved,
  in the order they reserved, without the waits moving time.
* ``NsClock``: integer nanoseconds; a sleep advances it by exactly what was asked. The
  Hypothesis properties run on it against an exact model (``fractions.Fraction``).

The only real-clock tests use the limiter's own short waits; no test sleeps to let
something happen (state changes are polled in bounded loops that yield).
"""

from __future__ import annotations

import datetime
import functools
import math
import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilient
from resilient import (
    CallRejected,
    Fallback,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    RateLimiterMetrics,
    RejectedError,
    ResilienceError,
    Timeout,
    compose,
)
from resilient.testing import ManualClock, capture_events

NS = 10**9
WAIT = 10.0  # bound on every wait for a state change: reached only when something is broken


# -- clocks and helpers --------------------------------------------------------------------


class GateClock:
    """Time stands still at ``now``; sleeps are recorded and block until released.

    A thread's ``sleep`` blocks until ``open()``; a task's ``asleep`` blocks until
    ``open_tasks`` (an ``anyio.Event`` the test creates) is set, or forever (until
    cancelled) when there is none. ``raise_in_sleep`` makes ``sleep`` raise instead.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.delays: list[float] = []
        self._gate = threading.Event()
        self.open_tasks: anyio.Event | None = None
        self.raise_in_sleep: BaseException | None = None

    def monotonic(self) -> float:
        return self.now

    def open(self) -> None:
        self._gate.set()

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.raise_in_sleep is not None:
            raise self.raise_in_sleep
        if not self._gate.wait(WAIT):  # pragma: no cover - only when a test is broken
            msg = "the gate was never opened"
            raise AssertionError(msg)

    async def asleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.open_tasks is None:
            await anyio.sleep_forever()
        else:
            await self.open_tasks.wait()


class NsClock:
    """Integer nanoseconds; a sleep advances time by exactly the nanoseconds asked for."""

    def __init__(self, ns: int = 0) -> None:
        self.ns = ns
        self.slept: list[int] = []

    def monotonic(self) -> float:
        return self.ns / NS

    def sleep(self, seconds: float) -> None:
        step = round(seconds * NS)
        self.slept.append(step)
        self.ns += step

    async def asleep(self, seconds: float) -> None:  # pragma: no cover - sync use only
        self.sleep(seconds)
        await anyio.lowlevel.checkpoint()


class RecordingClock(ManualClock):
    """A ``ManualClock`` that also records the length of every sleep."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__(start)
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        super().sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await super().asleep(seconds)


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt arriving while a thread waits for its slot."""


def wait_for(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` from a thread until it holds; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:  # pragma: no cover - only when a test is broken
            pytest.fail(f"timed out waiting for {what}")
        pause.wait(0.001)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` from a task, yielding to the loop; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:  # pragma: no cover - only when a test is broken
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0)


def ok() -> str:
    return "ok"


async def ok_async() -> str:
    await anyio.lowlevel.checkpoint()
    return "ok"


SYNC_WAYS = ["decorator", "call", "with", "compose"]
ASYNC_WAYS = ["decorator", "call_async", "async_with", "compose"]


def call_sync(limiter: RateLimiter, way: str, fn: Callable[[], Any] = ok) -> Any:
    """Make one call through ``limiter`` the way named (decorator, call, with, compose)."""
    if way == "decorator":
        return limiter(fn)()
    if way == "call":
        return limiter.call(fn)
    if way == "compose":
        return compose(limiter).call(fn)
    with limiter:
        return fn()


async def call_async(
    limiter: RateLimiter, way: str, fn: Callable[[], Awaitable[Any]] = ok_async
) -> Any:
    """Make one async call through ``limiter`` the way named."""
    if way == "decorator":
        return await limiter(fn)()
    if way == "call_async":
        return await limiter.call_async(fn)
    if way == "compose":
        return await compose(limiter).call_async(fn)
    async with limiter:
        return await fn()


def attempt(
    limiter: RateLimiter | KeyedRateLimiter, fn: Callable[..., Any], *args: Any
) -> float | None:
    """Try one call: ``None`` if it was admitted, else the refusal's ``retry_after``."""
    try:
        limiter.call(fn, *args)
    except RateLimitedError as error:
        return error.retry_after
    return None


def refusal(limiter: RateLimiter) -> RateLimitedError:
    """Make a call that must be refused; return the error."""
    with pytest.raises(RateLimitedError) as info:
        limiter.call(ok)
    return info.value


def admitted(limiter: RateLimiter | KeyedRateLimiter, *args: Any) -> bool:
    """Try one call; True if admitted, False if refused."""
    try:
        limiter.call(lambda *_: None, *args)
    except RateLimitedError:
        return False
    return True


# -- options -------------------------------------------------------------------------------


def test_defaults_and_properties() -> None:
    limiter = RateLimiter(10)
    assert (limiter.rate, limiter.per, limiter.burst, limiter.name) == (10.0, 1.0, 10, None)
    assert limiter.metrics() == RateLimiterMetrics(admitted=0, waited=0, rejected=0, keys=1)
    assert RateLimiter(0.5).burst == 1  # max(1, int(rate))
    assert RateLimiter(2.7).burst == 2
    assert RateLimiter(2.7, burst=5).burst == 5
    assert RateLimiter(5, 60).per == 60.0
    named = RateLimiter(3, name="api")
    assert named.name == "api"
    assert "api" in repr(named)
    assert "RateLimiter" in repr(named)
    keyed = KeyedRateLimiter(2, key=lambda *a, **k: a[0], name="per-user")
    assert keyed.name == "per-user"
    assert keyed.metrics() == RateLimiterMetrics(0, 0, 0, 0)
    assert "KeyedRateLimiter" in repr(keyed)


BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"rate": 0}, ValueError, "rate"),
    ({"rate": -1}, ValueError, "rate"),
    ({"rate": math.nan}, ValueError, "rate"),
    ({"rate": math.inf}, ValueError, "rate"),
    ({"rate": "1"}, TypeError, "rate"),
    ({"rate": True}, TypeError, "rate"),
    ({"rate": None}, TypeError, "rate"),
    ({"per": 0}, ValueError, "per"),
    ({"per": -1}, ValueError, "per"),
    ({"per": math.nan}, ValueError, "per"),
    ({"per": datetime.timedelta(0)}, ValueError, "per"),
    ({"per": "1"}, TypeError, "per"),
    ({"burst": 0}, ValueError, "burst"),
    ({"burst": -3}, ValueError, "burst"),
    ({"burst": 1.5}, TypeError, "burst"),
    ({"burst": True}, TypeError, "burst"),
    ({"max_wait": -1}, ValueError, "max_wait"),
    ({"max_wait": math.nan}, ValueError, "max_wait"),
    ({"max_wait": "1"}, TypeError, "max_wait"),
    ({"name": 3}, TypeError, "name"),
]
KEYED_BAD_OPTIONS: list[tuple[dict[str, Any], type[Exception], str]] = [
    *BAD_OPTIONS,
    ({"max_keys": 0}, ValueError, "max_keys"),
    ({"max_keys": 1.5}, TypeError, "max_keys"),
    ({"key": 3}, TypeError, "key"),
    ({"key": None}, TypeError, "key"),
]


@pytest.mark.parametrize(("options", "error", "option"), BAD_OPTIONS)
def test_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    kwargs: dict[str, Any] = {"rate": 1, **options}
    with pytest.raises(error, match=option):
        RateLimiter(**kwargs)


@pytest.mark.parametrize(("options", "error", "option"), KEYED_BAD_OPTIONS)
def test_keyed_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    kwargs: dict[str, Any] = {"rate": 1, "key": lambda *a, **k: 0, **options}
    with pytest.raises(error, match=option):
        KeyedRateLimiter(**kwargs)


def test_good_edge_options_are_accepted() -> None:
    RateLimiter(1e-6)
    RateLimiter(1, datetime.timedelta(minutes=1), burst=1, max_wait=datetime.timedelta(0))
    KeyedRateLimiter(1, key=lambda *a, **k: 0, max_keys=1)


# -- the schedule: bursts, intervals, exact retry_after ------------------------------------


def test_burst_after_idle_then_one_call_per_interval() -> None:
    clock = ManualClock()
    limiter = RateLimiter(5, clock=clock)  # burst 5, one call per 0.2 s
    assert [admitted(limiter) for _ in range(6)] == [True] * 5 + [False]
    assert refusal(limiter).retry_after == 0.2
    for _ in range(20):
        clock.advance(0.2)
        assert admitted(limiter)
        assert not admitted(limiter)
    # A long idle spell refills the burst, and no more than the burst.
    clock.advance(60)
    assert [admitted(limiter) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.metrics() == RateLimiterMetrics(admitted=30, waited=0, rejected=23, keys=1)


def test_partial_idle_refills_only_what_the_time_allows() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=4, clock=clock)
    assert sum(admitted(limiter) for _ in range(10)) == 4
    clock.advance(2.5)  # two whole intervals
    assert sum(admitted(limiter) for _ in range(10)) == 2
    assert refusal(limiter).retry_after == 0.5


@pytest.mark.parametrize(
    ("rate", "per", "burst"),
    [
        (1, 1.0, 1),
        (5, 1.0, None),
        (2, 1.0, 3),
        (0.5, 1.0, None),
        (10, 60.0, 2),
        (4, 0.5, 1),
        (3, 1.0, 1),  # 1/3 s: not a whole number of ns
        (7, 0.1, 2),
    ],
)
@pytest.mark.parametrize("start", [0.0, 1234.5678])
def test_retry_after_is_exact_to_the_nanosecond(
    rate: float, per: float, burst: int | None, start: float
) -> None:
    clock = ManualClock(start)
    limiter = RateLimiter(rate, per, burst=burst, clock=clock)
    while admitted(limiter):
        pass
    for _ in range(5):
        error = refusal(limiter)
        assert error.retry_after > 0
        clock.advance(error.retry_after - 1e-9)  # a nanosecond early: still refused
        early = refusal(limiter)
        assert round(early.retry_after * NS) == 1
        clock.advance(early.retry_after)  # exactly on time: admitted
        assert admitted(limiter)


def test_fractional_rate_one_call_every_two_seconds() -> None:
    clock = ManualClock()
    limiter = RateLimiter(0.5, clock=clock)
    assert limiter.burst == 1
    assert admitted(limiter)
    assert refusal(limiter).retry_after == 2.0
    clock.advance(1.999999999)
    assert refusal(limiter).retry_after == 1e-9
    clock.advance(1e-9)
    assert admitted(limiter)
    for _ in range(10):
        clock.advance(2.0)
        assert admitted(limiter)
        assert not admitted(limiter)


def test_fractional_interval_three_per_second() -> None:
    """``rate=3`` per second: one call per 1/3 s; the count per whole second is exact."""
    clock = NsClock()
    limiter = RateLimiter(3, clock=clock)
    admissions: list[int] = []
    for _ in range(3 * 100 + 3):
        try:
            limiter.call(lambda: admissions.append(clock.ns))
        except RateLimitedError as error:
            clock.ns += round(error.retry_after * NS)
            limiter.call(lambda: admissions.append(clock.ns))
    assert admissions[:3] == [0, 0, 0]  # the burst
    # Then the k-th slot at k/3 s; a whole-ns interval may drift < 1 ns per slot.
    for k in range(1, 4):
        assert abs(Fraction(admissions[2 + k]) - Fraction(k * NS, 3)) <= k
    # Over 100 s: 3 per second plus the burst, with no drift worth a call.
    assert abs(sum(t <= 100 * NS for t in admissions) - (300 + 3)) <= 1


def test_non_integer_interval_never_exceeds_the_rate() -> None:
    """Over any window of ``w`` seconds at most ``rate * w / per + burst`` calls pass.

    ``per / rate`` = 1/3 s is not a whole number of nanoseconds; rounding the interval
    *down* (to 333,333,333 ns) lets a fourth call in at 0.999999999 s, one more than
    ``3 * 0.999999999 + 1`` allows.
    """
    clock = NsClock()
    limiter = RateLimiter(3, burst=1, clock=clock)
    admissions: list[int] = []
    for _ in range(4):
        try:
            limiter.call(lambda: admissions.append(clock.ns))
        except RateLimitedError as error:
            clock.ns += round(error.retry_after * NS)
            limiter.call(lambda: admissions.append(clock.ns))
    window = Fraction(admissions[-1] - admissions[0], NS)
    assert len(admissions) <= 3 * window + 1, admissions


def test_per_as_timedelta() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2, datetime.timedelta(seconds=4), clock=clock)  # one per 2 s
    assert (limiter.per, limiter.burst) == (4.0, 2)
    assert [admitted(limiter) for _ in range(3)] == [True, True, False]
    assert refusal(limiter).retry_after == 2.0
    clock.advance(datetime.timedelta(seconds=2))
    assert admitted(limiter)
    waiting = RateLimiter(
        1, datetime.timedelta(milliseconds=500), max_wait=datetime.timedelta(seconds=1), clock=clock
    )
    before = clock.monotonic()
    assert waiting.call(ok) == "ok"
    assert waiting.call(ok) == "ok"  # waited half a second
    assert clock.monotonic() - before == 0.5


def test_burst_larger_and_smaller_than_rate() -> None:
    clock = ManualClock()
    big = RateLimiter(1, burst=10, clock=clock)
    assert sum(admitted(big) for _ in range(20)) == 10
    assert refusal(big).retry_after == 1.0
    small = RateLimiter(100, burst=1, clock=clock)
    assert [admitted(small) for _ in range(3)] == [True, False, False]
    assert refusal(small).retry_after == 0.01


def test_refused_calls_do_not_run_and_do_not_move_the_schedule() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, clock=clock)
    ran: list[int] = []
    limiter.call(ran.append, 1)
    for _ in range(5):
        with pytest.raises(RateLimitedError):
            limiter.call(ran.append, 2)
    assert ran == [1]
    clock.advance(1.0)  # refusals reserved nothing: the next slot is still at 1 s
    limiter.call(ran.append, 3)
    assert ran == [1, 3]


def test_outcome_of_the_call_does_not_matter() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=2, clock=clock)

    def boom() -> None:
        raise ValueError

    with pytest.raises(ValueError):
        limiter.call(boom)
    with pytest.raises(ValueError), limiter:
        raise ValueError
    assert refusal(limiter).retry_after == 1.0
    assert limiter.metrics() == RateLimiterMetrics(2, 0, 1, 1)


# -- every way in: decorator, call, with, compose; sync and async --------------------------


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_sync_ways_admit_and_refuse(way: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=2, clock=clock, name="rl")
    assert call_sync(limiter, way) == "ok"
    assert call_sync(limiter, way) == "ok"
    ran: list[str] = []
    with pytest.raises(RateLimitedError) as info:
        call_sync(limiter, way, lambda: ran.append("ran"))
    assert ran == []
    assert info.value.retry_after == 1.0
    assert info.value.policy == "rl"
    assert limiter.metrics() == RateLimiterMetrics(2, 0, 1, 1)


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_async_ways_admit_and_refuse(way: str) -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=2, clock=clock, name="rl")
    assert await call_async(limiter, way) == "ok"
    assert await call_async(limiter, way) == "ok"
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    with pytest.raises(RateLimitedError) as info:
        await call_async(limiter, way, record)
    assert ran == []
    assert info.value.retry_after == 1.0
    assert limiter.metrics() == RateLimiterMetrics(2, 0, 1, 1)


def test_decorator_keeps_metadata_and_arguments() -> None:
    clock = ManualClock()
    limiter = RateLimiter(10, clock=clock)

    @limiter
    def add(a: int, b: int = 0) -> int:
        """Add."""
        return a + b

    @limiter
    async def add_async(a: int, b: int = 0) -> int:
        return a + b

    class Service:
        @limiter
        def method(self, x: int) -> int:
            return x * 2

    assert add.__name__ == "add"
    assert add.__doc__ == "Add."
    assert add(1, b=2) == 3
    assert anyio.run(add_async, 2, 3) == 5
    assert Service().method(4) == 8
    assert limiter.metrics().admitted == 3


def test_context_manager_nested_and_reentrant() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=3, clock=clock)
    with limiter, limiter, limiter, pytest.raises(RateLimitedError), limiter:
        pytest.fail("a fourth call must not enter")  # pragma: no cover
    assert limiter.metrics() == RateLimiterMetrics(3, 0, 1, 1)
    with pytest.raises(KeyError), RateLimiter(1, clock=ManualClock()):
        raise KeyError  # an error inside the block propagates unchanged


async def test_async_context_manager() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=2, max_wait=1.0, clock=clock)
    async with limiter, limiter:
        pass
    async with limiter:  # waits one interval
        assert clock.monotonic() == 1.0
    assert limiter.metrics() == RateLimiterMetrics(3, 1, 0, 1)
    strict = RateLimiter(1, burst=1, clock=clock)
    async with strict:
        pass
    entered: list[str] = []
    with pytest.raises(RateLimitedError) as info:
        async with strict:
            entered.append("body")  # pragma: no cover
    assert entered == []
    assert info.value.retry_after == 1.0


# -- waiting: reserved slots, consecutive and in order -------------------------------------


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_wait_advances_the_clock_by_exactly_the_reserved_wait(way: str) -> None:
    clock = RecordingClock()
    limiter = RateLimiter(4, burst=2, max_wait=1.0, clock=clock)  # one per 0.25 s
    seen: list[float] = []
    for _ in range(6):
        call_sync(limiter, way, lambda: seen.append(clock.monotonic()))
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]
    assert seen == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert limiter.metrics() == RateLimiterMetrics(admitted=6, waited=4, rejected=0, keys=1)


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_async_wait_advances_the_clock_by_exactly_the_reserved_wait(way: str) -> None:
    clock = RecordingClock()
    limiter = RateLimiter(4, burst=2, max_wait=1.0, clock=clock)
    seen: list[float] = []

    async def record() -> None:
        seen.append(clock.monotonic())

    for _ in range(6):
        await call_async(limiter, way, record)
    assert clock.slept == [0.25, 0.25, 0.25, 0.25]
    assert seen == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert limiter.metrics() == RateLimiterMetrics(admitted=6, waited=4, rejected=0, keys=1)


def test_a_wait_longer_than_max_wait_is_refused_at_once() -> None:
    clock = RecordingClock()
    limiter = RateLimiter(1, max_wait=0.5, clock=clock)
    limiter.call(ok)
    assert refusal(limiter).retry_after == 1.0
    assert clock.slept == []
    assert clock.monotonic() == 0.0
    clock.advance(0.5)  # now the wait is exactly max_wait: admitted after waiting it
    assert limiter.call(ok) == "ok"
    assert clock.slept == [0.5]
    assert limiter.metrics() == RateLimiterMetrics(2, 1, 1, 1)


def test_thread_waiters_get_consecutive_slots_in_order() -> None:
    clock = GateClock()
    limiter = RateLimiter(10, burst=1, max_wait=0.35, clock=clock)  # one per 0.1 s
    limiter.call(ok)
    done: list[int] = []
    threads = []
    for i in range(3):
        thread = threading.Thread(target=lambda i=i: limiter.call(done.append, i), daemon=True)
        thread.start()
        threads.append(thread)
        wait_for(lambda i=i: len(clock.delays) == i + 1, f"waiter {i} to reserve")
    assert [round(d * NS) for d in clock.delays] == [100_000_000, 200_000_000, 300_000_000]
    # The next slot is four intervals away, beyond max_wait: refused, told exactly when.
    assert round(refusal(limiter).retry_after * NS) == 400_000_000
    assert limiter.metrics() == RateLimiterMetrics(admitted=4, waited=3, rejected=1, keys=1)
    clock.open()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert sorted(done) == [0, 1, 2]


async def test_task_waiters_get_consecutive_slots_in_order() -> None:
    clock = GateClock()
    clock.open_tasks = anyio.Event()
    limiter = RateLimiter(10, burst=1, max_wait=0.35, clock=clock)
    await limiter.call_async(ok_async)
    done: list[int] = []

    async def waiter(i: int) -> None:
        async def record() -> None:
            done.append(i)

        await limiter.call_async(record)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(waiter, i)
            await until(lambda i=i: len(clock.delays) == i + 1, f"waiter {i} to reserve")
        assert [round(d * NS) for d in clock.delays] == [100_000_000, 200_000_000, 300_000_000]
        with pytest.raises(RateLimitedError) as info:
            await limiter.call_async(ok_async)
        assert round(info.value.retry_after * NS) == 400_000_000
        clock.open_tasks.set()
    assert sorted(done) == [0, 1, 2]
    assert limiter.metrics() == RateLimiterMetrics(admitted=4, waited=3, rejected=1, keys=1)


async def test_real_clock_waiters_run_in_order_and_never_before_their_slot(
    anyio_backend: str,
) -> None:
    limiter = RateLimiter(100, burst=1, max_wait=WAIT)  # one per 10 ms, real time
    order: list[int] = []
    times: dict[int, float] = {}

    async def waiter(i: int) -> None:
        async def record() -> None:
            order.append(i)
            times[i] = time.monotonic()

        await limiter.call_async(record)

    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(waiter, i)
            await until(lambda i=i: limiter.metrics().admitted == i + 1, f"waiter {i}")
    # Slots are 10 ms apart, in the order reserved; nobody ran before its own slot.
    for i, at in times.items():
        assert at - start >= i * 0.01 - 0.001
    if anyio_backend == "asyncio":
        # (trio deliberately shuffles tasks woken in the same batch, which a loaded
        # machine can cause; asyncio resumes expired sleeps in deadline order.)
        assert order == list(range(6))
    assert sorted(order) == list(range(6))
    assert limiter.metrics() == RateLimiterMetrics(6, 5, 0, 1)


# -- cancellation gives the reservation back -----------------------------------------------


@pytest.mark.parametrize("way", ASYNC_WAYS)
async def test_cancelled_last_waiter_gives_its_slot_back(way: str) -> None:
    clock = GateClock()  # asleep blocks until cancelled
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    await limiter.call_async(ok_async)
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")  # pragma: no cover - the waiter never gets here

    scope = anyio.CancelScope()

    async def waiter() -> None:
        with scope:
            await call_async(limiter, way, record)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(lambda: len(clock.delays) == 1, "the waiter to reserve")
        assert clock.delays == [1.0]
        assert limiter.metrics() == RateLimiterMetrics(2, 1, 0, 1)
        scope.cancel()
    assert scope.cancelled_caught
    assert ran == []
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 0, 1)
    # The slot at 1 s is free again: the next waiter reserves it, not the one after.
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.call_async, ok_async)
        await until(lambda: len(clock.delays) == 2, "the next waiter to reserve")
        tg.cancel_scope.cancel()
    assert clock.delays == [1.0, 1.0]
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 0, 1)


async def test_cancelled_waiter_keeps_its_slot_when_someone_reserved_after_it() -> None:
    clock = GateClock()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    await limiter.call_async(ok_async)
    first, second = anyio.CancelScope(), anyio.CancelScope()

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            await limiter.call_async(ok_async)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, first)
        await until(lambda: len(clock.delays) == 1, "the first waiter")
        tg.start_soon(waiter, second)
        await until(lambda: len(clock.delays) == 2, "the second waiter")
        assert clock.delays == [1.0, 2.0]
        first.cancel()  # not the last reservation: nothing to give back
        await until(lambda: first.cancelled_caught, "the first waiter to leave")
        tg.start_soon(limiter.call_async, ok_async)
        await until(lambda: len(clock.delays) == 3, "a third waiter")
        assert clock.delays[2] == 3.0
        tg.cancel_scope.cancel()


async def test_waiters_cancelled_last_first_give_every_slot_back() -> None:
    clock = GateClock()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    await limiter.call_async(ok_async)
    scopes = [anyio.CancelScope() for _ in range(3)]

    async def waiter(scope: anyio.CancelScope) -> None:
        with scope:
            await limiter.call_async(ok_async)

    async with anyio.create_task_group() as tg:
        for i, scope in enumerate(scopes):
            tg.start_soon(waiter, scope)
            await until(lambda i=i: len(clock.delays) == i + 1, f"waiter {i}")
        assert clock.delays == [1.0, 2.0, 3.0]
        assert limiter.metrics() == RateLimiterMetrics(4, 3, 0, 1)
        for scope in reversed(scopes):
            scope.cancel()
            await until(lambda scope=scope: scope.cancelled_caught, "a waiter to leave")
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 0, 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(limiter.call_async, ok_async)
        await until(lambda: len(clock.delays) == 4, "the next waiter")
        tg.cancel_scope.cancel()
    assert clock.delays[3] == 1.0


async def test_cancelled_waiter_on_a_real_clock_gives_its_slot_back() -> None:
    limiter = RateLimiter(1, burst=1, max_wait=WAIT)  # the second call waits ~1 s
    await limiter.call_async(ok_async)
    with anyio.move_on_after(0.02) as scope:
        await limiter.call_async(ok_async)
    assert scope.cancelled_caught
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 0, 1)
    # With the slot given back, a refused call is told the first slot (< 1 s away), not
    # the one after it (~2 s away).
    with pytest.raises(RateLimitedError) as info:
        await compose(Timeout(0.05), limiter).call_async(ok_async)
    assert 0 < info.value.retry_after <= 1.0


@pytest.mark.parametrize("way", SYNC_WAYS)
def test_interrupted_thread_waiter_gives_its_slot_back(way: str) -> None:
    clock = GateClock()
    clock.raise_in_sleep = Interrupt()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    limiter.call(ok)
    with pytest.raises(Interrupt):
        call_sync(limiter, way)
    assert clock.delays == [1.0]
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 0, 1)
    with pytest.raises(Interrupt):
        call_sync(limiter, way)
    assert clock.delays == [1.0, 1.0]  # the same slot again, not the next one


# -- deadlines -----------------------------------------------------------------------------


async def test_async_wait_longer_than_the_deadline_is_refused_at_once() -> None:
    clock = RecordingClock()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    await limiter.call_async(ok_async)
    ran: list[str] = []

    async def record() -> None:
        ran.append("ran")

    with pytest.raises(RateLimitedError) as info:
        await compose(Timeout(0.5, clock=clock), limiter).call_async(record)
    assert info.value.retry_after == 1.0
    assert (clock.monotonic(), clock.slept, ran) == (0.0, [], [])
    # A deadline with room for the wait: admitted after waiting exactly the slot.
    await compose(Timeout(1.5, clock=clock), limiter).call_async(record)
    assert (clock.monotonic(), clock.slept, ran) == (1.0, [1.0], ["ran"])
    assert limiter.metrics() == RateLimiterMetrics(2, 1, 1, 1)


def test_sync_wait_longer_than_the_deadline_is_refused_at_once() -> None:
    clock = RecordingClock()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    limiter.call(ok)
    with pytest.raises(RateLimitedError) as info:
        compose(Timeout(0.5, clock=clock), limiter).call(ok)
    assert info.value.retry_after == 1.0
    assert (clock.monotonic(), clock.slept) == (0.0, [])
    assert compose(Timeout(1.5, clock=clock), limiter).call(ok) == "ok"
    assert (clock.monotonic(), clock.slept) == (1.0, [1.0])


async def test_deadline_reaches_a_limiter_called_inside_the_guarded_function() -> None:
    clock = RecordingClock()
    limiter = RateLimiter(1, burst=1, max_wait=WAIT, clock=clock)
    keyed = KeyedRateLimiter(1, key=lambda *a, **k: "k", max_wait=WAIT, clock=clock)
    limiter.call(ok)
    keyed.acquire("k")

    @Timeout(0.25, clock=clock)
    async def handler() -> None:
        assert resilient.remaining() == 0.25
        async with limiter:
            pytest.fail("must not be admitted")  # pragma: no cover

    @Timeout(0.25, clock=clock)
    async def keyed_handler() -> None:
        await keyed.acquire_async("k")

    with pytest.raises(RateLimitedError):
        await handler()
    with pytest.raises(RateLimitedError) as info:
        await keyed_handler()
    assert info.value.retry_after == 1.0
    assert clock.slept == []


def test_passed_deadline_refuses_any_wait_but_admits_on_time_calls() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=2, max_wait=WAIT, clock=clock)

    @Timeout(1.0, clock=clock)
    def inside() -> list[bool]:
        clock.advance(2.0)  # the deadline has passed
        assert resilient.remaining() == 0.0
        return [admitted(limiter) for _ in range(3)]

    assert inside() == [True, True, False]


# -- the GCRA against an exact model (Hypothesis) ------------------------------------------


@dataclass
class GcraModel:
    """The GCRA recurrence in exact arithmetic: times in ns, the TAT a ``Fraction``."""

    interval: Fraction
    burst: int
    max_wait: int
    tat: Fraction | None = None
    admitted: int = 0
    waited: int = 0
    rejected: int = 0

    def attempt(self, now: int) -> tuple[str, Fraction]:
        """Return ("admitted" | "waited" | "refused", the delay)."""
        tat = Fraction(now) if self.tat is None or self.tat < now else self.tat
        new_tat = tat + self.interval
        delay = new_tat - self.burst * self.interval - now
        if delay <= 0:
            self.tat, self.admitted = new_tat, self.admitted + 1
            return "admitted", Fraction(0)
        if delay <= self.max_wait:
            self.tat, self.admitted, self.waited = new_tat, self.admitted + 1, self.waited + 1
            return "waited", delay
        self.rejected += 1
        return "refused", delay


RATES = [1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 50, 100, 125, 1000, 0.5, 0.25, 0.125]
PERS = [1.0, 0.5, 2.0, 0.25, 3.0, 60.0]


def exact_interval(rate: float, per: float) -> bool:
    return (Fraction(per) * NS / Fraction(rate)).denominator == 1


@st.composite
def exact_configs(draw: st.DrawFn) -> tuple[float, float, int, int]:
    """(rate, per, burst, max_wait in ns) with ``per / rate`` a whole number of ns."""
    rate, per = draw(
        st.tuples(st.sampled_from(RATES), st.sampled_from(PERS)).filter(
            lambda c: exact_interval(*c)
        )
    )
    interval = int(Fraction(per) * NS / Fraction(rate))
    burst = draw(st.integers(1, 6))
    max_wait = draw(st.sampled_from([0, 0, 1, interval // 2, interval, 3 * interval + 7]))
    return rate, per, burst, max_wait


def ops_for(interval: int) -> st.SearchStrategy[list[Any]]:
    """Arrivals: a gap in ns before a call, or a retry exactly on / a ns before time."""
    gap = st.one_of(
        st.just(0),
        st.integers(1, 10),
        st.integers(0, 3 * interval),
        st.sampled_from([interval - 1, interval, interval + 1, 7 * interval]),
    )
    return st.lists(st.one_of(gap, st.sampled_from(["retry", "early"])), max_size=60)


def check_bound(times: list[int], rate: float, per: float, burst: int) -> None:
    """Every window [t_i, t_j] between admissions holds at most rate * w / per + burst."""
    ratio = Fraction(rate) / Fraction(per)  # calls per second, exactly
    num, den = ratio.numerator, ratio.denominator
    for i in range(len(times)):
        for j in range(i, len(times)):
            # j - i + 1 <= ratio * (t_j - t_i) / NS + burst, in integers
            excess = (j - i + 1 - burst) * den * NS
            assert excess <= num * (times[j] - times[i]), (times[i], times[j], j - i + 1)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(data=st.data(), config=exact_configs())
def test_gcra_matches_the_exact_model(data: st.DataObject, config: Any) -> None:
    rate, per, burst, max_wait_ns = config
    interval = Fraction(per) * NS / Fraction(rate)
    ops = data.draw(ops_for(int(interval)))
    clock = NsClock(ns=data.draw(st.sampled_from([0, 1, 10**12 + 7])))
    limiter = RateLimiter(rate, per, burst=burst, max_wait=max_wait_ns / NS, clock=clock)
    model = GcraModel(interval, burst, max_wait_ns)
    last_delay = 0
    times: list[int] = []
    for op in ops:
        if op == "retry":
            clock.ns += last_delay
        elif op == "early":
            clock.ns += max(last_delay - 1, 0)
        else:
            clock.ns += op
        now = clock.ns
        outcome, delay = model.attempt(now)
        assert delay.denominator == 1
        slept = len(clock.slept)
        retry_after = attempt(limiter, lambda: times.append(clock.ns))
        if retry_after is not None:
            assert outcome == "refused"
            assert retry_after == int(delay) / NS
            last_delay = int(delay)
            assert clock.ns == now
        else:
            assert outcome != "refused", (now, delay)
            assert times[-1] == now + delay
            assert clock.slept[slept:] == ([int(delay)] if outcome == "waited" else [])
            if op == "retry" and last_delay:
                assert outcome == "admitted"  # exactly on time: no wait at all
            last_delay = 0
    metrics = limiter.metrics()
    assert (metrics.admitted, metrics.waited, metrics.rejected) == (
        model.admitted,
        model.waited,
        model.rejected,
    )
    check_bound(times, rate, per, burst)


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(
    data=st.data(),
    rate=st.one_of(
        st.sampled_from([3, 7, 0.3, 1.7, 12.5, 1000 / 3, 6, 9, 11]),
        st.floats(0.05, 2000, allow_nan=False, allow_infinity=False),
    ),
    per=st.sampled_from([1.0, 0.1, 0.7, 2.5, 60.0]),
    burst=st.integers(1, 5),
)
def test_gcra_never_exceeds_the_rate_and_retry_after_is_exact(
    data: st.DataObject, rate: float, per: float, burst: int
) -> None:
    """Any rate: admissions obey the window bound; retry_after is exact to the ns."""
    interval = max(1, int(Fraction(per) * NS / Fraction(rate)))
    ops = data.draw(ops_for(interval))
    clock = NsClock()
    limiter = RateLimiter(rate, per, burst=burst, clock=clock)
    times: list[int] = []
    last_delay = 0
    for op in ops:
        if op == "retry":
            clock.ns += last_delay
        elif op == "early":
            clock.ns += max(last_delay - 1, 0)
        else:
            clock.ns += op
        retry_after = attempt(limiter, lambda: times.append(clock.ns))
        if retry_after is not None:
            delay = round(retry_after * NS)
            assert delay >= 1
            if op == "early" and last_delay:
                assert delay == 1  # one nanosecond early, and told so
            assert op != "retry" or last_delay == 0, "refused although on time"
            last_delay = delay
        else:
            assert op != "early" or last_delay == 0, "admitted although a ns early"
            last_delay = 0
    check_bound(times, rate, per, burst)


# -- KeyedRateLimiter ----------------------------------------------------------------------


def first_arg(*args: Any, **kwargs: Any) -> Hashable:
    return args[0]


def test_keys_are_independent() -> None:
    clock = ManualClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=2, clock=clock)
    assert [admitted(keyed, "a") for _ in range(3)] == [True, True, False]
    assert [admitted(keyed, "b") for _ in range(3)] == [True, True, False]
    with pytest.raises(RateLimitedError) as info:
        keyed.call(lambda user: None, "a")
    assert info.value.retry_after == 1.0
    assert "'a'" in str(info.value)
    clock.advance(1.0)
    assert [admitted(keyed, "a"), admitted(keyed, "a")] == [True, False]
    assert keyed.metrics() == RateLimiterMetrics(admitted=5, waited=0, rejected=4, keys=2)


def test_key_function_gets_the_calls_arguments() -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def key(*args: Any, **kwargs: Any) -> Hashable:
        seen.append((args, kwargs))
        return kwargs.get("tenant", args[0] if args else None)

    keyed = KeyedRateLimiter(1, key=key, burst=1, clock=ManualClock())

    @keyed
    def handle(user: str, *, tenant: str = "t0") -> str:
        return f"{user}@{tenant}"

    @keyed
    async def handle_async(user: str, *, tenant: str = "t0") -> str:
        return f"{user}@{tenant}"

    assert handle("u1", tenant="t1") == "u1@t1"
    assert seen[-1] == (("u1",), {"tenant": "t1"})
    assert handle("u1") == "u1@t0"  # key "u1": its own key
    assert seen[-1] == (("u1",), {})
    with pytest.raises(RateLimitedError):
        handle("u2", tenant="t1")  # same key t1: refused
    assert anyio.run(functools.partial(handle_async, "u9", tenant="t2")) == "u9@t2"
    assert seen[-1] == (("u9",), {"tenant": "t2"})
    assert keyed.call(lambda user: user, "u3") == "u3"
    assert seen[-1] == (("u3",), {})
    assert keyed.metrics().keys == 4


def test_idle_keys_are_dropped_and_behave_like_new_keys() -> None:
    clock = ManualClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=2, clock=clock)
    for i in range(100):
        keyed.acquire(i)
    keyed.acquire(0)
    assert keyed.metrics().keys == 100
    with pytest.raises(RateLimitedError):
        keyed.acquire(0)
    clock.advance(2.0)  # every key is fully replenished
    sizes = []
    for _ in range(120):
        keyed.acquire("hot")
        clock.advance(1.0)
        sizes.append(keyed.metrics().keys)
    assert sizes == sorted(sizes, reverse=True)
    assert keyed.metrics().keys == 1
    # A dropped key has its whole burst again, exactly like a key never seen.
    assert [admitted(keyed, 0) for _ in range(3)] == [True, True, False]


def test_max_keys_bounds_memory_under_ten_times_more_keys() -> None:
    clock = ManualClock()  # time stands still: no key ever becomes idle
    keyed = KeyedRateLimiter(1, key=first_arg, burst=1, max_keys=10, clock=clock)
    for i in range(100):
        keyed.acquire(i)
        assert keyed.metrics().keys <= 10
    assert keyed.metrics().keys == 10
    # The ten most recently used keys are kept: still limited.
    for i in range(90, 100):
        assert not admitted(keyed, i)
    # An evicted (least recently used) key starts afresh: more permissive, never stricter.
    assert admitted(keyed, 0)
    assert keyed.metrics().keys == 10


def test_max_keys_drops_the_least_recently_used_key() -> None:
    clock = ManualClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=2, max_keys=3, clock=clock)
    for key in "abc":
        keyed.acquire(key)
    keyed.acquire("a")  # "a" is now the most recently used, "b" the least
    keyed.acquire("d")  # one key too many: "b" goes
    assert keyed.metrics().keys == 3
    assert not admitted(keyed, "a")  # kept: its two calls still count
    assert [admitted(keyed, "b"), admitted(keyed, "b")] == [True, True]  # forgotten


def test_acquire_waits_and_reports_exact_retry_after() -> None:
    clock = RecordingClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=1, max_wait=0.5, clock=clock)
    keyed.acquire("a")
    with pytest.raises(RateLimitedError) as info:
        keyed.acquire("a")
    assert info.value.retry_after == 1.0  # a whole interval away, beyond max_wait
    assert clock.slept == []
    keyed.acquire("b")  # another key: no wait
    clock.advance(0.5)
    keyed.acquire("a")  # half an interval away: waits exactly that
    assert (clock.slept, clock.monotonic()) == ([0.5], 1.0)
    assert keyed.metrics() == RateLimiterMetrics(admitted=3, waited=1, rejected=1, keys=2)


async def test_acquire_async_waits_and_gives_back_when_cancelled() -> None:
    clock = RecordingClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=1, max_wait=0.5, clock=clock)
    await keyed.acquire_async("a")
    with pytest.raises(RateLimitedError) as info:
        await keyed.acquire_async("a")
    assert info.value.retry_after == 1.0
    clock.advance(0.5)
    await keyed.acquire_async("a")
    assert (clock.slept, clock.monotonic()) == ([0.5], 1.0)
    assert keyed.metrics() == RateLimiterMetrics(2, 1, 1, 1)
    gate = GateClock()
    blocking = KeyedRateLimiter(1, key=first_arg, burst=1, max_wait=WAIT, clock=gate)
    await blocking.acquire_async("k")
    with anyio.CancelScope() as scope:
        scope.cancel()
        await blocking.acquire_async("k")
    assert gate.delays == [1.0]
    assert blocking.metrics() == RateLimiterMetrics(1, 0, 0, 1)


def test_keyed_sync_waiter_interrupted_gives_its_slot_back() -> None:
    clock = GateClock()
    clock.raise_in_sleep = Interrupt()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=1, max_wait=WAIT, clock=clock)
    keyed.acquire("k")
    for _ in range(2):
        with pytest.raises(Interrupt):
            keyed.acquire("k")
    assert clock.delays == [1.0, 1.0]
    assert keyed.metrics() == RateLimiterMetrics(1, 0, 0, 1)


async def test_keyed_decorated_async_and_call_async() -> None:
    clock = ManualClock()
    keyed = KeyedRateLimiter(1, key=first_arg, burst=1, clock=clock)

    async def echo(user: str) -> str:
        await anyio.lowlevel.checkpoint()
        return user

    assert await keyed.call_async(echo, "a") == "a"
    assert await keyed(echo)("b") == "b"
    with pytest.raises(RateLimitedError):
        await keyed.call_async(echo, "a")


async def test_keyed_limiter_is_not_a_context_manager() -> None:
    keyed = KeyedRateLimiter(1, key=first_arg)
    with pytest.raises(TypeError, match="key"), keyed:
        pass  # pragma: no cover
    with pytest.raises(TypeError, match="key"):
        async with keyed:
            pass  # pragma: no cover


@dataclass
class KeyedModel:
    interval: Fraction
    burst: int
    max_wait: int
    keys: dict[Hashable, GcraModel] = field(default_factory=dict)

    def attempt(self, key: Hashable, now: int) -> tuple[str, Fraction]:
        model = self.keys.setdefault(key, GcraModel(self.interval, self.burst, self.max_wait))
        return model.attempt(now)


@settings(derandomize=True, database=None, max_examples=200, deadline=None)
@given(data=st.data(), config=exact_configs())
def test_keyed_limiter_matches_one_model_per_key(data: st.DataObject, config: Any) -> None:
    """Dropping idle keys is invisible: decisions equal independent per-key models."""
    rate, per, burst, max_wait_ns = config
    interval = Fraction(per) * NS / Fraction(rate)
    steps = data.draw(
        st.lists(
            st.tuples(st.integers(0, 5), st.integers(0, 2 * int(interval))),
            max_size=60,
        )
    )
    clock = NsClock()
    keyed = KeyedRateLimiter(
        rate, per, key=first_arg, burst=burst, max_wait=max_wait_ns / NS, clock=clock
    )
    model = KeyedModel(interval, burst, max_wait_ns)
    for key, gap in steps:
        clock.ns += gap
        now = clock.ns
        outcome, delay = model.attempt(key, now)
        retry_after = attempt(keyed, lambda _: None, key)
        if retry_after is not None:
            assert outcome == "refused"
            assert retry_after == int(delay) / NS
        else:
            assert outcome != "refused"
            assert clock.ns == now + delay
        assert keyed.metrics().keys <= 6
    metrics = keyed.metrics()
    totals = (
        sum(m.admitted for m in model.keys.values()),
        sum(m.waited for m in model.keys.values()),
        sum(m.rejected for m in model.keys.values()),
    )
    assert (metrics.admitted, metrics.waited, metrics.rejected) == totals


# -- events, errors, composition -----------------------------------------------------------


def test_refusals_emit_call_rejected_events() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=1, max_wait=1.0, clock=clock, name="rl")
    keyed = KeyedRateLimiter(1, key=first_arg, clock=clock, name="keyed")
    heard: list[Any] = []
    limiter.add_listener(heard.append)
    with capture_events() as events:
        limiter.call(ok)
        limiter.call(ok)  # waited: admitted, no event
        with pytest.raises(RateLimitedError) as info:
            compose(Timeout(0.5, clock=clock), limiter).call(ok)
        keyed.acquire("a")
        with pytest.raises(RateLimitedError) as keyed_info:
            keyed.acquire("a")
    assert [type(e) for e in events] == [CallRejected, CallRejected]
    assert (events[0].policy, events[0].kind, events[0].error) == ("rl", "rate_limiter", info.value)
    assert (events[1].policy, events[1].kind) == ("keyed", "rate_limiter")
    assert events[1].error is keyed_info.value
    assert heard == [events[0]]
    limiter.remove_listener(heard.append)
    with pytest.raises(RateLimitedError):
        compose(Timeout(0.5, clock=clock), limiter).call(ok)
    assert len(heard) == 1
    assert limiter.listener_errors == 0


def test_rate_limited_error_is_a_rejection() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2, name="api", clock=clock)
    limiter.call(ok)
    limiter.call(ok)
    error = refusal(limiter)
    assert isinstance(error, RejectedError)
    assert isinstance(error, ResilienceError)
    assert error.policy == "api"
    assert error.retry_after == 0.5
    assert "'api'" in str(error)
    assert refusal(limiter) is not error  # a fresh instance per refusal


def test_fallback_replaces_a_refusal() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=1, clock=clock)
    guarded = compose(Fallback(lambda exc: ("fallback", exc.retry_after)), limiter)
    ran: list[int] = []

    def work(i: int) -> tuple[str, int]:
        ran.append(i)
        return ("ok", i)

    assert guarded.call(work, 1) == ("ok", 1)
    assert guarded.call(work, 2) == ("fallback", 1.0)
    decorated = guarded(work)
    assert decorated(3) == ("fallback", 1.0)
    assert ran == [1]
    keyed = KeyedRateLimiter(1, key=first_arg, clock=clock)
    keyed_guarded = compose(Fallback(lambda exc: "later"), keyed)
    assert keyed_guarded.call(work, 7) == ("ok", 7)
    assert keyed_guarded.call(work, 7) == "later"


async def test_async_fallback_replaces_a_refusal() -> None:
    clock = ManualClock()
    limiter = RateLimiter(1, burst=1, clock=clock)

    async def handler(exc: BaseException) -> str:
        await anyio.lowlevel.checkpoint()
        return f"fallback after {exc.retry_after}"  # type: ignore[attr-defined]

    guarded = compose(Fallback(handler), limiter)
    assert await guarded.call_async(ok_async) == "ok"
    assert await guarded.call_async(ok_async) == "fallback after 1.0"
    assert limiter.metrics() == RateLimiterMetrics(1, 0, 1, 1)
