"""Failures inside user hooks or the platform never change a call's outcome or leak.

Each test here guards a defect found in review: a raising predicate that replaced the
caller's result, an event-loop timer that stopped when its handle ran early, contexts
kept alive by finished timeout entries, reference cycles through tracebacks, a worker
pool that shrank when a thread failed to start, and waits too long for the OS.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
import weakref

import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CountWindow,
    Fallback,
    Retry,
    Timeout,
    TimeoutExceededError,
)
from resilient.testing import ManualClock


def boom(_: object) -> bool:
    raise KeyError("predicate bug")


def test_a_raising_on_result_never_replaces_a_retry_result(caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert Retry(3, wait=0, on_result=boom, clock=ManualClock()).call(lambda: 42) == 42
    assert "on_result" in caplog.text


def test_a_raising_on_predicate_lets_the_original_error_through(caplog) -> None:
    original = ValueError("the caller's error")

    def fails() -> None:
        raise original

    with caplog.at_level(logging.ERROR, logger="resilient"):
        with pytest.raises(ValueError) as retried:
            Retry(3, wait=0, on=boom, clock=ManualClock()).call(fails)
        with pytest.raises(ValueError) as fell_back:
            Fallback(lambda exc: "fallback", on=boom).call(fails)
    assert retried.value is original
    assert fell_back.value is original


def test_a_raising_on_result_never_replaces_a_fallback_result() -> None:
    assert Fallback(lambda value: "fallback", on_result=boom).call(lambda: 42) == 42


def test_the_loop_timer_survives_handles_run_early() -> None:
    # asyncio on Windows (and uvloop) runs timer handles up to the clock resolution
    # early; the timer must neither mistake its own handle for a superseded one nor
    # stop re-arming.
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop._clock_resolution = 0.0156  # type: ignore[attr-defined]
        policy = Timeout(0.05)
        outcomes = []
        for _ in range(4):
            try:
                await policy.call_async(asyncio.sleep, 0.5)
                outcomes.append("no timeout")
            except TimeoutExceededError:
                outcomes.append("timeout")
        return outcomes

    assert asyncio.run(main()) == ["timeout"] * 4


def test_finished_timeout_calls_do_not_keep_their_context_alive() -> None:
    request: contextvars.ContextVar[object] = contextvars.ContextVar("request")

    class Request:
        pass

    refs: list[weakref.ref[Request]] = []
    policy = Timeout(5)

    async def handle() -> None:
        item = Request()
        refs.append(weakref.ref(item))
        request.set(item)
        await asyncio.sleep(0)

    async def main() -> None:
        slow = asyncio.ensure_future(policy.call_async(asyncio.sleep, 0.2))
        await asyncio.sleep(0)  # the slow call's entry now sits first in its lane
        for _ in range(50):
            await asyncio.ensure_future(policy.call_async(handle))
        gc.collect()
        alive = sum(ref() is not None for ref in refs)
        await slow
        assert alive <= 1  # before the fix: all 50, held by the lane behind the slow call

    asyncio.run(main())


def test_a_retried_call_leaves_no_reference_cycle() -> None:
    class Arg:
        pass

    policy = Retry(2, wait=0, clock=ManualClock())

    def fails(arg: Arg) -> None:
        raise ValueError

    gc.collect()
    gc.disable()
    try:
        arg = Arg()
        ref = weakref.ref(arg)
        with pytest.raises(ValueError):
            policy.call(fails, arg)
        del arg
        assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_a_sync_timeout_error_leaves_no_reference_cycle() -> None:
    class Arg:
        pass

    def fails(arg: Arg) -> None:
        raise ValueError

    policy = Timeout(5)
    gc.collect()
    gc.disable()
    try:
        arg = Arg()
        ref = weakref.ref(arg)
        with pytest.raises(ValueError):
            policy.call(fails, arg)
        del arg
        assert ref() is None
    finally:
        gc.enable()


def test_a_rejection_leaves_no_reference_cycle() -> None:
    breaker = CircuitBreaker(window=CountWindow(1), minimum_calls=1, clock=ManualClock())
    with pytest.raises(ZeroDivisionError):
        breaker.call(lambda: 1 / 0)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(100):
            with pytest.raises(Exception):  # noqa: B017 -- CircuitOpenError
                breaker.call(lambda: None)
        assert len(gc.get_objects()) - before < 50  # not ~6 objects per rejection
    finally:
        gc.enable()


def test_a_worker_that_fails_to_start_is_not_counted(monkeypatch) -> None:
    policy = Timeout(5, max_workers=1)
    real_start = threading.Thread.start
    failures = iter([RuntimeError("can't start new thread")] * 2)

    def flaky_start(self: threading.Thread) -> None:
        error = next(failures, None)
        if error is not None:
            raise error
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", flaky_start)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="can't start"):
            policy.call(lambda: 1)
    assert policy.call(lambda: 7) == 7  # the pool still has its one worker to give


def test_very_long_waits_do_not_overflow() -> None:
    # The longest accepted (MAX_SECONDS) is beyond what time.sleep and lock waits take.
    bulkhead = Bulkhead(1, max_wait=1e9)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with bulkhead:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    results: list[object] = []

    def wait_for_slot() -> None:
        results.append(bulkhead.call(lambda: "admitted"))

    waiter = threading.Thread(target=wait_for_slot)
    waiter.start()
    for _ in range(10_000):
        if bulkhead.metrics().waiting:
            break
        threading.Event().wait(0.001)
    release.set()
    holder.join(10)
    waiter.join(10)
    assert results == ["admitted"]
    assert Timeout(1e9).call(lambda: "done") == "done"


def test_rejections_are_logged_once_per_stay_also_after_half_open(caplog) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "b",
        window=CountWindow(1),
        minimum_calls=1,
        open_duration=10,
        half_open_calls=1,
        half_open_max_duration=5,
        clock=clock,
    )
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017
                breaker.call(lambda: None)
        clock.advance(10)
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)  # the trial fails: OPEN again
        for _ in range(3):
            with pytest.raises(Exception):  # noqa: B017
                breaker.call(lambda: None)
    rejecting = [r for r in caplog.records if "is rejecting calls" in r.getMessage()]
    assert len(rejecting) == 2
