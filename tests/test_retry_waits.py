"""Retry: the longest wait, and a wait that fails (issue 12, item 6).

``time.sleep`` overflows near 9.2e9 s and an async sleep that long never ends, so no
wait may exceed ``Retry.MAX_WAIT``: a constant above it is refused at construction, a
computed one is clamped. Whatever the wait does, the caller gets the call's own outcome.
"""

from __future__ import annotations

import datetime
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import tenacity

from resilient import RetriesExhausted, Retry, RetryMetrics, Timeout, compose
from resilient.testing import ManualClock, capture_events


class Boom(Exception):
    pass


class WaitBroke(Exception):
    pass


class RecordingClock(ManualClock):
    """A ManualClock that records every sleep asked of it (sync and async)."""

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


class BrokenClock(ManualClock):
    """A clock whose waits fail, as ``time.sleep(1e10)`` does with OverflowError."""

    __slots__ = ()

    def sleep(self, seconds: float) -> None:
        raise WaitBroke(seconds)

    async def asleep(self, seconds: float) -> None:
        await anyio.lowlevel.checkpoint()
        raise WaitBroke(seconds)


def failing(counter: list[int]) -> Any:
    def fn() -> Any:
        counter.append(1)
        raise Boom(len(counter))

    return fn


def run(retry: Retry, fn: Any, how: str) -> Any:
    """Run ``fn`` through ``retry``: decorator or block, sync or async (asyncio, trio)."""
    if how == "call":
        return retry.call(fn)
    if how == "block":
        for attempt in retry:
            with attempt:
                result = fn()
        return result

    async def target() -> Any:
        await anyio.lowlevel.checkpoint()
        return fn()

    async def main() -> Any:
        if how.startswith("call_async"):
            return await retry.call_async(target)
        async for attempt in retry:
            async with attempt:
                result = await target()
        return result

    return anyio.run(main, backend=how.rsplit("-", 1)[1])


HOW = ["call", "block", "call_async-asyncio", "call_async-trio", "ablock-asyncio", "ablock-trio"]


def test_max_wait_is_one_day_and_documented() -> None:
    assert Retry.MAX_WAIT == 86_400.0
    assert "MAX_WAIT" in (Retry.__doc__ or "")


@pytest.mark.parametrize(
    "wait", [1e300, 86_400.5, 10**30, datetime.timedelta(days=2), 9.3e9], ids=repr
)
def test_a_constant_wait_above_max_wait_is_refused_at_construction(wait: object) -> None:
    with pytest.raises(ValueError, match=r"wait must be between 0 and 86400 seconds"):
        Retry(wait=wait)


def test_a_constant_wait_of_exactly_max_wait_is_accepted() -> None:
    clock = RecordingClock()
    calls: list[int] = []
    with pytest.raises(Boom):
        Retry(2, wait=Retry.MAX_WAIT, clock=clock).call(failing(calls))
    assert clock.sleeps == [86_400.0]


def test_a_subclass_may_choose_its_own_max_wait() -> None:
    class Patient(Retry):
        MAX_WAIT = 7 * 86_400.0

    Patient(wait=3 * 86_400)
    with pytest.raises(ValueError, match="604800"):
        Patient(wait=8 * 86_400)


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize(
    "wait",
    [
        pytest.param(lambda attempt: 10.0 ** (attempt * 5), id="callable-1e10"),
        pytest.param(lambda attempt: 10**400 if attempt > 1 else 1, id="callable-10**400"),
        pytest.param(lambda attempt: float("inf") if attempt > 1 else 1.0, id="callable-inf"),
        pytest.param(tenacity.wait_exponential(), id="tenacity-no-max"),
    ],
)
def test_computed_waits_are_clamped_to_max_wait(how: str, wait: Any) -> None:
    # tenacity.wait_exponential() with no max reaches time.sleep's limit at attempt 35:
    # before the fix the caller got OverflowError instead of its own exception.
    clock = RecordingClock()
    calls: list[int] = []
    retry = Retry(40, wait=wait, clock=clock)
    with pytest.raises(Boom) as info:
        run(retry, failing(calls), how)
    assert str(info.value) == "40"  # the last attempt's own exception
    assert len(clock.sleeps) == 39
    assert max(clock.sleeps) == Retry.MAX_WAIT
    assert all(0 <= s <= Retry.MAX_WAIT for s in clock.sleeps)


@pytest.mark.parametrize("how", ["call", "block"])
def test_a_long_wait_that_would_pass_the_deadline_gives_up_at_once(how: str) -> None:
    clock = RecordingClock()
    calls: list[int] = []
    retry = Retry(5, wait=lambda attempt: 1e12, clock=clock)
    # The deadline belongs to an enclosing Timeout: the clamped wait (one day) would
    # still end after it, so the retry gives up instead of sleeping.
    guarded = compose(Timeout(30, clock=clock))
    with pytest.raises(Boom):
        guarded.call(lambda: run(retry, failing(calls), how))
    assert clock.sleeps == []
    assert retry.metrics() == RetryMetrics(0, 0, 0, 1, 0)


@pytest.mark.parametrize("how", HOW)
def test_a_wait_that_fails_leaves_the_callers_exception_chained(how: str) -> None:
    calls: list[int] = []
    retry = Retry(3, wait=5, clock=BrokenClock())
    with capture_events() as events, pytest.raises(Boom) as info:
        run(retry, failing(calls), how)
    assert len(calls) == 1
    assert str(info.value) == "1"  # the call's own error, not the wait's
    assert isinstance(info.value.__context__, WaitBroke)
    assert [(e.attempts, e.reason) for e in events if isinstance(e, RetriesExhausted)] == [
        (1, "wait_failed")
    ]
    assert retry.metrics() == RetryMetrics(1, 0, 0, 0, 0, stopped=1)
    assert retry.metrics().calls == 1


def test_a_wait_that_fails_while_retrying_a_result_returns_that_result() -> None:
    retry = Retry(3, wait=5, on_result=lambda r: r == "pending", clock=BrokenClock())
    assert retry.call(lambda: "pending") == "pending"
    assert retry.metrics().stopped == 1


def test_the_real_clock_never_overflows(monkeypatch: pytest.MonkeyPatch) -> None:
    # The default clock's time.sleep raises OverflowError above ~9.2e9 s: the flow
    # never asks for that much. Record what it is asked instead of sleeping.
    import time  # noqa: PLC0415

    asked: list[float] = []

    def fake_sleep(seconds: float) -> None:
        if seconds > 9.2e9:
            raise OverflowError("sleep length is too large")
        asked.append(seconds)

    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.setattr("resilient._waiting._clock.MonotonicClock.sleep", staticmethod(fake_sleep))
    calls: list[int] = []
    with pytest.raises(Boom):
        Retry(3, wait=lambda attempt: 1e300).call(failing(calls))
    assert asked == [Retry.MAX_WAIT, Retry.MAX_WAIT]
