"""Where every policy gets its time from.

Policies never call :mod:`time` directly: they ask a :class:`Clock`. The default
:data:`MONOTONIC` reads :func:`time.monotonic` (never the wall clock, which jumps) and
sleeps for real; tests pass ``resilient.testing.ManualClock`` instead so that time only
moves when the test says so.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["MONOTONIC", "Clock", "MonotonicClock"]


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


class MonotonicClock:
    """The real clock: ``time.monotonic()``, ``time.sleep()`` and ``anyio.sleep()``."""

    __slots__ = ()

    # Bound at class level so `clock.monotonic()` is one C call, not a Python frame.
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task for ``seconds`` (asyncio or trio, through anyio)."""
        # Imported here, not at the top: `import resilient` must not load anyio (and
        # asyncio) for programs that never await; after the first sleep it is a dict hit.
        import anyio  # noqa: PLC0415

        await anyio.sleep(seconds)

    def __repr__(self) -> str:
        return "MonotonicClock()"


MONOTONIC: Clock = MonotonicClock()
"""The default clock of every policy."""
