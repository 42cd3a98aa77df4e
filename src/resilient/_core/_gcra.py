"""The GCRA cores of both rate limiters: one theoretical arrival time, or one per key.

The arithmetic is explained in ``resilient._policies._ratelimit``'s docstring. These
classes decide and count; waiting for a reserved slot is the adapters' (a sleep on the
policy's clock), and so is reading the caller's deadline (``time_left``).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from resilient._core._atomic import counted, new_counter
from resilient._core._clock import Clock
from resilient._core._errors import RateLimitedError, rate_limited
from resilient._core._events import GLOBAL_LISTENERS, NOTABLE_LISTENERS, CallRejected, EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import (
    MAX_KEYS,
    MAX_RATE,
    MAX_SECONDS,
    check_duration,
    check_int,
    check_name,
    check_number,
    show_bound,
)

__all__ = [
    "KIND",
    "NS",
    "GcraCore",
    "KeyedRateLimiterCore",
    "RateLimiterCore",
    "RateLimiterMetrics",
]

KIND: Final = "rate_limiter"
NS: Final = 1_000_000_000


@dataclass(frozen=True, slots=True)
class RateLimiterMetrics:
    """A rate limiter's counts since it was created.

    Attributes:
        admitted: Calls admitted (at once or after a wait).
        waited: Of those, calls that waited for their slot.
        rejected: Calls refused with ``RateLimitedError``.
        keys: Keys tracked (1 for a plain ``RateLimiter``).
    """

    admitted: int
    waited: int
    rejected: int
    keys: int


class GcraCore(EventSource):
    """The GCRA arithmetic, the counts and the errors shared by both limiters."""

    __slots__ = (
        "_lock",
        "_refused",
        "_time_left",
        "admitted",
        "burst",
        "clock",
        "float_clock",
        "interval",
        "max_wait",
        "name",
        "now",
        "per",
        "rate",
        "rejected",
        "slack",
        "tolerance",
        "waited",
    )

    def __init__(
        self,
        rate: object,
        per: object,
        burst: object,
        max_wait: object,
        name: str | None,
        clock: Clock,
        now_ns: Callable[[], int] | None,
        time_left: Callable[[], float | None],
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.rate = check_number("rate", rate, minimum=0.0, inclusive=False)
        period = check_duration("per", per, allow_zero=False)
        self.per = period
        if period / self.rate > MAX_SECONDS:
            # The interval between calls must stay a duration the clock can represent.
            raise ValueError(
                f"rate must be >= per / {show_bound(MAX_SECONDS)} "
                f"(at least one call per {show_bound(MAX_SECONDS)}s),"
                f" got rate={self.rate!r} per {period!r}s"
            )
        self.burst = (
            max(1, int(self.rate))
            if burst is None
            else check_int("burst", burst, maximum=int(MAX_RATE))
        )
        wait = check_duration("max_wait", max_wait)
        self.max_wait = wait
        # Integer nanoseconds throughout (see the module docstring). The interval is
        # rounded up, exactly (as fractions), so the limiter is never more permissive
        # than the rate: 3 per second is one call per 333,333,334 ns.
        self.interval = max(1, math.ceil(Fraction(self.per) * NS / Fraction(self.rate)))
        self.tolerance = self.burst * self.interval
        # A call is refused exactly when the TAT is more than this ahead of now.
        self.slack = self.tolerance - self.interval
        self.clock = clock  # resolved by the adapter, which sleeps with it
        # The adapter may hand the clock's integer nanoseconds (the default clock has
        # them); others are read as float seconds and converted.
        self.now: Callable[[], int] = self._now_from_clock if now_ns is None else now_ns
        # A clock read as float seconds: the reading is kept for retry_after's rounding.
        self.float_clock: Clock | None = self.clock if now_ns is None else None
        # The caller's deadline, read through the adapter (a context variable there).
        self._time_left = time_left
        self._lock = new_lock(self)
        self.admitted = 0
        self.waited = 0
        self.rejected = 0
        # Refusals decided without the lock (max_wait=0): one atomic draw each.
        self._refused = new_counter()

    def _now_from_clock(self) -> int:
        return round(self.clock.monotonic() * NS)

    def retry_after(self, delay: int, now: int, reading: float | None) -> float:
        """``delay`` nanoseconds as the seconds a refused caller must wait, rounded up.

        ``reading`` is the float clock's reading that gave ``now`` (``None`` for the
        integer-nanosecond default clock). A caller who waits the returned seconds
        reads at least ``reading + seconds`` (rounded to a float, as the clock rounds
        it), and that reading must be admitted: the smallest such wait is found by
        stepping one representable reading at a time (a few steps at most).
        """
        seconds = delay / NS
        if reading is None:
            return seconds if seconds * NS >= delay else math.nextafter(seconds, math.inf)
        due = now + delay
        arrival = reading + seconds
        while round(arrival * NS) < due:
            # The next reading the clock can show, as a wait from `reading` (exact when
            # the two are close); never less than one step of the wait itself.
            seconds = max(
                math.nextafter(seconds, math.inf), math.nextafter(arrival, math.inf) - reading
            )
            arrival = reading + seconds
        return seconds

    def allowed_wait(self) -> int:
        """Nanoseconds a caller may wait now: ``max_wait``, cut by the current deadline."""
        left = self._time_left()
        seconds = self.max_wait if left is None or left > self.max_wait else left
        return round(seconds * NS)

    def rejection(self, retry_after: float, key: Hashable | None = None) -> RateLimitedError:
        """Build (and report) the error for a refused call: ``retry_after`` as given."""
        error = rate_limited(self.name, (self, key), 0)
        error.retry_after = retry_after
        if self.observed():
            self.emit(CallRejected(self.name, KIND, error))
        return error

    def refusal(
        self, delay: int, now: int, reading: float | None, key: Hashable | None = None
    ) -> RateLimitedError:
        """Build (and report) the error for a call refused ``delay`` ns early, at ``now``.

        Nothing is formatted or computed for a refusal nobody reads: on the integer
        nanosecond clock (no ``reading``), ``retry_after`` too is left to the error.
        """
        error = rate_limited(self.name, (self, key), delay)
        if reading is not None:  # a float clock: the rounding needs this reading
            error.retry_after = self.retry_after(delay, now, reading)
        # EventSource.observed(), inlined: the path of every refused caller, priced at
        # <= 3x a bare raise (issue 16), where the call alone would cost 5%.
        if self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
            self.emit(CallRejected(self.name, KIND, error))
        return error

    def refusal_text(self, error: RateLimitedError, key: Hashable | None) -> str:
        """The message of ``error``, a refusal of this limiter (for ``key``)."""
        who = f"rate limiter {self.name!r}" if self.name is not None else "rate limiter"
        whom = f" for key {key!r}" if key is not None else ""
        return (
            f"{who}: rate of {self.rate:g} per {self.per:g}s exceeded{whom}; "
            f"retry in {error.retry_after:.3f}s"
        )

    def early_refusal(self, delay: int, now: int) -> RateLimitedError:
        """The error refusing a call ``delay`` ns early at ``now``, seen without the lock.

        What ``admit()`` does when it refuses (``max_wait=0``), for a runner that admits
        in its own frame (``_policies._pipeline``): counted without the lock, and
        returned for the runner to raise there, which spares the refused caller a frame
        (a call, and a traceback entry) on a path priced at <= 3x a bare raise.
        """
        next(self._refused)
        # EventSource.observed(), inlined below: refusal() would cost one more frame.
        error = rate_limited(self.name, (self, None), delay)
        if self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
            self.emit(CallRejected(self.name, KIND, error))
        return error

    def refused(self) -> int:
        """Calls refused so far (those counted under the lock and those without)."""
        return self.rejected + counted(self._refused)

    # -- reconfiguration (issue 19) ----------------------------------------------------

    def carry(self, tat: int, now: int, fresh: GcraCore) -> int:
        """The TAT under ``fresh``'s options that leaves the tokens ``tat`` leaves now.

        Tokens are the calls admitted at once from now: ``(tolerance - (TAT - now)) /
        interval``, negative while waits are reserved past the burst. They are kept,
        rounded down, and capped at the new burst (as Guava's ``setRate`` does): a
        change never lets more calls through at once than either setting would.
        """
        tokens = self.tolerance - max(tat - now, 0)  # nanoseconds of the old interval
        used = fresh.tolerance - tokens * fresh.interval // self.interval
        return now + max(used, 0)

    def adopt(self, fresh: GcraCore) -> None:
        """Take the checked options of ``fresh`` (call with the lock held)."""
        self.rate, self.per, self.burst = fresh.rate, fresh.per, fresh.burst
        self.max_wait = fresh.max_wait
        self.interval, self.tolerance, self.slack = fresh.interval, fresh.tolerance, fresh.slack


_NEVER: Final = 2**200  # a slack no TAT minus it ever exceeds a clock's reading


class RateLimiterCore(GcraCore):
    """One TAT for all callers.

    The TAT lives in a list shared with :attr:`admit`, a closure: ``[TAT, interval,
    tolerance, early slack]``, all in nanoseconds. The admission path reads no
    attributes, which is a fifth of its cost, and ``reconfigure()`` changes the three
    constants in place under the lock, so that every admission already built (the
    runners write it out, see ``_pipeline._inline_gate_level``) sees them at once.
    """

    __slots__ = ("_admitted_fast", "_tat", "admit")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._tat = [-(2**62), self.interval, self.tolerance, self.early_slack()]
        self.admit = self._make_admit()

    def early_slack(self) -> int:
        """What a runner subtracts from the TAT to refuse before the lock (see ``admit``).

        A call is refused at once when ``TAT - early_slack() > now``: only a limiter
        that never waits (``max_wait=0``) on the nanosecond clock refuses that way; for
        any other the slack is too large for the test to ever hold.
        """
        return self.slack if self.max_wait == 0 and self.float_clock is None else _NEVER

    def _make_admit(self) -> Callable[[], bool]:
        """``admit()``: ``True`` if a call is within the rate now, else ``False`` or a raise.

        A limiter that never waits, on the integer-nanosecond clock, refuses a call over
        the rate at once, from the TAT read without the lock (as :meth:`reserve` does),
        rather than answer ``False`` (after which ``reserve()`` would read the clock and
        take the lock again, to refuse); for any other limiter the early slack is too
        large for that test to hold, and ``False`` leaves the wait to ``reserve()``.
        """
        cell, now_ns, lock, refused = self._tat, self.now, self._lock, self._refused
        admitted = self._admitted_fast = [0]
        name, about, refusal = self.name, (self, None), self.refusal
        listeners = self._listeners  # changed in place only

        def admit() -> bool:
            """Admit a call now if it is within the rate (no waiting): the hot path."""
            now = now_ns()
            due = cell[0] - cell[3]  # when this call would be within the rate
            if due > now:
                next(refused)
                # EventSource.observed(), inlined. (The error is raised as it is built:
                # a local holding it would make a cycle with this frame's traceback.)
                if listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
                    raise refusal(due - now, now, None)
                raise rate_limited(name, about, due - now)
            # `with`, not acquire()/release(): an interrupt between the two would leave
            # the lock held and every later call blocked.
            with lock:
                tat = cell[0]
                new_tat = (tat if tat > now else now) + cell[1]
                if new_tat - now <= cell[2]:
                    cell[0] = new_tat
                    admitted[0] += 1
                    return True
                return False

        return admit

    def retune(self, fresh: GcraCore) -> None:
        """Take the checked options of ``fresh`` in place, keeping the tokens (see ``carry``)."""
        with self._lock:
            now = self.now()
            self._tat[0] = self.carry(self._tat[0], now, fresh)
            self.adopt(fresh)
            self._tat[1:] = [self.interval, self.tolerance, self.early_slack()]

    def reserve(self) -> tuple[int, int]:
        """Admit or reserve a slot: (nanoseconds to wait, the reserved TAT); raise if refused."""
        clock = self.float_clock
        reading = None if clock is None else clock.monotonic()
        now = self.now() if reading is None else round(reading * NS)
        if self.max_wait == 0:
            # A refusal changes nothing but a count, so it needs no lock: the TAT, read
            # once (an atomic read), was over the rate at that instant, which is when
            # the call is refused. (An admission needs the lock: it writes.)
            due = self._tat[0] - self.slack
            if due > now:
                next(self._refused)
                raise self.refusal(due - now, now, reading)
        with self._lock:
            tat = self._tat[0]
            new_tat = (tat if tat > now else now) + self.interval
            delay = new_tat - self.tolerance - now
            if delay <= 0:
                self._tat[0] = new_tat
                self.admitted += 1
                return 0, new_tat
            if delay <= self.allowed_wait():
                self._tat[0] = new_tat
                self.admitted += 1
                self.waited += 1
                return delay, new_tat
            self.rejected += 1
        raise self.refusal(delay, now, reading)

    def give_back(self, reserved_tat: int) -> None:
        """A reserved caller gave up: return its slot if nobody reserved after it."""
        with self._lock:
            if self._tat[0] == reserved_tat:
                self._tat[0] -= self.interval
                self.admitted -= 1
                self.waited -= 1

    def metrics(self) -> RateLimiterMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            admitted = self.admitted + self._admitted_fast[0]
            return RateLimiterMetrics(admitted, self.waited, self.refused(), 1)


class KeyedRateLimiterCore(GcraCore):
    """One TAT per key, in LRU order, at most ``max_keys`` of them."""

    __slots__ = ("_tats", "max_keys")

    def __init__(self, *args: Any, max_keys: object) -> None:
        super().__init__(*args)
        self.max_keys = check_int("max_keys", max_keys, maximum=MAX_KEYS)
        self._tats: collections.OrderedDict[Hashable, int] = collections.OrderedDict()

    def reserve(self, key: Hashable) -> tuple[int, int]:
        """As :meth:`RateLimiterCore.reserve`, for ``key``."""
        clock = self.float_clock
        reading = None if clock is None else clock.monotonic()
        now = self.now() if reading is None else round(reading * NS)
        tats = self._tats
        if self.max_wait == 0:  # refused without the lock, as RateLimiterCore.reserve
            due = tats.get(key, now) - self.slack
            if due > now:
                next(self._refused)
                raise self.refusal(due - now, now, reading, key)
        with self._lock:
            tat = tats.get(key, now)
            new_tat = (tat if tat > now else now) + self.interval
            delay = new_tat - self.tolerance - now
            if delay <= 0 or delay <= self.allowed_wait():
                tats[key] = new_tat
                tats.move_to_end(key)
                self.admitted += 1
                if delay > 0:
                    self.waited += 1
                self._evict(now)
                return max(delay, 0), new_tat
            self.rejected += 1
        raise self.refusal(delay, now, reading, key)

    def retune(self, fresh: KeyedRateLimiterCore) -> None:
        """Take the checked options of ``fresh``, keeping each key's tokens."""
        with self._lock:
            now = self.now()
            tats = self._tats
            for key in list(tats):
                tats[key] = self.carry(tats[key], now, fresh)
            self.adopt(fresh)
            self.max_keys = fresh.max_keys
            while len(tats) > self.max_keys:
                tats.popitem(last=False)

    def _evict(self, now: int) -> None:
        tats = self._tats
        # Keys whose TAT has passed behave exactly like absent keys: drop a few of the
        # least recently used each time (amortised O(1)), and any excess over max_keys.
        for _ in range(2):
            if not tats:
                return
            oldest, tat = next(iter(tats.items()))
            if tat > now:
                break
            del tats[oldest]
        while len(tats) > self.max_keys:
            tats.popitem(last=False)

    def give_back(self, key: Hashable, reserved_tat: int) -> None:
        """A reserved caller gave up: return its slot if nobody reserved after it."""
        with self._lock:
            if self._tats.get(key) == reserved_tat:
                self._tats[key] = reserved_tat - self.interval
                self.admitted -= 1
                self.waited -= 1

    def metrics(self) -> RateLimiterMetrics:
        """A frozen snapshot of the counts."""
        with self._lock:
            return RateLimiterMetrics(self.admitted, self.waited, self.refused(), len(self._tats))
