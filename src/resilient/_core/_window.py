"""The metrics core: sliding windows of call outcomes.

A window aggregates outcomes (success or failure, each fast or slow, with its duration)
in O(1) per call and answers a snapshot in O(1), as Resilience4j's sliding windows do:
a ring of partial aggregates plus running totals, so a snapshot never walks the ring.

:class:`CountWindow` keeps the last *size* calls; :class:`TimeWindow` keeps the calls of
the last *seconds*, in buckets evicted by the clock (also after a long idle period, when
the whole ring is cleared at once).

A window object is also a template: a policy never records into the window a user passed
in, it asks it for :meth:`~CountWindow.fresh` copies, so one ``CountWindow(50)`` may
configure many breakers (and be the default argument of all of them).
"""

from __future__ import annotations

import itertools
import math
from array import array
from math import isnan
from typing import TYPE_CHECKING, Final

from resilient._core._clock import SYSTEM_TIME, TimeSource
from resilient._core._validate import MAX_COUNT, MIN_BUCKET_SECONDS, check_duration, check_int

if TYPE_CHECKING:
    from typing_extensions import Self

    from resilient._core._snapshots import WindowSnapshot

__all__ = [
    "EMPTY",
    "FAILURE",
    "SLOW",
    "SLOW_FAILURE",
    "SLOW_SUCCESS",
    "SUCCESS",
    "CountWindow",
    "TimeWindow",
    "Window",
]

# An outcome is two bits: bit 0 "failed", bit 1 "slow". Small ints keep the count ring a
# bytearray (one byte a call), which is what keeps a breaker under 2 KiB.
SUCCESS: Final = 0
FAILURE: Final = 1
SLOW: Final = 2
SLOW_SUCCESS: Final = 2
SLOW_FAILURE: Final = 3
EMPTY: Final = 4  # a count-window slot not yet written

# The shared rings of uniform windows, by (code, size): a handful of sizes in a process.
_RINGS: dict[tuple[int, int], bytes] = {}


def _uniform_ring(code: int, size: int) -> bytes:
    """``size`` slots all holding ``code``, one immutable object shared by every window."""
    ring = _RINGS.get((code, size))
    if ring is None:
        ring = _RINGS.setdefault((code, size), bytes([code]) * size)
    return ring


class Window:
    """Base class of the sliding windows; the running totals are public for the cores.

    Attributes:
        calls: Outcomes in the window.
        failures: Failures in the window.
        slow: Slow calls in the window.
        slow_failures: Calls both slow and failed.
        total_duration: Sum of recorded durations.
    """

    __slots__ = ("calls", "failures", "slow", "slow_failures", "total_duration")

    #: Whether the window forgets outcomes as time passes (so a success can raise the
    #: failure rate by evicting old successes, and thresholds must be checked on each call).
    evicts_by_time: bool = False

    def __init__(self) -> None:
        self.calls = 0
        self.failures = 0
        self.slow = 0
        self.slow_failures = 0
        self.total_duration = 0.0

    @property
    def capacity(self) -> int | None:
        """The most outcomes the window can hold, or ``None`` if unbounded."""
        return None

    @property
    def settled(self) -> bool:
        """Whether a success is sure to change nothing here (a full count window of them)."""
        return False

    def fresh(self, clock: TimeSource = SYSTEM_TIME, *, durations: bool = True) -> Self:
        """Return a new, empty window with the same configuration."""
        raise NotImplementedError

    def record(self, outcome: int, duration: float = 0.0) -> None:
        """Add one outcome (``SUCCESS``, ``FAILURE``, ``SLOW_SUCCESS``, ``SLOW_FAILURE``)."""
        raise NotImplementedError

    def snapshot(self) -> WindowSnapshot:
        """Return the totals as a frozen :class:`WindowSnapshot`."""
        from resilient._core._snapshots import WindowSnapshot  # noqa: PLC0415 -- see there

        return WindowSnapshot(
            self.calls, self.failures, self.slow, self.slow_failures, max(self.total_duration, 0.0)
        )


class CountWindow(Window):
    """The outcomes of the last ``size`` calls.

    Args:
        size: How many of the most recent calls to keep (>= 1).
    """

    __slots__ = ("_durations", "_next", "_outcomes", "size")

    def __init__(self, size: int, *, _durations: bool = True) -> None:
        super().__init__()
        self.size = check_int("size", size)
        # One byte a slot; EMPTY marks a slot never written. A ring whose slots are all
        # EMPTY (a fresh window) or all SUCCESS (a window full of successes, the steady
        # state of a healthy dependency) is a bytes object shared by every window of
        # that size, copied on its first write: thousands of breakers then keep no ring
        # of their own, and their lock-free successes read a ring that stays cached.
        self._outcomes: bytes | bytearray = _uniform_ring(EMPTY, self.size)
        # Durations cost 8 bytes a slot; a breaker that measures none keeps none.
        self._durations: array[float] | None = (
            array("d", bytes(8 * self.size)) if _durations else None
        )
        # next() on itertools.count is one C call, atomic under the GIL: a caller can
        # claim its slot without the lock (see BreakerCore.on_success).
        self._next = itertools.count()

    @property
    def capacity(self) -> int:
        """The window's ``size``."""
        return self.size

    def fresh(self, clock: TimeSource = SYSTEM_TIME, *, durations: bool = True) -> Self:
        """Return a new, empty ``CountWindow`` of the same size (a count needs no clock)."""
        return type(self)(self.size, _durations=durations)

    def record(self, outcome: int, duration: float = 0.0) -> None:
        """Add one outcome, evicting the oldest once the window is full."""
        self.record_at(next(self._next) % self.size, outcome, duration)

    def record_at(self, slot: int, outcome: int, duration: float = 0.0) -> None:
        """Write ``outcome`` into ``slot``, one the caller claimed as ``next(_next) % size``."""
        outcomes = self._outcomes
        if type(outcomes) is not bytearray:  # a shared ring: this window's own copy
            outcomes = bytearray(outcomes)
            self._outcomes = outcomes
        old = outcomes[slot]
        outcomes[slot] = outcome
        # The totals are the counts of the codes in the ring, kept without a table of
        # counts: the old code's bits come off, the new one's go on.
        if old == EMPTY:
            self.calls += 1
        else:
            self.failures -= old & FAILURE
            self.slow -= (old & SLOW) >> 1
            self.slow_failures -= old == SLOW_FAILURE
        self.failures += outcome & FAILURE
        self.slow += (outcome & SLOW) >> 1
        self.slow_failures += outcome == SLOW_FAILURE
        if self.settled:
            self._outcomes = _uniform_ring(SUCCESS, self.size)
        durations = self._durations
        if durations is not None:
            previous = durations[slot]
            # NaN marks a slot recorded before durations were measured (see
            # BreakerCore.measure_durations): it added nothing to the total.
            self.total_duration += duration if isnan(previous) else duration - previous
            durations[slot] = duration

    @property
    def settled(self) -> bool:
        """Whether every slot holds a success: a success then changes nothing here."""
        return self.calls == self.size and not self.failures and not self.slow

    def __repr__(self) -> str:
        return f"CountWindow({self.size})"


class TimeWindow(Window):
    """The outcomes of the calls that ended in the last ``seconds``.

    The window is a ring of ``buckets`` partial aggregates, each ``seconds / buckets``
    wide; a bucket is evicted whole when it falls out of the window, so the window spans
    between ``seconds - seconds / buckets`` and ``seconds`` of history.

    Args:
        seconds: The length of the window (> 0), as seconds or a ``timedelta``.
        buckets: How many partial aggregates to keep (>= 1). The default gives one-second
            buckets, as Resilience4j does, but at least 10 and at most 100 buckets.
    """

    __slots__ = (
        "_b_calls",
        "_b_duration",
        "_b_failures",
        "_b_slow",
        "_b_slow_failures",
        "_clock",
        "_head",
        "_width",
        "buckets",
        "seconds",
    )

    evicts_by_time = True

    def __init__(
        self,
        seconds: float,
        *,
        buckets: int | None = None,
        _clock: TimeSource = SYSTEM_TIME,
    ) -> None:
        super().__init__()
        length = check_duration("seconds", seconds, minimum=MIN_BUCKET_SECONDS)
        self.seconds = length
        # A bucket narrower than MIN_BUCKET_SECONDS would make the bucket number of a
        # clock reading overflow (or divide by zero): the widest count that fits.
        most = min(math.floor(length / MIN_BUCKET_SECONDS + 1e-9), MAX_COUNT)
        if buckets is None:
            buckets = min(max(math.ceil(length), 10), 100, most)
        self.buckets = check_int("buckets", buckets)
        if self.buckets > most:
            raise ValueError(
                f"buckets must be an int >= 1 and <= seconds / {MIN_BUCKET_SECONDS:g} "
                f"(buckets at least {MIN_BUCKET_SECONDS:g}s wide): at most {most} for "
                f"{length:g}s, got {self.buckets}"
            )
        self._width = length / self.buckets
        self._clock = _clock
        n = self.buckets
        self._b_calls = [0] * n
        self._b_failures = [0] * n
        self._b_slow = [0] * n
        self._b_slow_failures = [0] * n
        self._b_duration = [0.0] * n
        self._head: int | None = None  # the absolute number of the newest bucket

    def fresh(self, clock: TimeSource = SYSTEM_TIME, *, durations: bool = True) -> Self:
        """Return a new, empty ``TimeWindow`` of the same span, evicting by ``clock``."""
        return type(self)(self.seconds, buckets=self.buckets, _clock=clock)

    def _advance(self) -> int:
        """Evict the buckets that fell out of the window; return the current slot."""
        number = math.floor(self._clock.monotonic() / self._width)
        head = self._head
        n = self.buckets
        if head is not None and number < head:
            number = head  # a clock that stepped back: keep filling the newest bucket
        if head is None or number - head >= n:
            # First call, or idle for a whole window: everything goes at once.
            if self.calls or head is None:
                for i in range(n):
                    self._clear(i)
                self.calls = self.failures = self.slow = self.slow_failures = 0
                self.total_duration = 0.0
            self._head = number
        elif number > head:
            for absolute in range(head + 1, number + 1):
                slot = absolute % n
                self.calls -= self._b_calls[slot]
                self.failures -= self._b_failures[slot]
                self.slow -= self._b_slow[slot]
                self.slow_failures -= self._b_slow_failures[slot]
                self.total_duration -= self._b_duration[slot]
                self._clear(slot)
            self._head = number
        return number % n

    def _clear(self, slot: int) -> None:
        self._b_calls[slot] = 0
        self._b_failures[slot] = 0
        self._b_slow[slot] = 0
        self._b_slow_failures[slot] = 0
        self._b_duration[slot] = 0.0

    def record(self, outcome: int, duration: float = 0.0) -> None:
        """Add one outcome to the current bucket, evicting expired buckets first."""
        slot = self._advance()
        self._b_calls[slot] += 1
        self.calls += 1
        if outcome & 1:
            self._b_failures[slot] += 1
            self.failures += 1
        if outcome & 2:
            self._b_slow[slot] += 1
            self.slow += 1
            if outcome == SLOW_FAILURE:
                self._b_slow_failures[slot] += 1
                self.slow_failures += 1
        self._b_duration[slot] += duration
        self.total_duration += duration

    def snapshot(self) -> WindowSnapshot:
        """Evict what the clock says has expired, then return the totals."""
        self._advance()
        return super().snapshot()

    def __repr__(self) -> str:
        return f"TimeWindow({self.seconds!r}, buckets={self.buckets})"
