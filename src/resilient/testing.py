"""Tools for testing code that uses ``resilient``, and for testing ``resilient`` itself.

* :class:`ManualClock`: time that moves only when the test says so; pass it as any
  policy's ``clock=``. Its sleeps advance it at once, so backoffs take no real time.
* :func:`capture_events`: collect every event record emitted inside a ``with`` block.
* :func:`instant_retries`: make every ``Retry`` wait 0 s (and optionally cap attempts)
  inside a ``with`` block, so tests of code that retries run fast and deterministically.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import anyio.lowlevel

from resilient._core._events import Event, add_global_listener, remove_global_listener
from resilient._core._fork import new_lock
from resilient._core._validate import check_duration
from resilient._policies._retry import instant_retries

__all__ = ["ManualClock", "VirtualTimeLoop", "capture_events", "instant_retries"]

# Far beyond any real monotonic reading; up to here a float still steps by < 1 s.
_MAX_START = 1e15


class ManualClock:
    """A clock for tests: starts at ``start`` (default 0.0) and moves only when told.

    ``sleep()`` and ``asleep()`` advance the clock by the requested time and return at
    once (``asleep`` still yields to the event loop once, as a real sleep would).
    Safe to share between threads.
    """

    __slots__ = ("__weakref__", "_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        # Any finite reading is a valid start; large ones test precision (see RateLimiter).
        now = check_duration("start", start, minimum=-_MAX_START, maximum=_MAX_START)
        self._now = now
        self._lock = new_lock(self)

    def monotonic(self) -> float:
        """The current manual time in seconds."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (>= 0; a ``timedelta`` is accepted too)."""
        step = check_duration("seconds", seconds, maximum=None)
        with self._lock:
            self._now += step

    def sleep(self, seconds: float) -> None:
        """Advance by ``seconds`` instead of blocking."""
        self.advance(max(seconds, 0.0))

    async def asleep(self, seconds: float) -> None:
        """Advance by ``seconds``, then yield to the event loop once."""
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"


@contextlib.contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Yield a list that fills with every event record emitted while the block runs.

    Events from every policy and every thread are captured, in the order emitted::

        with capture_events() as events:
            breaker.call(fn)
        assert events[0].kind == "circuit_breaker"
    """
    events: list[Event] = []
    add_global_listener(events.append)
    try:
        yield events
    finally:
        remove_global_listener(events.append)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop in virtual time: when nothing is ready, time jumps ahead.

    What trio's ``MockClock(autojump_threshold=0)`` does for trio: the loop's ``time()``
    starts at 0 and, whenever no callback is ready, moves straight to the earliest
    timer, so ``asyncio.sleep``, timeouts, hedging delays and deadlines take no real
    time and happen in a reproducible order. Run a test in it with
    ``anyio.run(main, backend_options={"loop_factory": VirtualTimeLoop})`` (or
    ``asyncio.Runner(loop_factory=VirtualTimeLoop)`` on Python 3.11+).

    Pair it with a clock that reads the loop's time, not a `ManualClock`, when a policy
    measures durations. It relies on the selector loop's scheduling internals,
    and is tested on every Python version the package supports.
    """

    def __init__(self) -> None:
        super().__init__()
        self._virtual = 0.0

    def time(self) -> float:
        """The virtual time, in seconds since the loop was made."""
        return self._virtual

    def _run_once(self) -> None:
        ready: Any = self._ready  # type: ignore[attr-defined]
        scheduled: Any = self._scheduled  # type: ignore[attr-defined]
        if not ready and scheduled:
            self._virtual = max(self._virtual, scheduled[0]._when)
        super()._run_once()  # type: ignore[misc]
