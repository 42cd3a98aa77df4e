"""What a core knows of time: the ``Clock`` protocol, and a reading of the system's.

A core reads the time and never waits for it: it holds the clock its adapter hands
it and calls ``monotonic()``. The real clock, which also sleeps, is
``resilient._waiting._clock.MonotonicClock``; tests pass
``resilient.testing.ManualClock`` so that time moves only when the test says so.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_TIME", "Clock", "SystemTime", "TimeSource"]


@runtime_checkable
class Clock(Protocol):
    """A source of monotonic time in seconds, and a way to wait for it to pass."""

    def monotonic(self) -> float:
        """Return the current time in seconds; only differences are meaningful."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        ...

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds``."""
        ...


class TimeSource(Protocol):
    """The part of a ``Clock`` that a core uses: reading it."""

    def monotonic(self) -> float:
        """Return the current time in seconds; only differences are meaningful."""
        ...


class SystemTime:
    """``time.monotonic()``, never the wall clock (which jumps)."""

    __slots__ = ()

    # Bound at class level so `clock.monotonic()` is one C call, not a Python frame.
    monotonic = staticmethod(time.monotonic)


SYSTEM_TIME: TimeSource = SystemTime()
"""What a window or a budget built without a clock reads."""
