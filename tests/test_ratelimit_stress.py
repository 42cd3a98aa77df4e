"""Stress tests for ``RateLimiter`` and ``KeyedRateLimiter``: many callers on one limiter.

* Time frozen (a ``ManualClock`` nobody advances): exactly ``burst`` calls pass, however
  many threads and tasks race for them; with ``max_wait`` and sleeps that take no time,
  exactly ``burst + max_wait // interval`` pass (the reservable slots), no more, no less.
* Real time over a bounded window: the calls admitted never exceed the GCRA bound
  ``rate * elapsed / per + burst``.
* Time advanced by the waiters' own sleeps (a ``ManualClock``): the admitted calls fit
  the bound over the time that passed.
* Always: admitted + rejected == attempts, the calls that ran == admitted, and no
  exception other than ``RateLimitedError`` reaches a caller.

Threads are released together by a barrier; no fixed sleep waits for anything.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from resilient import (
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
    RateLimiterMetrics,
    compose,
)
from resilient.testing import ManualClock

NS = 10**9
WAIT = 10.0  # bound on every join: reached only when something is broken
THREADS = 16
TASKS = 1000


class FrozenClock:
    """Time never moves, and a sleep returns at once without moving it."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        pass

    async def asleep(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()


@dataclass
class Tally:
    """What the callers saw, merged under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: int = 0
    ran: int = 0
    rejected: int = 0
    unexpected: list[BaseException] = field(default_factory=list)
    bad_retry_after: list[float] = field(default_factory=list)

    def add(self, attempts: int, ran: int, rejected: int) -> None:
        with self.lock:
            self.attempts += attempts
            self.ran += ran
            self.rejected += rejected

    def check(self, metrics: RateLimiterMetrics) -> None:
        assert self.unexpected == []
        assert self.bad_retry_after == []
        assert self.attempts == self.ran + self.rejected
        assert (metrics.admitted, metrics.rejected) == (self.ran, self.rejected)
        assert metrics.admitted + metrics.rejected == self.attempts


def sync_ways(limiter: RateLimiter) -> list[Callable[[Callable[[], None]], None]]:
    """Every way into the limiter from a thread: call, decorator, with, compose."""
    composed = compose(limiter)

    def with_block(fn: Callable[[], None]) -> None:
        with limiter:
            fn()

    return [
        limiter.call,
        lambda fn: limiter(fn)(),
        with_block,
        composed.call,
    ]


def async_ways(limiter: RateLimiter) -> list[Callable[[Callable[[], Any]], Any]]:
    """Every way into the limiter from a task: call_async, decorator, async with, compose."""
    composed = compose(limiter)

    async def with_block(fn: Callable[[], Any]) -> None:
        async with limiter:
            await fn()

    return [
        limiter.call_async,
        lambda fn: limiter(fn)(),
        with_block,
        composed.call_async,
    ]


def run_threads(
    limiter: RateLimiter,
    tally: Tally,
    *,
    calls: int | None = None,
    seconds: float | None = None,
    min_ran: int = 0,
    on_admit: Callable[[], None] = lambda: None,
) -> None:
    """``THREADS`` threads, released together, call ``calls`` times or for ``seconds``.

    The seconds count from the release, not from the start of the threads (which a busy
    machine may spread over the whole window). With ``min_ran``, the threads go on past
    the seconds (``WAIT / 2`` at most) until that many calls ran, as :func:`run_tasks` does.
    """
    deadline = [0.0, 0.0]  # the window's end, and the end of going on for min_ran

    def released() -> None:
        now = time.monotonic()
        deadline[:] = [now + (seconds or 0.0), now + WAIT / 2]

    barrier = threading.Barrier(THREADS, action=released)
    ways = sync_ways(limiter)
    counting = threading.Lock()
    total_ran = [0]

    def going_on() -> bool:
        now = time.monotonic()
        return now < deadline[0] or (total_ran[0] < min_ran and now < deadline[1])

    def caller(index: int) -> None:
        attempts = ran = rejected = 0

        def work() -> None:
            nonlocal ran
            ran += 1
            with counting:
                total_ran[0] += 1
            on_admit()

        try:
            barrier.wait(WAIT)
            while (calls is not None and attempts < calls) or (seconds is not None and going_on()):
                attempts += 1
                try:
                    ways[(index + attempts) % len(ways)](work)
                except RateLimitedError as error:
                    rejected += 1
                    if not error.retry_after > 0:
                        tally.bad_retry_after.append(error.retry_after)
        except BaseException as exc:  # pragma: no cover - reported by Tally.check
            tally.unexpected.append(exc)
        tally.add(attempts, ran, rejected)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "a caller thread is stuck"


async def run_tasks(
    limiter: RateLimiter,
    tally: Tally,
    *,
    calls: int | None = None,
    seconds: float | None = None,
    tasks: int = TASKS,
    min_ran: int = 0,
) -> None:
    """``tasks`` tasks call ``calls`` times each, or for ``seconds`` on the real clock.

    The seconds count from when the first task runs, not from when they are spawned: on
    a busy machine, spawning a thousand tasks can take longer than the whole window.
    With ``min_ran``, the tasks go on past the seconds (10 s at most) until that many
    calls ran, so a machine too busy to run many in the window still exercises the
    refill.
    """
    ways = async_ways(limiter)
    start = anyio.Event()
    deadline: list[float] = []
    total_ran = [0]

    async def caller(index: int) -> None:
        attempts = ran = rejected = 0

        async def work() -> None:
            nonlocal ran
            ran += 1
            total_ran[0] += 1
            await anyio.lowlevel.checkpoint()

        try:
            await start.wait()
            if seconds is not None and not deadline:
                deadline.append(time.monotonic() + seconds)
            while (calls is not None and attempts < calls) or (
                seconds is not None and (time.monotonic() < deadline[0] or total_ran[0] < min_ran)
            ):
                attempts += 1
                try:
                    await ways[(index + attempts) % len(ways)](work)
                except RateLimitedError as error:
                    rejected += 1
                    if not error.retry_after > 0:
                        tally.bad_retry_after.append(error.retry_after)
                    await anyio.lowlevel.checkpoint()  # a refusal does not yield by itself
        except Exception as exc:  # pragma: no cover - reported by Tally.check
            tally.unexpected.append(exc)
        tally.add(attempts, ran, rejected)

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(caller, i)
        start.set()


def ns(seconds: float) -> int:
    """A clock reading as the limiter sees it: whole nanoseconds."""
    return round(seconds * NS)


def within_bound(admitted: int, rate: float, per: float, burst: int, elapsed_ns: int) -> bool:
    """``admitted <= rate * elapsed / per + burst``, exactly.

    Elapsed time is taken in whole nanoseconds, as the limiter reads its clock: a
    ``ManualClock`` advanced by thousands of float waits drifts below the exact sum by
    a fraction of a nanosecond, and a saturated limiter sits exactly on the bound.
    """
    return admitted <= Fraction(rate) * Fraction(elapsed_ns, NS) / Fraction(per) + burst


# -- threads -------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_switching")
def test_threads_frozen_clock_admit_exactly_the_burst() -> None:
    limiter = RateLimiter(50, burst=37, clock=ManualClock())
    tally = Tally()
    run_threads(limiter, tally, calls=400)
    tally.check(limiter.metrics())
    assert tally.ran == 37
    assert limiter.metrics() == RateLimiterMetrics(37, 0, THREADS * 400 - 37, 1)


@pytest.mark.usefixtures("fast_switching")
def test_threads_frozen_clock_with_waits_take_exactly_the_reservable_slots() -> None:
    # One slot per 10 ms; frozen time and instant sleeps: the burst, plus the slots
    # that lie within max_wait (10 of them, the 10th exactly at max_wait).
    limiter = RateLimiter(100, burst=5, max_wait=0.1, clock=FrozenClock())
    tally = Tally()
    run_threads(limiter, tally, calls=300)
    tally.check(limiter.metrics())
    assert limiter.metrics() == RateLimiterMetrics(15, 10, THREADS * 300 - 15, 1)


@pytest.mark.usefixtures("fast_switching")
def test_threads_advancing_manual_clock_stay_within_the_bound() -> None:
    clock = ManualClock()  # every waiter's sleep moves it on by its reserved wait
    limiter = RateLimiter(20, burst=4, max_wait=0.2, clock=clock)
    tally = Tally()
    run_threads(limiter, tally, calls=200)
    tally.check(limiter.metrics())
    metrics = limiter.metrics()
    assert metrics.waited > 0
    assert within_bound(metrics.admitted, 20, 1.0, 4, ns(clock.monotonic()))


@pytest.mark.usefixtures("fast_switching")
def test_threads_real_clock_stay_within_the_bound_over_a_window() -> None:
    rate, burst = 400.0, 10
    limiter = RateLimiter(rate, burst=burst, max_wait=0.01)
    tally = Tally()
    start_ns = time.monotonic_ns()
    run_threads(limiter, tally, seconds=0.3, min_ran=burst + 10)
    elapsed = time.monotonic_ns() - start_ns
    tally.check(limiter.metrics())
    assert tally.ran > burst  # the window saw real traffic
    assert within_bound(tally.ran, rate, 1.0, burst, elapsed)


# -- tasks ---------------------------------------------------------------------------------


async def test_tasks_frozen_clock_admit_exactly_the_burst() -> None:
    limiter = RateLimiter(10, burst=123, clock=ManualClock())
    tally = Tally()
    await run_tasks(limiter, tally, calls=3)
    tally.check(limiter.metrics())
    assert limiter.metrics() == RateLimiterMetrics(123, 0, TASKS * 3 - 123, 1)


async def test_tasks_frozen_clock_with_waits_take_exactly_the_reservable_slots() -> None:
    limiter = RateLimiter(1000, burst=20, max_wait=0.05, clock=FrozenClock())  # 1 ms slots
    tally = Tally()
    await run_tasks(limiter, tally, calls=2)
    tally.check(limiter.metrics())
    assert limiter.metrics() == RateLimiterMetrics(70, 50, TASKS * 2 - 70, 1)


async def test_tasks_advancing_manual_clock_stay_within_the_bound() -> None:
    clock = ManualClock()
    limiter = RateLimiter(50, burst=10, max_wait=0.5, clock=clock)
    tally = Tally()
    await run_tasks(limiter, tally, calls=2)
    tally.check(limiter.metrics())
    metrics = limiter.metrics()
    assert metrics.waited > 0
    assert within_bound(metrics.admitted, 50, 1.0, 10, ns(clock.monotonic()))


async def test_tasks_real_clock_stay_within_the_bound_over_a_window() -> None:
    rate, burst = 1000.0, 50
    limiter = RateLimiter(rate, burst=burst, max_wait=0.02)
    tally = Tally()
    start_ns = time.monotonic_ns()
    await run_tasks(limiter, tally, seconds=0.3, min_ran=burst + 10)
    elapsed = time.monotonic_ns() - start_ns
    tally.check(limiter.metrics())
    assert tally.ran > burst
    assert within_bound(tally.ran, rate, 1.0, burst, elapsed)


async def test_threads_and_tasks_together_admit_exactly_the_burst() -> None:
    limiter = RateLimiter(10, burst=64, clock=ManualClock())
    thread_tally, task_tally = Tally(), Tally()
    threads_done = anyio.Event()

    async def threads() -> None:
        await anyio.to_thread.run_sync(lambda: run_threads(limiter, thread_tally, calls=100))
        threads_done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(threads)
        await run_tasks(limiter, task_tally, calls=2, tasks=500)
    assert threads_done.is_set()
    for tally in (thread_tally, task_tally):
        assert tally.unexpected == []
        assert tally.attempts == tally.ran + tally.rejected
    metrics = limiter.metrics()
    assert thread_tally.ran + task_tally.ran == metrics.admitted == 64
    assert metrics.rejected == thread_tally.rejected + task_tally.rejected
    assert metrics.admitted + metrics.rejected == THREADS * 100 + 500 * 2


# -- keyed ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("fast_switching")
def test_keyed_threads_frozen_clock_admit_exactly_the_burst_per_key() -> None:
    keys = 40
    keyed = KeyedRateLimiter(1, key=lambda k: k, burst=3, clock=ManualClock())
    per_key = [0] * keys
    lock = threading.Lock()
    unexpected: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(k: int) -> None:
        with lock:
            per_key[k] += 1

    def caller(index: int) -> None:
        try:
            barrier.wait(WAIT)
            for n in range(500):
                k = (index * 7 + n) % keys
                try:
                    if n % 2:
                        keyed.call(work, k)
                    else:
                        keyed.acquire(k)
                        work(k)
                except RateLimitedError:
                    pass
        except BaseException as exc:  # pragma: no cover - checked below
            unexpected.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert unexpected == []
    assert per_key == [3] * keys
    assert keyed.metrics() == RateLimiterMetrics(3 * keys, 0, THREADS * 500 - 3 * keys, keys)


@pytest.mark.usefixtures("fast_switching")
def test_keyed_threads_never_hold_more_than_max_keys() -> None:
    clock = ManualClock()
    keyed = KeyedRateLimiter(5, key=lambda k: k, burst=1, max_keys=32, clock=clock)
    unexpected: list[BaseException] = []
    sizes: list[int] = []
    barrier = threading.Barrier(THREADS)
    attempts = 300

    def caller(index: int) -> None:
        try:
            barrier.wait(WAIT)
            for n in range(attempts):
                with contextlib.suppress(RateLimitedError):  # (every key is new)
                    keyed.acquire((index, n))  # 10x more distinct keys than max_keys
                if n % 16 == 0:
                    sizes.append(keyed.metrics().keys)
                    clock.advance(0.001)
        except BaseException as exc:  # pragma: no cover - checked below
            unexpected.append(exc)

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads)
    assert unexpected == []
    assert max(sizes) <= 32
    metrics = keyed.metrics()
    assert metrics.keys <= 32
    assert metrics.admitted + metrics.rejected == THREADS * attempts


async def test_keyed_tasks_frozen_clock_admit_exactly_the_burst_per_key() -> None:
    keys = 25
    keyed = KeyedRateLimiter(1, key=lambda k: k, burst=2, clock=ManualClock())
    per_key = [0] * keys
    unexpected: list[BaseException] = []
    rejected = 0

    async def work(k: int) -> None:
        per_key[k] += 1
        await anyio.lowlevel.checkpoint()

    async def caller(index: int) -> None:
        nonlocal rejected
        try:
            for n in range(2):
                k = (index + n) % keys
                try:
                    if n:
                        await keyed.call_async(work, k)
                    else:
                        await keyed.acquire_async(k)
                        await work(k)
                except RateLimitedError:
                    rejected += 1
                await anyio.lowlevel.checkpoint()
        except Exception as exc:  # pragma: no cover - checked below
            unexpected.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(TASKS):
            tg.start_soon(caller, i)
    assert unexpected == []
    assert per_key == [2] * keys
    assert keyed.metrics() == RateLimiterMetrics(2 * keys, 0, rejected, keys)
    assert rejected == TASKS * 2 - 2 * keys
