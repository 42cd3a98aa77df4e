"""The asyncio loop timer and the async timeout's exits: nothing left behind.

Two defects found in review are guarded here: every asyncio call that timed out left a
reference cycle for the collector (the replaced exception kept in a frame its own
traceback points at), and finished calls stayed queued in the timer's lane behind one
pending call of the same timeout length, so memory grew with timeout x call rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from resilient import Bulkhead, CircuitBreaker, Timeout, TimeoutExceededError, compose, remaining
from resilient._policies._policy import Policy
from resilient._policies._timeout import Armed, LoopDeadline, ScopeDeadline
from resilient._waiting._timer import DONE, SWEEP_MIN, LoopTimer, loop_timer

ROUNDS = 50  # timeouts per measurement

# asyncio's timeouts go through the loop timer from Python 3.11 (it needs
# Task.uncancel()); before, through anyio's cancel scope, which these tests do not cover.
needs_loop_timer = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="the asyncio loop timer needs Python 3.11+"
)


def _left_for_the_collector(make_call: Callable[[], Callable[[], Awaitable[None]]]) -> int:
    """Objects the cyclic collector finds after ``ROUNDS`` calls of ``make_call()()``."""

    async def main() -> int:
        call = make_call()
        for _ in range(3):  # warm caches (generated runners, the loop's timer) first
            await call()
        gc.collect()
        gc.disable()
        try:
            for _ in range(ROUNDS):
                await call()
            return gc.collect()
        finally:
            gc.enable()

    return asyncio.run(main())


def _expecting(
    exc_type: type[BaseException], fn: Callable[[], Awaitable[None]]
) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        try:
            await fn()
        except exc_type:
            pass
        else:  # pragma: no cover - the guarded call always fails here
            pytest.fail(f"expected {exc_type.__name__}")

    return call


async def _hang() -> None:
    await asyncio.sleep(10)


def _asyncio_timeout() -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        async with asyncio.timeout(0.001):
            await _hang()

    return _expecting(TimeoutError, call)


def _decorated() -> Callable[[], Awaitable[None]]:
    return _expecting(TimeoutExceededError, Timeout(0.001)(_hang))


def _call_async() -> Callable[[], Awaitable[None]]:
    policy = Timeout(0.001)
    return _expecting(TimeoutExceededError, lambda: policy.call_async(_hang))


def _async_with() -> Callable[[], Awaitable[None]]:
    policy = Timeout(0.001)

    async def call() -> None:
        async with policy:
            await _hang()

    return _expecting(TimeoutExceededError, call)


def _composed() -> Callable[[], Awaitable[None]]:
    guarded = compose(CircuitBreaker(), Timeout(0.001), Bulkhead(5))(_hang)
    return _expecting(TimeoutExceededError, guarded)


def _cancelled_from_outside() -> Callable[[], Awaitable[None]]:
    # Not our deadline: the cancellation passes through the runner unchanged.
    guarded = Timeout(10)(_hang)

    async def call() -> None:
        task = asyncio.ensure_future(guarded())
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return call


@needs_loop_timer
def test_asyncio_timeout_baseline_leaves_nothing_for_the_collector() -> None:
    # The yardstick: if this fails, the interpreter itself leaves cycles and the other
    # measurements here mean nothing.
    assert _left_for_the_collector(_asyncio_timeout) == 0


@needs_loop_timer
@pytest.mark.parametrize(
    "make_call",
    [_decorated, _call_async, _async_with, _composed, _cancelled_from_outside],
    ids=["decorator", "call_async", "async_with", "compose", "outside_cancel"],
)
def test_an_async_timeout_leaves_no_reference_cycle(
    make_call: Callable[[], Callable[[], Awaitable[None]]],
) -> None:
    # Before the fix: 18-21 objects per timeout (19 per decorated call, 21 per block).
    assert _left_for_the_collector(make_call) == 0


def test_a_trio_timeout_leaves_no_reference_cycle() -> None:
    import trio  # noqa: PLC0415 -- only this test needs it

    guarded = Timeout(0.001)(trio.sleep)

    async def main() -> int:
        for _ in range(3):
            with pytest.raises(TimeoutExceededError):
                await guarded(10)
        gc.collect()
        gc.disable()
        try:
            for _ in range(ROUNDS):
                with contextlib.suppress(TimeoutExceededError):
                    await guarded(10)
            return gc.collect()
        finally:
            gc.enable()

    assert trio.run(main) == 0


# -- finished calls do not pile up in the timer ----------------------------------------


async def _noop() -> None:
    pass


def _queued(timer: LoopTimer) -> int:
    """Entries the timer holds, finished or not."""
    return sum(len(lane) for lane in timer._lanes.values()) + len(timer._heap)


@needs_loop_timer
def test_finished_calls_do_not_pile_up_behind_one_pending_call() -> None:
    policy = Timeout(30)

    async def main() -> int:
        slow = asyncio.ensure_future(policy.call_async(asyncio.sleep, 30))
        await asyncio.sleep(0)  # the slow call's entry now sits first in its lane
        timer = loop_timer(asyncio.get_running_loop())
        most = 0
        for _ in range(5_000):
            await policy.call_async(_noop)
            most = max(most, _queued(timer))
        slow.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await slow
        return most

    # Before the fix: 5,001 entries, one per finished call (136 B each).
    assert asyncio.run(main()) <= SWEEP_MIN + 1


@needs_loop_timer
def test_finished_calls_cut_short_by_an_outer_deadline_do_not_pile_up() -> None:
    # An inner timeout cut short by an outer deadline goes to the heap, where a finished
    # entry used to stay until its deadline had passed.
    outer, inner = Timeout(30), Timeout(60)

    async def main() -> int:
        timer = loop_timer(asyncio.get_running_loop())
        most = 0
        async with outer:
            for _ in range(5_000):
                await inner.call_async(_noop)
                most = max(most, _queued(timer))
        return most

    assert asyncio.run(main()) <= SWEEP_MIN + 2  # before the fix: 5,000


@needs_loop_timer
@pytest.mark.parametrize("where", ["lane", "heap"])
def test_pending_calls_survive_the_sweeps_and_still_time_out(where: str) -> None:
    # 100 calls left pending among 500 finished ones: the sweeps that drop the finished
    # entries must keep every pending one, in order, so each still times out.
    policy = Timeout(0.2 if where == "lane" else 10)

    async def start_all() -> tuple[list[asyncio.Future[None]], int]:
        timer = loop_timer(asyncio.get_running_loop())
        slow: list[asyncio.Future[None]] = []
        most = 0
        for _ in range(100):
            slow.append(asyncio.ensure_future(policy.call_async(asyncio.sleep, 10)))
            await asyncio.sleep(0)  # let it arm its deadline
            for _ in range(5):
                await policy.call_async(_noop)
            most = max(most, _queued(timer))
        return slow, most

    async def main() -> tuple[list[object], int]:
        if where == "lane":
            slow, most = await start_all()
        else:
            async with Timeout(0.2):  # cuts every call (and task) started inside short
                slow, most = await start_all()
        outcomes = await asyncio.gather(*slow, return_exceptions=True)
        return [type(outcome) for outcome in outcomes], most

    outcomes, most = asyncio.run(main())
    assert outcomes == [TimeoutExceededError] * 100
    assert most <= 2 * 100 + 1  # swept: 600 entries went in


# -- the armed deadline: named fields, and a stop() owned by the timeout -----------------


class _Reporting(Policy):
    """A policy over a timeout's reporting step, as the ASGI middleware builds one."""

    kind = "timeout"

    def __init__(self, step: Any) -> None:
        self._step = step

    def _async_step(self) -> Any:
        return self._step


@pytest.mark.anyio
async def test_a_stopped_deadline_never_fires_and_its_exit_still_closes_it() -> None:
    policy = Timeout(0.02)
    armed: list[Armed] = []
    seen: list[float | None] = []

    async def overruns() -> str:
        seen.append(remaining())
        armed[0].stop()
        await anyio.sleep(0.1)  # five times the timeout: it would have fired
        return "done"

    guarded = _Reporting(policy._reporting_step(armed.append))(overruns)
    assert await guarded() == "done"
    assert policy.metrics().timeouts == 0
    (deadline,) = armed
    assert deadline.seconds == 0.02
    assert seen[0] is not None
    assert 0.0 < seen[0] <= 0.02
    assert remaining() is None  # closed: the deadline's context was reset
    if isinstance(deadline, LoopDeadline):
        # Closed on exit: marked done, and holding neither the task nor the context.
        assert (deadline.state, deadline.task, deadline.context) == (DONE, None, None)
    else:
        assert isinstance(deadline, ScopeDeadline)
        assert deadline.scope.deadline == math.inf


@pytest.mark.anyio
async def test_an_unstopped_reporting_deadline_still_times_out() -> None:
    policy = Timeout(0.02)
    armed: list[Armed] = []
    guarded = _Reporting(policy._reporting_step(armed.append))(anyio.sleep)
    with pytest.raises(TimeoutExceededError):
        await guarded(10)
    assert policy.metrics().timeouts == 1
    assert len(armed) == 1
    armed[0].stop()  # after it fired: nothing to undo, nothing raised


@needs_loop_timer
def test_the_loop_deadline_is_a_slotted_record() -> None:
    # One record per guarded call: no __dict__, every field named.
    assert not hasattr(LoopDeadline(), "__dict__")
    assert set(LoopDeadline.__slots__) == {
        "cancelling",
        "context",
        "seconds",
        "state",
        "task",
        "when",
    }
    assert not hasattr(ScopeDeadline(), "__dict__")
