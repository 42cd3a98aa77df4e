"""The clock protocol, the default clock and the manual clock."""

from __future__ import annotations

import asyncio
import datetime
import time

import anyio
import pytest

from resilient import Clock, MonotonicClock
from resilient._waiting._clock import MONOTONIC
from resilient.testing import ManualClock, VirtualTimeLoop


def test_default_clock_is_monotonic() -> None:
    assert isinstance(MONOTONIC, Clock)
    assert MONOTONIC.monotonic is time.monotonic
    a = MONOTONIC.monotonic()
    assert MONOTONIC.monotonic() >= a
    assert repr(MonotonicClock()) == "MonotonicClock()"


async def test_default_clock_async_sleep_zero() -> None:
    await MonotonicClock().asleep(0)


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock()
    assert isinstance(clock, Clock)
    assert clock.monotonic() == 0.0
    clock.advance(1.5)
    clock.advance(datetime.timedelta(seconds=1))
    assert clock.monotonic() == 2.5
    clock.sleep(10)
    assert clock.monotonic() == 12.5
    assert repr(clock) == "ManualClock(12.5)"
    assert ManualClock(start=100).monotonic() == 100.0


def test_manual_clock_refuses_to_go_back() -> None:
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        ManualClock().advance(-1)


async def test_manual_clock_async_sleep_advances_at_once() -> None:
    clock = ManualClock()
    started = time.monotonic()
    await clock.asleep(3600)
    assert clock.monotonic() == 3600
    assert time.monotonic() - started < 60  # an hour of manual time took no real hour


def test_virtual_time_loop_jumps_to_each_timer_and_keeps_their_order() -> None:
    seen: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(seconds)
        seen.append((name, loop.time()))

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "hour", 3600.0)
            tg.start_soon(sleeper, "minute", 60.0)
            tg.start_soon(sleeper, "second", 1.0)

    anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop})
    assert seen == [("second", 1.0), ("minute", 60.0), ("hour", 3600.0)]


def test_virtual_time_loop_times_out_in_virtual_time() -> None:
    async def main() -> tuple[bool, float]:
        loop = asyncio.get_running_loop()
        with anyio.move_on_after(30.0) as scope:
            await asyncio.Event().wait()
        return scope.cancelled_caught, loop.time()

    caught, at = anyio.run(
        main, backend="asyncio", backend_options={"loop_factory": VirtualTimeLoop}
    )
    assert caught
    assert at == 30.0
