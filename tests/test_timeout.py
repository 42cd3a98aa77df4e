"""Timeout: async calls are cancelled at the deadline, sync calls are abandoned in a worker.

Real timeouts here are short (0.05 s) and only ever bound the call under test; state
changes are awaited with Events and bounded polling loops, never with a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import gc
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import anyio
import pytest
import trio
import trio.testing

import resilient
from resilient import (
    Bulkhead,
    CallRejected,
    CallTimedOut,
    RejectedError,
    ResilienceError,
    Timeout,
    TimeoutExceededError,
    TimeoutMetrics,
    WorkersExhaustedError,
    compose,
    remaining,
)
from resilient._waiting import _workers as workers_module
from resilient.testing import ManualClock, capture_events

SHORT = 0.05  # the timeout that is meant to expire
LONG = 10.0  # a timeout (or a hold) that must never be reached in a passing test
LIMIT = 5.0  # bound of every polling loop and Event wait


class Boom(Exception):
    pass


class Interrupt(BaseException):
    """A BaseException that is not an Exception, as KeyboardInterrupt is."""


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (yielding the GIL each turn) until it holds, at most LIMIT s."""
    deadline = time.monotonic() + LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.001)


class TrioClock:
    """A resilient Clock reading trio's (possibly mock) clock, for exact remaining()."""

    def monotonic(self) -> float:
        return trio.current_time()

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    async def asleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


# -- the error and its attributes ---------------------------------------------------------


def test_error_hierarchy() -> None:
    assert issubclass(TimeoutExceededError, ResilienceError)
    assert issubclass(TimeoutExceededError, TimeoutError)
    assert issubclass(WorkersExhaustedError, RejectedError)


def test_construction_needs_no_event_loop_and_exposes_its_options() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    policy = Timeout(datetime.timedelta(milliseconds=1500), name="t")

    @policy
    async def guarded() -> int:
        return 1

    assert policy.seconds == 1.5
    assert policy.name == "t"
    assert policy.metrics() == TimeoutMetrics(
        seconds=1.5, timeouts=0, rejected=0, workers=0, busy_workers=0, abandoned_running=0
    )
    assert asyncio.run(guarded()) == 1


@pytest.mark.parametrize(
    ("options", "error", "option"),
    [
        ({"seconds": 0}, ValueError, "seconds"),
        ({"seconds": -1}, ValueError, "seconds"),
        ({"seconds": "1"}, TypeError, "seconds"),
        ({"seconds": None}, TypeError, "seconds"),
        ({"seconds": True}, TypeError, "seconds"),
        ({"seconds": float("nan")}, ValueError, "seconds"),
        ({"seconds": float("inf")}, ValueError, "seconds"),
        ({"seconds": datetime.timedelta(0)}, ValueError, "seconds"),
        ({"seconds": 1, "max_workers": 0}, ValueError, "max_workers"),
        ({"seconds": 1, "max_workers": -3}, ValueError, "max_workers"),
        ({"seconds": 1, "max_workers": 1.5}, TypeError, "max_workers"),
        ({"seconds": 1, "max_workers": "2"}, TypeError, "max_workers"),
        ({"seconds": 1, "name": 3}, TypeError, "name"),
    ],
)
def test_bad_options_raise_naming_the_option(
    options: dict[str, Any], error: type[Exception], option: str
) -> None:
    seconds = options.pop("seconds")
    with pytest.raises(error, match=option):
        Timeout(seconds, **options)


def test_sync_with_block_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="async with"), Timeout(1.0):
        pass  # pragma: no cover - never entered


# -- async: cancellation at the deadline --------------------------------------------------


async def test_async_call_is_cancelled_and_its_finally_runs() -> None:
    policy = Timeout(SHORT, name="slow")
    reached: list[str] = []

    @policy
    async def slow() -> None:
        try:
            await anyio.sleep(LONG)
            reached.append("after sleep")  # pragma: no cover - must be cancelled
        finally:
            reached.append("finally")

    start = time.monotonic()
    with capture_events() as events, pytest.raises(TimeoutExceededError) as info:
        await slow()
    elapsed = time.monotonic() - start

    assert reached == ["finally"]
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, ResilienceError)
    assert info.value.seconds == SHORT
    assert info.value.policy == "slow"
    assert SHORT * 0.8 <= elapsed < LONG / 2
    assert policy.metrics().timeouts == 1
    assert events == [CallTimedOut("slow", "timeout", SHORT, abandoned=False)]


async def test_async_result_and_error_pass_through_and_no_late_cancellation() -> None:
    policy = Timeout(SHORT * 4)  # roomy for the calls, short for the wait below
    error = Boom("kept")

    async def ok(value: int) -> int:
        await anyio.sleep(0)
        return value * 2

    async def fails() -> None:
        await anyio.sleep(0)
        raise error

    assert await policy.call_async(ok, 21) == 42
    with pytest.raises(Boom) as info:
        await policy.call_async(fails)
    assert info.value is error
    # The deadlines of the finished calls pass while this task keeps running: nothing
    # may cancel it then (a stale timer entry would).
    with anyio.fail_after(LONG):
        await anyio.sleep(SHORT * 5)
    assert policy.metrics().timeouts == 0


async def test_async_with_guards_a_block() -> None:
    policy = Timeout(SHORT)
    reached: list[str] = []
    async with Timeout(LONG):
        assert remaining() is not None
        await anyio.sleep(0)
    with pytest.raises(TimeoutExceededError) as info:
        async with policy:
            try:
                await anyio.sleep(LONG)
            finally:
                reached.append("finally")
    assert reached == ["finally"]
    assert info.value.seconds == SHORT
    assert remaining() is None
    assert policy.metrics().timeouts == 1


# Where the deadline is an anyio cancel scope (trio; asyncio on Python 3.10), shields work.
_SCOPE_BACKENDS = ["trio"] if sys.version_info >= (3, 11) else ["trio", "asyncio"]


@pytest.mark.parametrize("anyio_backend", _SCOPE_BACKENDS)
async def test_shielded_block_inside_the_call_is_not_interrupted_under_a_scope() -> None:
    # With a cancel scope a shielded scope inside is protected, and the cancellation is
    # delivered at the first checkpoint after it.
    policy = Timeout(SHORT)
    reached: list[str] = []

    async def shielded_then_wait() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(SHORT * 2)  # the deadline passes in here
            reached.append("shielded block done")
        try:
            await anyio.sleep(LONG)
        finally:
            reached.append("finally")

    start = time.monotonic()
    with pytest.raises(TimeoutExceededError):
        await policy.call_async(shielded_then_wait)
    assert time.monotonic() - start < LONG / 2
    assert reached == ["shielded block done", "finally"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 uses a cancel scope (see above)")
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_on_asyncio_the_deadline_cancels_like_asyncio_timeout() -> None:
    # Documented (docs/timeout.md): on asyncio the deadline cancels the task as
    # asyncio.timeout() does, which anyio's shield does not stop; asyncio.shield()
    # keeps work running to its end.
    policy = Timeout(SHORT)
    reached: list[str] = []

    async def must_finish() -> None:
        await anyio.sleep(SHORT * 2)
        reached.append("shielded work done")

    async def call() -> None:
        task = asyncio.ensure_future(must_finish())
        try:
            await asyncio.shield(task)
        finally:
            await task  # the cleanup waits for the shielded work

    with pytest.raises(TimeoutExceededError):
        await policy.call_async(call)
    assert reached == ["shielded work done"]


async def test_shielded_cleanup_after_the_deadline_completes() -> None:
    policy = Timeout(SHORT)
    reached: list[str] = []

    async def cleanup_under_shield() -> None:
        try:
            await anyio.sleep(LONG)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(SHORT)  # a shielded cleanup, e.g. closing a connection
                reached.append("shielded cleanup done")

    with pytest.raises(TimeoutExceededError):
        await policy.call_async(cleanup_under_shield)
    assert reached == ["shielded cleanup done"]


# -- async: nesting and remaining() -------------------------------------------------------


async def test_nested_inner_shorter_wins() -> None:
    outer, inner = Timeout(LONG, name="outer"), Timeout(SHORT, name="inner")

    @outer
    async def outside() -> None:
        await inner.call_async(anyio.sleep, LONG)

    start = time.monotonic()
    with pytest.raises(TimeoutExceededError) as info:
        await outside()
    assert time.monotonic() - start < LONG / 2
    assert info.value.seconds == SHORT
    assert info.value.policy == "inner"
    assert (outer.metrics().timeouts, inner.metrics().timeouts) == (0, 1)


async def test_nested_outer_shorter_wins() -> None:
    outer, inner = Timeout(SHORT, name="outer"), Timeout(LONG, name="inner")
    seen: list[float | None] = []

    @inner
    async def inside() -> None:
        seen.append(remaining())
        await anyio.sleep(LONG)

    start = time.monotonic()
    with pytest.raises(TimeoutExceededError) as info:
        await outer.call_async(inside)
    assert time.monotonic() - start < LONG / 2
    # The effective timeout was the outer one, whichever policy reported it.
    assert 0.0 < info.value.seconds <= SHORT
    assert outer.metrics().timeouts + inner.metrics().timeouts == 1
    assert seen[0] is not None
    assert 0.0 < seen[0] <= SHORT


async def test_remaining_is_exact_under_a_manual_clock() -> None:
    clock = ManualClock()
    policy = Timeout(10.0, clock=clock)
    seen: list[float | None] = []

    @policy
    async def fn() -> None:
        seen.append(remaining())
        clock.advance(3.0)
        seen.append(remaining())
        await anyio.sleep(0)
        clock.advance(6.5)
        seen.append(remaining())
        clock.advance(5.0)  # past the deadline: never negative
        seen.append(remaining())

    assert remaining() is None
    await fn()
    assert seen == [10.0, 7.0, 0.5, 0.0]
    assert remaining() is None


async def test_remaining_nests_and_restores_under_a_manual_clock() -> None:
    clock = ManualClock()
    seen: list[float | None] = []
    async with Timeout(10.0, clock=clock):
        clock.advance(4.0)
        async with Timeout(100.0, clock=clock):  # looser: the outer deadline stays
            seen.append(remaining())
        async with Timeout(2.0, clock=clock):  # tighter: its own
            seen.append(remaining())
            clock.advance(0.5)
            seen.append(remaining())
        seen.append(remaining())  # back to the outer deadline
    seen.append(remaining())
    assert seen == [6.0, 2.0, 1.5, 5.5, None]


async def test_remaining_tracks_real_time_and_reaches_child_tasks() -> None:
    policy = Timeout(1.0)
    seen: dict[str, float | None] = {}

    async def child() -> None:
        seen["child"] = remaining()

    @policy
    async def fn() -> None:
        seen["first"] = remaining()
        await anyio.sleep(0.02)
        seen["second"] = remaining()
        async with anyio.create_task_group() as tg:
            tg.start_soon(child)

    await fn()
    first, second, in_child = seen["first"], seen["second"], seen["child"]
    assert first is not None
    assert second is not None
    assert in_child is not None
    assert 0.5 < first <= 1.0
    assert second <= first - 0.01
    assert 0.0 < in_child <= second
    assert remaining() is None


async def test_deadline_already_passed_raises_without_calling() -> None:
    clock = ManualClock()
    inner = Timeout(1.0, name="inner")
    called: list[int] = []

    async def fn() -> None:
        called.append(1)  # pragma: no cover - must not be called

    with pytest.raises(TimeoutExceededError) as info:
        async with Timeout(10.0, clock=clock, name="outer"):
            clock.advance(10.0)
            assert remaining() == 0.0
            await inner.call_async(fn)
    assert called == []
    assert info.value.seconds == 0.0
    assert info.value.policy == "inner"
    assert inner.metrics().timeouts == 1

    with pytest.raises(TimeoutExceededError):
        async with Timeout(10.0, clock=clock):
            clock.advance(11.0)
            async with inner:
                called.append(2)  # pragma: no cover - the block must not run
    assert called == []


# -- async: cancellation from outside -----------------------------------------------------


async def test_outside_cancellation_stays_a_cancellation() -> None:
    policy = Timeout(LONG)
    reached: list[str] = []

    async def fn() -> None:
        try:
            await anyio.sleep(LONG)
        finally:
            reached.append("finally")

    with capture_events() as events:
        with anyio.move_on_after(SHORT) as scope:
            await policy.call_async(fn)
        assert scope.cancelled_caught

        with anyio.CancelScope() as scope:
            scope.cancel()
            await policy.call_async(fn)
        assert scope.cancelled_caught

    assert reached == ["finally", "finally"]
    assert policy.metrics().timeouts == 0
    assert events == []


async def test_outside_deadline_tighter_than_the_timeout_is_not_a_timeout() -> None:
    # The outside scope fires first; the timeout must not claim its cancellation.
    policy = Timeout(SHORT * 4)
    with anyio.move_on_after(SHORT) as scope:
        await policy.call_async(anyio.sleep, LONG)
    assert scope.cancelled_caught
    assert policy.metrics().timeouts == 0


def test_native_asyncio_task_cancel_propagates() -> None:
    policy = Timeout(LONG)

    async def main() -> None:
        entered = asyncio.Event()

        async def fn() -> None:
            entered.set()
            await asyncio.sleep(LONG)

        task = asyncio.create_task(policy.call_async(fn))
        await asyncio.wait_for(entered.wait(), LIMIT)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    asyncio.run(main())
    assert policy.metrics().timeouts == 0


# -- async: composition with a bulkhead ---------------------------------------------------


def _compose_timeout_outside(bulkhead: Bulkhead, timeout: Timeout) -> Any:
    return compose(timeout, bulkhead)


def _compose_timeout_inside(bulkhead: Bulkhead, timeout: Timeout) -> Any:
    return compose(bulkhead, timeout)


def _stack_timeout_outside(bulkhead: Bulkhead, timeout: Timeout) -> Any:
    return lambda fn: timeout(bulkhead(fn))


def _stack_timeout_inside(bulkhead: Bulkhead, timeout: Timeout) -> Any:
    return lambda fn: bulkhead(timeout(fn))


ARRANGEMENTS = pytest.mark.parametrize(
    "arrange",
    [
        _compose_timeout_outside,
        _compose_timeout_inside,
        _stack_timeout_outside,
        _stack_timeout_inside,
    ],
    ids=["compose(T,B)", "compose(B,T)", "@T@B", "@B@T"],
)


@ARRANGEMENTS
async def test_async_timeout_releases_the_bulkhead_slot(
    arrange: Callable[[Bulkhead, Timeout], Any],
) -> None:
    bulkhead, timeout = Bulkhead(1), Timeout(SHORT)
    guard = arrange(bulkhead, timeout)

    @guard
    async def slow() -> None:
        await anyio.sleep(LONG)

    @guard
    async def fast() -> str:
        return "ok"

    with pytest.raises(TimeoutExceededError):
        await slow()
    assert bulkhead.metrics().in_flight == 0
    assert await fast() == "ok"
    assert bulkhead.metrics().in_flight == 0
    assert bulkhead.metrics().rejected == 0


# -- async: many calls on one loop, several loops ---------------------------------------


async def test_many_concurrent_timeouts_each_get_their_outcome() -> None:
    # Deadlines are generous for the calls that must finish (500 tasks on trio take tens
    # of milliseconds per round of checkpoints, hundreds on a loaded 2-core machine,
    # where 0.25 s was seen to run out), and the overrunning half never ends.
    base = 1.0
    policies = [Timeout(base), Timeout(base * 1.2), Timeout(base * 1.4)]
    outer = Timeout(base * 1.1)  # shortens a LONG inner timeout: an irregular deadline
    loose = Timeout(LONG)
    never = anyio.Event()
    outcomes: dict[int, object] = {}
    cleaned: set[int] = set()
    stray: list[int] = []
    n = 500
    start = anyio.current_time()

    async def work(i: int) -> int:
        if i % 2:
            for _ in range(3):
                await anyio.sleep(0)
            return i
        try:
            await never.wait()
        finally:
            cleaned.add(i)
        return -1  # pragma: no cover - never set

    async def run(i: int) -> None:
        try:
            if i % 5 == 0:
                async with outer:
                    outcomes[i] = await loose.call_async(work, i)
            else:
                outcomes[i] = await policies[i % 3].call_async(work, i)
        except TimeoutExceededError as exc:
            outcomes[i] = exc
        try:  # outlive every deadline: no late cancellation may hit this task
            await anyio.sleep_until(start + base * 1.8)
        except BaseException:
            stray.append(i)
            raise

    with anyio.fail_after(LONG):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(run, i)

    assert anyio.current_time() - start < LONG / 2
    assert stray == []
    assert len(outcomes) == n
    for i, outcome in outcomes.items():
        if i % 2:
            assert outcome == i, (i, outcome)
            continue
        assert isinstance(outcome, TimeoutExceededError), (i, outcome)
        expected = outer.seconds if i % 5 == 0 else policies[i % 3].seconds
        assert 0.0 < outcome.seconds <= expected, (i, outcome.seconds)
    assert cleaned == set(range(0, n, 2))
    total = sum(p.metrics().timeouts for p in (*policies, outer, loose))
    assert total == n // 2


async def _mixed_round(policy: Timeout, n: int) -> list[object]:
    results: list[object] = [None] * n

    async def job(i: int) -> int:
        if i % 2:
            await anyio.sleep(LONG)
        return i  # the others finish without a checkpoint: no deadline can catch them

    async def one(i: int) -> None:
        try:
            results[i] = await policy.call_async(job, i)
        except TimeoutExceededError as exc:
            results[i] = type(exc)

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)
    return results


def test_one_policy_across_event_loops_in_sequence() -> None:
    policy = Timeout(SHORT)  # created and used outside any loop
    expected = [i if i % 2 == 0 else TimeoutExceededError for i in range(20)]
    for backend in ("asyncio", "trio", "asyncio", "asyncio", "trio"):
        assert anyio.run(_mixed_round, policy, 20, backend=backend) == expected, backend
    assert policy.metrics().timeouts == 5 * 10


def test_one_policy_on_two_loops_in_two_threads_at_once() -> None:
    policy = Timeout(SHORT)
    expected = [i if i % 2 == 0 else TimeoutExceededError for i in range(40)]
    results: dict[str, list[object]] = {}
    barrier = threading.Barrier(2, timeout=LIMIT)

    def thread_main(backend: str) -> None:
        barrier.wait()
        results[backend] = anyio.run(_mixed_round, policy, 40, backend=backend)

    threads = [threading.Thread(target=thread_main, args=(b,)) for b in ("asyncio", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(LIMIT)
        assert not thread.is_alive()
    assert results == {"asyncio": expected, "trio": expected}
    assert policy.metrics().timeouts == 40


def test_event_loops_that_used_a_timeout_can_be_collected() -> None:
    policy = Timeout(1.0)
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        await policy.call_async(asyncio.sleep, 0)

    for _ in range(3):
        asyncio.run(main())
    gc.collect()
    # The library may cache the most recent loop; the earlier ones must be gone.
    assert [ref() is None for ref in loops[:-1]] == [True, True]


def test_trio_mock_clock_makes_long_timeouts_instant() -> None:
    reached: list[str] = []
    seen: list[float | None] = []

    async def main() -> None:
        clock = TrioClock()
        policy = Timeout(3600.0, clock=clock)

        @policy
        async def long_job(duration: float) -> str:
            seen.append(remaining())
            try:
                await trio.sleep(1000.0)
                seen.append(remaining())
                await trio.sleep(duration - 1000.0)
            finally:
                reached.append("finally")
            return "done"

        start = trio.current_time()
        assert await long_job(3599.0) == "done"
        assert trio.current_time() - start == pytest.approx(3599.0)

        start = trio.current_time()
        with pytest.raises(TimeoutExceededError) as info:
            await long_job(7200.0)
        assert trio.current_time() - start == pytest.approx(3600.0)
        assert info.value.seconds == 3600.0

        # Nested: the hour-long timeout cut short by a ten-minute outer deadline.
        outer = Timeout(600.0, clock=clock)
        start = trio.current_time()
        with pytest.raises(TimeoutExceededError) as info:
            async with outer:
                await long_job(7200.0)
        assert trio.current_time() - start == pytest.approx(600.0)
        assert info.value.seconds == pytest.approx(600.0)
        assert policy.metrics().timeouts + outer.metrics().timeouts == 2

    start = time.monotonic()
    anyio.run(
        main,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
    assert time.monotonic() - start < LONG / 2
    assert reached == ["finally"] * 3
    assert seen == pytest.approx([3600.0, 2600.0, 3600.0, 2600.0, 600.0])


def test_scope_based_path_used_before_python_3_11(monkeypatch: pytest.MonkeyPatch) -> None:
    # On asyncio under 3.10 (no Task.uncancel) the timeout runs through an anyio cancel
    # scope; exercise that path here by turning the 3.11 fast path off.
    monkeypatch.setattr("resilient._policies._timeout._UNCANCEL", False)
    reached: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(LONG)
        finally:
            reached.append("finally")

    async def main() -> None:
        policy = Timeout(SHORT)
        with pytest.raises(TimeoutExceededError) as info:
            await policy.call_async(slow)
        assert info.value.seconds == SHORT

        outside = Timeout(LONG)
        with anyio.move_on_after(SHORT) as scope:
            await outside.call_async(slow)
        assert scope.cancelled_caught
        assert outside.metrics().timeouts == 0

        inner = Timeout(SHORT, name="inner")
        with pytest.raises(TimeoutExceededError) as info:
            async with Timeout(LONG):
                await inner.call_async(slow)
        assert info.value.policy == "inner"

        bulkhead = Bulkhead(1)
        with pytest.raises(TimeoutExceededError):
            await compose(Timeout(SHORT), bulkhead).call_async(slow)
        assert bulkhead.metrics().in_flight == 0

    asyncio.run(main())
    assert reached == ["finally"] * 4


# -- sync: worker threads -----------------------------------------------------------------

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def test_sync_call_runs_in_a_worker_with_the_callers_context() -> None:
    policy = Timeout(LONG)
    seen: dict[str, Any] = {}

    def fn() -> str:
        seen["thread"] = threading.get_ident()
        seen["request_id"] = REQUEST_ID.get()
        seen["remaining"] = remaining()
        REQUEST_ID.set("changed in worker")
        return "ok"

    token = REQUEST_ID.set("req-42")
    try:
        assert policy.call(fn) == "ok"
        assert REQUEST_ID.get() == "req-42"  # the worker ran in a copy
    finally:
        REQUEST_ID.reset(token)
    assert seen["thread"] != threading.get_ident()
    assert seen["request_id"] == "req-42"
    assert 0.0 < seen["remaining"] <= LONG
    assert remaining() is None


def test_sync_remaining_is_exact_under_a_manual_clock() -> None:
    clock = ManualClock()
    policy = Timeout(10.0, clock=clock)

    def fn() -> tuple[float | None, ...]:
        first = remaining()
        clock.advance(4.0)
        second = remaining()
        clock.advance(5.75)
        return first, second, remaining()

    assert policy.call(fn) == (10.0, 6.0, 0.25)
    assert remaining() is None


def test_sync_result_and_exceptions_pass_through_unchanged() -> None:
    policy = Timeout(LONG)
    result = object()
    error = Boom("same object")
    interrupt = Interrupt()

    def fails(exc: BaseException) -> None:
        raise exc

    assert policy.call(lambda: result) is result
    with pytest.raises(Boom) as info:
        policy.call(fails, error)
    assert info.value is error
    with pytest.raises(Interrupt) as caught:
        policy.call(fails, interrupt)
    assert caught.value is interrupt
    assert policy.metrics().timeouts == 0


def test_sync_timeout_abandons_the_running_call() -> None:
    policy = Timeout(SHORT, name="slow")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        try:
            release.wait(LONG)
        finally:
            finished.set()
        return "late"

    try:
        start = time.monotonic()
        with capture_events() as events, pytest.raises(TimeoutExceededError) as info:
            policy.call(work)
        elapsed = time.monotonic() - start
        assert SHORT * 0.8 <= elapsed < LONG / 2
        assert info.value.seconds == SHORT
        assert started.is_set()
        assert not finished.is_set()  # still running, abandoned
        metrics = policy.metrics()
        assert (metrics.timeouts, metrics.abandoned_running) == (1, 1)
        assert (metrics.workers, metrics.busy_workers) == (1, 1)
        assert events == [CallTimedOut("slow", "timeout", SHORT, abandoned=True)]
    finally:
        release.set()
    assert finished.wait(LIMIT)
    wait_for(lambda: policy.metrics().abandoned_running == 0, "abandoned_running == 0")
    wait_for(lambda: policy.metrics().busy_workers == 0, "busy_workers == 0")
    assert policy.call(lambda: "reused") == "reused"
    assert policy.metrics().workers == 1


def test_sync_rejects_at_once_when_every_worker_is_held_by_abandoned_work() -> None:
    inner = Timeout(LONG, max_workers=1, name="inner")
    outer = Timeout(SHORT, name="outer")  # cuts inner's first call short
    release, finished = threading.Event(), threading.Event()
    called: list[int] = []

    @inner
    def hold() -> None:
        try:
            release.wait(LONG)
        finally:
            finished.set()

    try:
        with pytest.raises(TimeoutExceededError):
            outer.call(hold)
        wait_for(lambda: inner.metrics().abandoned_running == 1, "inner call abandoned")

        with capture_events() as events:
            start = time.monotonic()
            with pytest.raises(WorkersExhaustedError) as info:
                inner.call(called.append, 1)
            elapsed = time.monotonic() - start
        # Rejected at once: not after waiting for a worker, nor for inner's 10 s.
        assert elapsed < SHORT
        assert called == []
        assert info.value.policy == "inner"
        assert inner.metrics().rejected == 1
        assert events == [CallRejected("inner", "timeout", info.value)]
    finally:
        release.set()
    assert finished.wait(LIMIT)
    wait_for(lambda: inner.metrics().abandoned_running == 0, "abandoned work finished")
    wait_for(lambda: inner.metrics().busy_workers == 0, "worker free")
    inner.call(called.append, 2)
    assert called == [2]


def test_sync_workers_are_bounded_by_max_workers() -> None:
    policy = Timeout(LONG, max_workers=2)
    release = threading.Event()
    started = threading.Barrier(3, timeout=LIMIT)
    errors: list[BaseException] = []

    def hold() -> None:
        started.wait()
        release.wait(LONG)

    def caller() -> None:
        try:
            policy.call(hold)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    try:
        for thread in threads:
            thread.start()
        started.wait()  # both calls are running in their workers
        with pytest.raises(WorkersExhaustedError):
            policy.call(lambda: None)
        metrics = policy.metrics()
        assert (metrics.workers, metrics.busy_workers, metrics.rejected) == (2, 2, 1)
        assert metrics.abandoned_running == 0
    finally:
        release.set()
        for thread in threads:
            thread.join(LIMIT)
    assert errors == []
    wait_for(lambda: policy.metrics().busy_workers == 0, "workers free")


def test_sync_back_to_back_calls_on_one_worker_are_never_rejected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A call that has returned to its caller no longer holds its worker. The worker
    # thread may be descheduled right after handing the result over; widen that window.
    gate = threading.Event()
    finished = workers_module.WorkerPool.finished

    def late_finished(self: Any, worker: Any, abandoned: bool) -> None:
        gate.wait(0.5)  # bounded: should the accounting move before the hand-over
        finished(self, worker, abandoned)

    monkeypatch.setattr(workers_module.WorkerPool, "finished", late_finished)
    policy = Timeout(LONG, max_workers=1)
    try:
        assert policy.call(lambda: 1) == 1
        assert policy.call(lambda: 2) == 2
    finally:
        gate.set()


def test_sync_nested_inner_shorter_wins() -> None:
    outer, inner = Timeout(LONG, name="outer"), Timeout(SHORT, name="inner")
    release = threading.Event()

    @outer
    def outside() -> None:
        inner.call(release.wait, LONG)

    try:
        start = time.monotonic()
        with pytest.raises(TimeoutExceededError) as info:
            outside()
        assert time.monotonic() - start < LONG / 2
    finally:
        release.set()
    assert info.value.seconds == SHORT
    assert info.value.policy == "inner"
    assert (outer.metrics().timeouts, inner.metrics().timeouts) == (0, 1)


def test_sync_nested_outer_shorter_wins() -> None:
    outer, inner = Timeout(SHORT, name="outer"), Timeout(LONG, name="inner")
    release = threading.Event()
    seen: list[float | None] = []

    @inner
    def inside() -> None:
        seen.append(remaining())
        release.wait(LONG)

    try:
        start = time.monotonic()
        with pytest.raises(TimeoutExceededError) as info:
            outer.call(inside)
        assert time.monotonic() - start < LONG / 2
    finally:
        release.set()
    assert 0.0 < info.value.seconds <= SHORT
    assert seen[0] is not None
    assert 0.0 < seen[0] <= SHORT
    wait_for(
        lambda: outer.metrics().abandoned_running == inner.metrics().abandoned_running == 0,
        "abandoned calls finished",
    )


def test_sync_deadline_already_passed_raises_without_calling() -> None:
    clock = ManualClock()
    inner = Timeout(1.0, name="inner")
    called: list[int] = []

    @Timeout(10.0, clock=clock)
    def outside() -> None:
        clock.advance(10.5)
        inner.call(called.append, 1)

    with pytest.raises(TimeoutExceededError) as info:
        outside()
    assert called == []
    assert info.value.seconds == 0.0
    assert info.value.policy == "inner"
    assert inner.metrics().workers == 0  # not even a worker was started


def test_sync_timeout_outside_a_bulkhead_releases_the_slot_at_once() -> None:
    bulkhead = Bulkhead(1)
    release = threading.Event()
    guarded = compose(bulkhead, Timeout(SHORT)).call
    try:
        with pytest.raises(TimeoutExceededError):
            guarded(release.wait, LONG)
        assert bulkhead.metrics().in_flight == 0
    finally:
        release.set()
    assert guarded(lambda: "ok") == "ok"


@pytest.mark.parametrize("stacked", [False, True], ids=["compose", "stacked"])
def test_sync_timeout_around_a_bulkhead_frees_the_slot_when_the_work_ends(
    stacked: bool,
) -> None:
    # The bulkhead runs inside the worker: its slot is held as long as the abandoned
    # work really runs, and given back when it ends.
    bulkhead, timeout = Bulkhead(1), Timeout(SHORT)
    release = threading.Event()

    def work() -> str:
        release.wait(LONG)
        return "done"

    guarded = timeout(bulkhead(work)) if stacked else compose(timeout, bulkhead)(work)
    try:
        with pytest.raises(TimeoutExceededError):
            guarded()
        assert bulkhead.metrics().in_flight == 1
    finally:
        release.set()
    wait_for(lambda: bulkhead.metrics().in_flight == 0, "bulkhead slot released")
    wait_for(lambda: timeout.metrics().busy_workers == 0, "worker free")
    assert guarded() == "done"


def test_remaining_is_none_outside_any_deadline() -> None:
    assert remaining() is None
    assert resilient.remaining is remaining
    Timeout(1.0).call(lambda: None)
    assert remaining() is None


def test_listener_receives_timeout_events() -> None:
    policy = Timeout(SHORT, name="l")
    received: list[object] = []
    policy.add_listener(received.append)

    async def slow() -> None:
        await anyio.sleep(LONG)

    for backend in ("asyncio", "trio"):
        with pytest.raises(TimeoutExceededError):
            anyio.run(policy.call_async, slow, backend=backend)
    policy.remove_listener(received.append)
    with pytest.raises(TimeoutExceededError):
        anyio.run(policy.call_async, slow)
    assert received == [CallTimedOut("l", "timeout", SHORT, abandoned=False)] * 2
