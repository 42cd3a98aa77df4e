"""The clock protocol, the default clock and the manual clock."""

from __future__ import annotations

import datetime
import time

import pytest

from resilient import Clock, MonotonicClock
from resilient._waiting._clock import MONOTONIC
from resilient.testing import ManualClock


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
