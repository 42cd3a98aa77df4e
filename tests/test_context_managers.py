"""Policies as context managers: `with breaker:`, `async with bulkhead:`, `async with timeout:`.

A block is guarded like a call: the breaker admits it on enter (or raises
``CircuitOpenError``) and records how it ended (an exception per ``record``/``ignore``,
a normal exit as a success, a cancellation or interrupt as nothing); the bulkhead holds a
slot for the block's duration; the timeout cancels the block at its deadline. The with
statement never swallows: an exception raised in the block comes out unchanged. Every
open block keeps its own token, so nested blocks and concurrent blocks (threads, tasks)
on one policy instance never mix up their starts or slots. Policies that cannot guard a
block (a sync ``Timeout``, ``Fallback``, a composition) refuse it with ``TypeError``.

Nothing here sleeps to wait for another thread or task: events, barriers, and bounded
polling order them. The only real waits are the timeouts under test (0.05 s).
"""

from __future__ import annotations

import contextlib
import contextvars
import gc
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
import pytest

import resilient._policies._policy
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CallSucceeded,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Event,
    Fallback,
    Timeout,
    TimeoutExceededError,
    compose,
    remaining,
)
from resilient.testing import ManualClock

# -- helpers -------------------------------------------------------------------------------


def small_breaker(clock: ManualClock | None = None, **options: object) -> CircuitBreaker:
    """Opens after two failures out of two blocks."""
    return CircuitBreaker(
        "cm",
        window=CountWindow(2),
        minimum_calls=2,
        open_duration=60.0,
        clock=clock or ManualClock(),
        **options,  # type: ignore[arg-type]
    )


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(2):
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError
    assert breaker.state is CircuitState.OPEN


def half_open(half_open_calls: int = 1, **options: object) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock()
    breaker = small_breaker(clock, half_open_calls=half_open_calls, **options)
    trip(breaker)
    clock.advance(60.0)
    return breaker, clock


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Bounded polling for state owned by other threads."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.001)


async def await_until(predicate: Callable[[], bool]) -> None:
    """Bounded polling that yields to the event loop."""
    with anyio.fail_after(5):
        while not predicate():
            await anyio.sleep(0.001)


@contextmanager
def threads_reraising() -> Iterator[tuple[list[threading.Thread], list[BaseException]]]:
    """Threads to start; joined at the end, and any error they hit fails the test."""
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []
    try:
        yield threads, errors
    finally:
        for thread in threads:
            thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


def durations(events: list[Event]) -> list[float | None]:
    return [e.duration for e in events if isinstance(e, CallSucceeded)]


# -- circuit breaker, sync -----------------------------------------------------------------


def test_with_breaker_records_a_normal_exit_as_success() -> None:
    breaker = small_breaker()
    ran = []
    with breaker:
        ran.append(True)
    assert ran == [True]
    m = breaker.metrics()
    assert (m.calls, m.failed_calls, m.successful_calls) == (1, 0, 1)


def test_with_breaker_lets_the_exception_through_unchanged_and_counts_it() -> None:
    breaker = small_breaker()
    error = ConnectionError("down")
    after = []
    with pytest.raises(ConnectionError) as info, breaker:
        raise error
    after.append(True)  # the test goes on: nothing else was raised
    assert info.value is error
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    m = breaker.metrics()
    assert (m.calls, m.failed_calls) == (1, 1)


def test_with_breaker_applies_record_and_ignore() -> None:
    breaker = small_breaker(record=(ConnectionError,), ignore=(KeyError,))
    with pytest.raises(ValueError), breaker:  # not recorded: a success
        raise ValueError
    with pytest.raises(KeyError), breaker:  # ignored: neither
        raise KeyError
    with pytest.raises(ConnectionError), breaker:  # recorded: a failure
        raise ConnectionError
    m = breaker.metrics()
    assert (m.calls, m.failed_calls, m.successful_calls) == (2, 1, 1)


def test_with_open_breaker_rejects_on_enter_and_skips_the_block() -> None:
    breaker = small_breaker()
    trip(breaker)
    ran = []
    with pytest.raises(CircuitOpenError) as info, breaker:
        ran.append(True)  # pragma: no cover
    assert ran == []
    assert info.value.retry_after == pytest.approx(60.0)
    assert info.value.policy == "cm"
    assert breaker.metrics().not_permitted_calls == 1

    breaker.force_open()
    with pytest.raises(CircuitOpenError) as forced, breaker:
        ran.append(True)  # pragma: no cover
    assert forced.value.retry_after is None
    assert ran == []


def test_with_breaker_half_open_trial_closes_it() -> None:
    breaker, _ = half_open()
    with breaker:
        assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.state is CircuitState.CLOSED


def test_interrupt_in_with_breaker_propagates_and_is_not_counted() -> None:
    breaker, _ = half_open()
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info, breaker:
        raise interrupt
    assert info.value is interrupt
    # The only trial gave its slot back: the next block is admitted, and decides.
    assert breaker.metrics().calls == 0
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError
    assert breaker.state is CircuitState.OPEN


def test_exit_without_enter_is_an_error() -> None:
    breaker = small_breaker()
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        breaker.__exit__(None, None, None)


def test_nested_blocks_keep_their_own_tokens() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(slow_call_duration=7.0, clock=clock)
    events: list[Event] = []
    breaker.add_listener(events.append)
    with breaker:  # t=0
        clock.advance(5.0)
        with breaker:  # t=5
            clock.advance(1.0)
        clock.advance(4.0)  # inner took 1 s; outer ends at t=10
    assert durations(events) == [1.0, 10.0]
    m = breaker.metrics()
    assert (m.calls, m.slow_calls) == (2, 1)


def test_rejected_enter_leaves_the_enclosing_block_intact() -> None:
    breaker, _ = half_open(half_open_calls=1)
    with breaker, pytest.raises(CircuitOpenError), breaker:  # the only trial, then a second
        pytest.fail("a second trial must not be admitted")  # pragma: no cover
    # The outer block's exit used its own token (the trial), so the breaker closed.
    assert breaker.state is CircuitState.CLOSED


def test_concurrent_threads_keep_their_own_tokens() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(slow_call_duration=5.5, clock=clock)
    events: list[Event] = []
    breaker.add_listener(events.append)
    a_in, a_out, b_in, b_out = (threading.Event() for _ in range(4))

    with threads_reraising() as (threads, errors):

        def block(entered: threading.Event, leave: threading.Event) -> None:
            try:
                with breaker:
                    entered.set()
                    assert leave.wait(5)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads.append(threading.Thread(target=block, args=(a_in, a_out)))
        threads[-1].start()
        assert a_in.wait(5)  # A enters at t=0
        clock.advance(5.0)
        threads.append(threading.Thread(target=block, args=(b_in, b_out)))
        threads[-1].start()
        assert b_in.wait(5)  # B enters at t=5
        clock.advance(1.0)
        a_out.set()  # A leaves first, at t=6: 6 s, slow
        threads[0].join(5)
        clock.advance(14.0)
        b_out.set()  # B leaves at t=20: 15 s, slow
    assert durations(events) == [6.0, 15.0]
    assert breaker.metrics().slow_calls == 2


def test_first_concurrent_use_of_a_policy_keeps_every_token() -> None:
    """Two threads entering a fresh policy at the same moment both get their slot back.

    The policy creates its token stack lazily; the first two blocks must not each create
    one (the second would replace the first, whose exit would then find no token and
    leak the slot). Creation is held open until both threads reach it, so the race, if
    the code allows it, happens every time.
    """
    bulkhead = Bulkhead(2)
    both_creating = threading.Barrier(2)
    real = contextvars.ContextVar

    def contextvar(*args: object, **kwargs: object) -> contextvars.ContextVar[object]:
        var: contextvars.ContextVar[object] = real(*args, **kwargs)  # type: ignore[arg-type]
        with contextlib.suppress(threading.BrokenBarrierError):
            both_creating.wait(timeout=0.3)  # a correct policy never lets both in here
        return var

    fake = types.SimpleNamespace(ContextVar=contextvar)
    mp = pytest.MonkeyPatch()
    mp.setattr(resilient._policies._policy, "contextvars", fake)
    start, both_inside = threading.Barrier(2), threading.Barrier(2)
    try:
        with threads_reraising() as (threads, errors):

            def block() -> None:
                start.wait(5)
                try:
                    # Through the class, as ExitStack looks it up: the token-stack path.
                    with contextlib.ExitStack() as stack:
                        stack.enter_context(bulkhead)
                        both_inside.wait(5)  # both enter before either leaves
                except BaseException as exc:
                    errors.append(exc)

            threads.extend(threading.Thread(target=block) for _ in range(2))
            for thread in threads:
                thread.start()
    finally:
        mp.undo()
    assert bulkhead.metrics().in_flight == 0


# -- circuit breaker, async ----------------------------------------------------------------


async def test_async_with_breaker_records_success_and_failure() -> None:
    breaker = small_breaker()
    async with breaker:
        await anyio.lowlevel.checkpoint()
    m = breaker.metrics()
    assert (m.calls, m.failed_calls) == (1, 0)
    error = ConnectionError("down")
    with pytest.raises(ConnectionError) as info:
        async with breaker:
            await anyio.lowlevel.checkpoint()
            raise error
    assert info.value is error
    m = breaker.metrics()
    assert (m.calls, m.failed_calls) == (2, 1)
    assert breaker.state is CircuitState.OPEN  # 1 failure in 2 reaches the 0.5 threshold
    with pytest.raises(CircuitOpenError):
        async with breaker:
            pytest.fail("an open breaker must not run the block")  # pragma: no cover
    assert breaker.metrics().not_permitted_calls == 1


async def test_cancellation_in_async_with_breaker_is_not_a_failure() -> None:
    breaker = small_breaker()
    for _ in range(3):
        with anyio.CancelScope() as scope:
            async with breaker:
                scope.cancel()
                await anyio.sleep(1)
        assert scope.cancelled_caught
    m = breaker.metrics()
    assert (m.calls, m.failed_calls) == (0, 0)
    assert breaker.state is CircuitState.CLOSED


async def test_cancelled_half_open_trial_gives_its_slot_back() -> None:
    breaker, _ = half_open()
    with anyio.CancelScope() as scope:
        async with breaker:
            scope.cancel()
            await anyio.sleep(1)
    assert breaker.state is CircuitState.HALF_OPEN
    async with breaker:  # admitted: the cancelled trial did not keep the slot
        pass
    assert breaker.state is CircuitState.CLOSED


async def test_concurrent_tasks_keep_their_own_tokens() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(slow_call_duration=5.5, clock=clock)
    events: list[Event] = []
    breaker.add_listener(events.append)
    a_in, a_out, a_done, b_in, b_out = (anyio.Event() for _ in range(5))

    async def block(entered: anyio.Event, leave: anyio.Event, done: anyio.Event | None) -> None:
        async with breaker:
            entered.set()
            await leave.wait()
        if done is not None:
            done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(block, a_in, a_out, a_done)
            await a_in.wait()  # A enters at t=0
            clock.advance(5.0)
            tg.start_soon(block, b_in, b_out, None)
            await b_in.wait()  # B enters at t=5
            clock.advance(1.0)
            a_out.set()  # A leaves first, at t=6
            await a_done.wait()
            clock.advance(14.0)
            b_out.set()  # B leaves at t=20
    assert durations(events) == [6.0, 15.0]
    assert breaker.metrics().slow_calls == 2


async def test_nested_async_blocks_in_one_task() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(slow_call_duration=7.0, clock=clock)
    events: list[Event] = []
    breaker.add_listener(events.append)
    async with breaker:
        clock.advance(5.0)
        async with breaker:
            clock.advance(1.0)
        clock.advance(4.0)
    assert durations(events) == [1.0, 10.0]


# -- bulkhead, sync ------------------------------------------------------------------------


def test_with_bulkhead_holds_a_slot_for_the_block() -> None:
    bulkhead = Bulkhead(2, name="b")
    with bulkhead:
        assert bulkhead.metrics().in_flight == 1
        with bulkhead:  # nested blocks take a slot each
            assert bulkhead.metrics().in_flight == 2
            with pytest.raises(BulkheadFullError) as info, bulkhead:
                pytest.fail("a full bulkhead must not run the block")  # pragma: no cover
            assert info.value.policy == "b"
        assert bulkhead.metrics().in_flight == 1
    m = bulkhead.metrics()
    assert (m.in_flight, m.rejected, m.max_observed) == (0, 1, 2)


def test_exception_in_with_bulkhead_propagates_and_releases() -> None:
    bulkhead = Bulkhead(1)
    error = ValueError("boom")
    with pytest.raises(ValueError) as info, bulkhead:
        raise error
    assert info.value is error
    assert bulkhead.metrics().in_flight == 0
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as stopped, bulkhead:
        raise interrupt
    assert stopped.value is interrupt
    assert bulkhead.metrics().in_flight == 0
    with bulkhead:  # the slot is free again
        pass


def test_with_bulkhead_waits_for_a_slot_released_by_another_thread() -> None:
    bulkhead = Bulkhead(1, max_wait=5.0)
    holding, release, admitted = threading.Event(), threading.Event(), threading.Event()
    with threads_reraising() as (threads, errors):

        def holder() -> None:
            try:
                with bulkhead:
                    holding.set()
                    assert release.wait(5)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def waiter() -> None:
            try:
                with bulkhead:
                    admitted.set()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads.append(threading.Thread(target=holder))
        threads[-1].start()
        assert holding.wait(5)
        threads.append(threading.Thread(target=waiter))
        threads[-1].start()
        wait_until(lambda: bulkhead.metrics().waiting == 1)
        assert not admitted.is_set()
        release.set()
        assert admitted.wait(5)
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.rejected) == (0, 0, 0)


def test_sixteen_threads_never_exceed_four_inside() -> None:
    bulkhead = Bulkhead(4, max_wait=10.0)
    with bulkhead:  # first use from one thread (see the first-concurrent-use test)
        pass
    # First block of each thread: four meet at the barrier while inside, which proves four
    # can be inside at once (16 threads, 4 generations). Then many short blocks contend.
    four_inside = threading.Barrier(4, timeout=5)
    lock = threading.Lock()
    inside = 0
    most = 0

    def enter_and_count(meet: bool) -> None:
        nonlocal inside, most
        with bulkhead:
            with lock:
                inside += 1
                most = max(most, inside)
            if meet:
                four_inside.wait()
            else:
                time.sleep(0)  # let other threads run while inside
            with lock:
                inside -= 1

    with threads_reraising() as (threads, errors):

        def worker() -> None:
            try:
                enter_and_count(meet=True)
                for _ in range(50):
                    enter_and_count(meet=False)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads.extend(threading.Thread(target=worker) for _ in range(16))
        for thread in threads:
            thread.start()
    assert most == 4
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.rejected, m.max_observed) == (0, 0, 0, 4)


# -- bulkhead, async -----------------------------------------------------------------------


async def test_async_with_bulkhead_holds_releases_and_rejects() -> None:
    bulkhead = Bulkhead(1)
    async with bulkhead:
        assert bulkhead.metrics().in_flight == 1
        with pytest.raises(BulkheadFullError):
            async with bulkhead:
                pytest.fail("a full bulkhead must not run the block")  # pragma: no cover
    error = ValueError("boom")
    with pytest.raises(ValueError) as info:
        async with bulkhead:
            await anyio.lowlevel.checkpoint()
            raise error
    assert info.value is error
    m = bulkhead.metrics()
    assert (m.in_flight, m.rejected) == (0, 1)


async def test_async_with_bulkhead_releases_on_cancellation() -> None:
    bulkhead = Bulkhead(1)
    with anyio.CancelScope() as scope:
        async with bulkhead:
            assert bulkhead.metrics().in_flight == 1
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert bulkhead.metrics().in_flight == 0
    async with bulkhead:
        pass


async def test_cancelled_waiter_leaves_the_queue_without_a_slot() -> None:
    bulkhead = Bulkhead(1, max_wait=5.0)
    admitted = []

    async def wait_for_slot(scope: anyio.CancelScope) -> None:
        with scope:
            async with bulkhead:
                admitted.append(True)  # pragma: no cover

    with anyio.fail_after(5):
        async with bulkhead, anyio.create_task_group() as tg:
            scope = anyio.CancelScope()
            tg.start_soon(wait_for_slot, scope)
            await await_until(lambda: bulkhead.metrics().waiting == 1)
            scope.cancel()
            await await_until(lambda: bulkhead.metrics().waiting == 0)
    assert admitted == []
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.rejected) == (0, 0, 0)


async def test_async_with_bulkhead_waits_for_a_thread_to_release() -> None:
    bulkhead = Bulkhead(1, max_wait=5.0)
    holding, release = threading.Event(), threading.Event()

    def holder() -> None:
        with bulkhead:
            holding.set()
            release.wait(5)

    with threads_reraising() as (threads, _):
        threads.append(threading.Thread(target=holder))
        threads[0].start()
        await await_until(holding.is_set)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def waiter() -> None:
                    async with bulkhead:
                        assert bulkhead.metrics().in_flight == 1

                tg.start_soon(waiter)
                await await_until(lambda: bulkhead.metrics().waiting == 1)
                release.set()  # the thread's exit hands the slot to the waiting task
    assert bulkhead.metrics().in_flight == 0


# -- timeout -------------------------------------------------------------------------------


async def test_async_with_timeout_cancels_the_block() -> None:
    timeout = Timeout(0.05, name="t")
    reached = []
    start = time.monotonic()
    with pytest.raises(TimeoutExceededError) as info:
        async with timeout:
            await anyio.sleep(1)
            reached.append(True)  # pragma: no cover
    assert time.monotonic() - start < 0.9
    assert reached == []
    assert isinstance(info.value, TimeoutError)
    assert info.value.policy == "t"
    assert info.value.seconds == pytest.approx(0.05)
    assert timeout.metrics().timeouts == 1
    await anyio.sleep(0)  # no cancellation is left pending on the task


async def test_async_with_timeout_fast_block_and_remaining() -> None:
    timeout = Timeout(1.0)
    assert remaining() is None
    async with timeout:
        left = remaining()
        assert left is not None
        assert 0.0 < left <= 1.0
        await anyio.lowlevel.checkpoint()
    assert remaining() is None
    assert timeout.metrics().timeouts == 0


async def test_exception_in_async_with_timeout_propagates_unchanged() -> None:
    timeout = Timeout(1.0)
    error = ValueError("boom")
    with pytest.raises(ValueError) as info:
        async with timeout:
            await anyio.lowlevel.checkpoint()
            raise error
    assert info.value is error
    assert timeout.metrics().timeouts == 0
    assert remaining() is None


async def test_outside_cancellation_is_not_a_timeout() -> None:
    timeout = Timeout(5.0)
    with anyio.CancelScope() as scope:
        async with timeout:
            scope.cancel()
            await anyio.sleep(1)
    assert scope.cancelled_caught
    assert timeout.metrics().timeouts == 0


async def test_inner_tighter_timeout_fires_and_the_outer_block_goes_on() -> None:
    outer, inner = Timeout(5.0), Timeout(0.05)
    async with outer:
        with pytest.raises(TimeoutExceededError):
            async with inner:
                await anyio.sleep(1)
        await anyio.sleep(0)  # still running under the outer deadline
        left = remaining()
        assert left is not None
        assert left > 1.0
    assert (outer.metrics().timeouts, inner.metrics().timeouts) == (0, 1)


async def test_outer_tighter_timeout_wins() -> None:
    outer, inner = Timeout(0.05), Timeout(5.0)
    start = time.monotonic()
    with pytest.raises(TimeoutExceededError):
        async with outer, inner:
            left = remaining()
            assert left is not None
            assert left <= 0.05
            await anyio.sleep(1)
    assert time.monotonic() - start < 0.9
    assert outer.metrics().timeouts + inner.metrics().timeouts == 1  # one deadline, one timeout
    await anyio.sleep(0)  # no cancellation is left pending on the task


async def test_concurrent_tasks_under_one_timeout_keep_their_own_deadlines() -> None:
    timeout = Timeout(0.05)
    results: dict[str, object] = {}
    b_inside = anyio.Event()

    async def quick() -> None:
        async with timeout:
            await b_inside.wait()  # leaves after the slow task has entered
        results["quick"] = "ok"

    async def slow() -> None:
        try:
            async with timeout:
                b_inside.set()
                await anyio.sleep(1)
        except TimeoutExceededError as exc:
            results["slow"] = type(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(quick)
            await anyio.lowlevel.checkpoint()
            tg.start_soon(slow)
    assert results == {"quick": "ok", "slow": TimeoutExceededError}
    assert timeout.metrics().timeouts == 1


def test_sync_with_timeout_is_refused() -> None:
    ran = []
    with pytest.raises(TypeError, match="async with"), Timeout(1.0):
        ran.append(True)  # pragma: no cover
    assert ran == []


# -- policies that cannot guard a block ----------------------------------------------------


def test_with_fallback_is_refused() -> None:
    fallback = Fallback(lambda exc: None)
    with pytest.raises(TypeError, match="decorate"), fallback:
        pytest.fail("the block must not run")  # pragma: no cover


async def test_async_with_fallback_is_refused() -> None:
    fallback = Fallback(lambda exc: None)
    with pytest.raises(TypeError, match="decorate"):
        async with fallback:
            pytest.fail("the block must not run")  # pragma: no cover


async def test_with_composition_is_refused() -> None:
    composition = compose(CircuitBreaker(), Bulkhead(1))
    with pytest.raises(TypeError), composition:
        pytest.fail("the block must not run")  # pragma: no cover
    with pytest.raises(TypeError):
        async with composition:
            pytest.fail("the block must not run")  # pragma: no cover
    # The policies inside were not entered.
    breaker, bulkhead = composition.policies
    assert isinstance(breaker, CircuitBreaker)
    assert isinstance(bulkhead, Bulkhead)
    assert breaker.metrics().calls == 0
    assert bulkhead.metrics().in_flight == 0


# -- a block whose exit never runs -----------------------------------------------------------
# `with` binds the block's exit before it calls __enter__, and drops it without a call when
# an interrupt lands at the exit's first line (where the interpreter checks for signals).
# Binding the exit by hand, entering, and dropping the exit does exactly that.


def test_with_bulkhead_block_dropped_before_its_exit_gives_the_slot_back() -> None:
    bulkhead = Bulkhead(1)
    exit_ = bulkhead.__exit__
    bulkhead.__enter__()
    assert bulkhead.metrics().in_flight == 1
    del exit_
    assert bulkhead.metrics().in_flight == 0
    with bulkhead:
        assert bulkhead.metrics().in_flight == 1


def test_with_bulkhead_block_dropped_in_a_reference_cycle_gives_the_slot_back() -> None:
    bulkhead = Bulkhead(1)
    gc.disable()
    try:
        exit_ = bulkhead.__exit__
        bulkhead.__enter__()
        cycle: list[object] = [exit_]
        cycle.append(cycle)  # a traceback that holds its own frame is such a cycle
        del exit_, cycle
        assert bulkhead.metrics().in_flight == 1  # until the collector finds the cycle
        gc.collect()
    finally:
        gc.enable()
    assert bulkhead.metrics().in_flight == 0


async def test_async_with_bulkhead_block_dropped_before_its_exit_gives_the_slot_back() -> None:
    bulkhead = Bulkhead(1)
    exit_ = bulkhead.__aexit__
    await bulkhead.__aenter__()
    assert bulkhead.metrics().in_flight == 1
    del exit_
    assert bulkhead.metrics().in_flight == 0


def test_a_waiting_block_dropped_before_its_exit_gives_the_slot_back() -> None:
    bulkhead = Bulkhead(1, max_wait=5.0)
    holding, done = threading.Event(), threading.Event()

    with threads_reraising() as (threads, errors):

        def hold() -> None:
            try:
                with bulkhead:
                    holding.set()
                    wait_until(lambda: bulkhead.metrics().waiting == 1)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        def wait_then_drop() -> None:
            try:
                holding.wait(5)
                exit_ = bulkhead.__exit__
                bulkhead.__enter__()  # queued, then handed the slot
                assert bulkhead.metrics().in_flight == 1
                del exit_
                done.set()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads.extend(threading.Thread(target=t) for t in (hold, wait_then_drop))
        for thread in threads:
            thread.start()
    assert done.is_set()
    assert bulkhead.metrics().in_flight == 0


def test_with_breaker_block_dropped_before_its_exit_gives_the_trial_back() -> None:
    breaker, _ = half_open(half_open_calls=1)
    exit_ = breaker.__exit__
    breaker.__enter__()  # the only trial
    del exit_
    with breaker:  # admitted: the trial came back with the dropped block
        pass
    assert breaker.state is CircuitState.CLOSED


def test_an_exit_bound_by_a_with_statement_runs_once() -> None:
    bulkhead = Bulkhead(2)
    exit_ = bulkhead.__exit__
    bulkhead.__enter__()
    assert exit_(None, None, None) is False
    with pytest.raises(RuntimeError, match="exit without a matching enter"):
        exit_(None, None, None)
    assert bulkhead.metrics().in_flight == 0


def test_a_looked_up_exit_nobody_keeps_leaves_blocks_by_hand_intact() -> None:
    bulkhead = Bulkhead(2)
    assert hasattr(bulkhead, "__exit__")  # binds a block, dropped at once
    bulkhead.__enter__()
    bulkhead.__enter__()
    assert bulkhead.metrics().in_flight == 2
    bulkhead.__exit__(None, None, None)
    bulkhead.__exit__(None, None, None)
    assert bulkhead.metrics().in_flight == 0


def test_exit_stack_enters_and_exits_through_the_class() -> None:
    bulkhead, breaker = Bulkhead(1), small_breaker()
    with contextlib.ExitStack() as stack:
        stack.enter_context(breaker)
        stack.enter_context(bulkhead)
        assert bulkhead.metrics().in_flight == 1
    assert bulkhead.metrics().in_flight == 0
    assert breaker.metrics().calls == 1


async def test_async_exit_stack_enters_and_exits_through_the_class() -> None:
    bulkhead = Bulkhead(1)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(bulkhead)
        assert bulkhead.metrics().in_flight == 1
    assert bulkhead.metrics().in_flight == 0


def test_a_block_whose_enter_was_rejected_is_not_adopted_again() -> None:
    bulkhead = Bulkhead(1)
    bulkhead.__enter__()  # by hand: holds the only slot
    exit_ = bulkhead.__exit__  # kept alive, as a stored exception's traceback would
    with pytest.raises(BulkheadFullError):
        bulkhead.__enter__()  # adopts exit_'s block, and is rejected
    Bulkhead.__exit__(bulkhead, None, None, None)  # through the class: binds no block
    bulkhead.__enter__()  # by hand again: its slot goes to the token stack
    del exit_
    assert bulkhead.metrics().in_flight == 1
    bulkhead.__exit__(None, None, None)
    assert bulkhead.metrics().in_flight == 0
