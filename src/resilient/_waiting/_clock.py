"""Where every policy gets its time from, and how it waits for it.

Policies never call :mod:`time` directly: they ask a :class:`Clock`. The default
:data:`MONOTONIC` reads :func:`time.monotonic` (never the wall clock, which jumps) and
sleeps for real; tests pass ``resilient.testing.ManualClock`` instead so that time only
moves when the test says so. The protocol lives with the cores, which only read it.
"""

from __future__ import annotations

import time

from resilient._core._clock import Clock, SystemTime
from resilient._core._validate import check_clock

__all__ = ["MONOTONIC", "Clock", "MonotonicClock", "resolve_clock"]


class MonotonicClock(SystemTime):
    """The real clock: ``time.monotonic()``, ``time.sleep()`` and ``anyio.sleep()``."""

    __slots__ = ()

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


def resolve_clock(value: object, option: str = "clock") -> Clock:
    """The clock an adapter uses: ``None`` gives :data:`MONOTONIC`; else a checked ``Clock``."""
    return check_clock(value, option) or MONOTONIC
