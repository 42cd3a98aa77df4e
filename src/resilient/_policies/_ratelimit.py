"""Rate limiters: GCRA, one theoretical arrival time per limiter (or per key).

The Generic Cell Rate Algorithm keeps a single number, the *theoretical arrival time*
(TAT): when the next call would be due if calls came exactly at the rate. A call at
``now`` is admitted if ``max(TAT, now) + interval - burst * interval <= now``; admitting
it moves the TAT on by one ``interval``. That is O(1), exact, and needs no buckets or
timers: over any window of ``w`` seconds, at most ``w / interval + burst`` calls pass.

Time is kept in integer nanoseconds, so the arithmetic is exact: with floats,
``0.1 + 1.0 - 1.0 - 0.1`` is not 0, and a call exactly on time would be told to wait.
Only ``retry_after`` goes back to float seconds, and a clock that reports floats is
coarser than a nanosecond once it reads large values (119 ns apart at 1e9 s), so it is
rounded up to what that clock can show: waiting exactly ``retry_after`` is enough.

A caller may wait up to ``max_wait`` for its turn: its slot is *reserved* (the TAT moves
on at once), so waiting callers queue in order and never starve each other. A caller
cancelled while waiting gives its reservation back if nobody has reserved after it.

The keyed variant, one TAT per key, lives in ``_keyed_ratelimit.py``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

from resilient._core._clock import Clock
from resilient._core._errors import RateLimitedError
from resilient._core._events import GLOBAL_LISTENERS, NOTABLE_LISTENERS, CallRejected, EventSource
from resilient._core._fork import new_lock
from resilient._core._outcome import PASS
from resilient._core._validate import (
    MAX_RATE,
    MAX_SECONDS,
    Duration,
    check_duration,
    check_int,
    check_name,
    check_number,
    show_bound,
)
from resilient._policies._decorate import COROUTINE, refuse_coroutine
from resilient._policies._pipeline import Wait
from resilient._policies._policy import CorePolicy
from resilient._waiting._clock import MONOTONIC, resolve_clock
from resilient._waiting._deadline import remaining

__all__ = ["GcraCore", "RateLimiter", "RateLimiterMetrics"]

KIND: Final = "rate_limiter"
_NS: Final = 1_000_000_000


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
        clock: Clock | None,
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
        self.interval = max(1, math.ceil(Fraction(self.per) * _NS / Fraction(self.rate)))
        self.tolerance = self.burst * self.interval
        self.clock = resolve_clock(clock)
        # The default clock reads integer nanoseconds directly; others are converted.
        self.now: Callable[[], int] = (
            time.monotonic_ns if self.clock is MONOTONIC else self._now_from_clock
        )
        # A clock read as float seconds: the reading is kept for retry_after's rounding.
        self.float_clock: Clock | None = None if self.clock is MONOTONIC else self.clock
        self._lock = new_lock(self)
        self.admitted = 0
        self.waited = 0
        self.rejected = 0

    def _now_from_clock(self) -> int:
        return round(self.clock.monotonic() * _NS)

    def retry_after(self, delay: int, now: int, reading: float | None) -> float:
        """``delay`` nanoseconds as the seconds a refused caller must wait, rounded up.

        ``reading`` is the float clock's reading that gave ``now`` (``None`` for the
        integer-nanosecond default clock). A caller who waits the returned seconds
        reads at least ``reading + seconds`` (rounded to a float, as the clock rounds
        it), and that reading must be admitted: the smallest such wait is found by
        stepping one representable reading at a time (a few steps at most).
        """
        seconds = delay / _NS
        if reading is None:
            return seconds if seconds * _NS >= delay else math.nextafter(seconds, math.inf)
        due = now + delay
        arrival = reading + seconds
        while round(arrival * _NS) < due:
            # The next reading the clock can show, as a wait from `reading` (exact when
            # the two are close); never less than one step of the wait itself.
            seconds = max(
                math.nextafter(seconds, math.inf), math.nextafter(arrival, math.inf) - reading
            )
            arrival = reading + seconds
        return seconds

    def allowed_wait(self) -> int:
        """Nanoseconds a caller may wait now: ``max_wait``, cut by the current deadline."""
        left = remaining()
        seconds = self.max_wait if left is None or left > self.max_wait else left
        return round(seconds * _NS)

    def rejection(self, retry_after: float, key: object = None) -> RateLimitedError:
        """Build (and report) the error for a refused call."""
        who = f"rate limiter {self.name!r}" if self.name is not None else "rate limiter"
        whom = f" for key {key!r}" if key is not None else ""
        error = RateLimitedError(
            f"{who}: rate of {self.rate:g} per {self.per:g}s exceeded{whom}; "
            f"retry in {retry_after:.3f}s",
            policy=self.name,
            retry_after=retry_after,
        )
        if self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
            self.emit(CallRejected(self.name, KIND, error))
        return error


class RateLimiterCore(GcraCore):
    """One TAT for all callers.

    The TAT lives in a one-item list shared with :attr:`admit`, a closure over the
    constants it needs: the admission path reads no attributes, which is a fifth of
    its cost.
    """

    __slots__ = ("_admitted_fast", "_tat", "admit")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._tat = [-(2**62)]
        self.admit = self._make_admit()

    def _make_admit(self) -> Callable[[], bool]:
        cell, now_ns, interval, tolerance = self._tat, self.now, self.interval, self.tolerance
        lock = self._lock
        admitted = self._admitted_fast = [0]

        def admit() -> bool:
            """Admit a call now if it is within the rate (no waiting): the hot path."""
            now = now_ns()
            # `with`, not acquire()/release(): an interrupt between the two would leave
            # the lock held and every later call blocked.
            with lock:
                tat = cell[0]
                new_tat = (tat if tat > now else now) + interval
                if new_tat - now <= tolerance:
                    cell[0] = new_tat
                    admitted[0] += 1
                    return True
                return False

        return admit

    def reserve(self) -> tuple[int, int]:
        """Admit or reserve a slot: (nanoseconds to wait, the reserved TAT); raise if refused."""
        clock = self.float_clock
        reading = None if clock is None else clock.monotonic()
        now = self.now() if reading is None else round(reading * _NS)
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
        raise self.rejection(self.retry_after(delay, now, reading))

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
            return RateLimiterMetrics(admitted, self.waited, self.rejected, 1)


class _RateLimiterStep:
    """Admit on enter (or hand back a reserved wait); the outcome does not matter."""

    __slots__ = ("_core",)
    defers = False

    def __init__(self, core: RateLimiterCore) -> None:
        self._core = core

    def enter(self) -> Any:
        return None if self._core.admit() else self.over_the_rate()

    def gate_hooks(self, is_async: bool) -> tuple[Callable[..., Any], ...]:
        """What a runner calls instead of enter and the exits, which do nothing here."""
        wait = self.enter_wait_async if is_async else self.enter_wait
        return self._core.admit, self.over_the_rate, wait

    def over_the_rate(self) -> Wait | None:
        """After ``admit()`` said no: reserve a slot to wait for, or raise the refusal."""
        delay, tat = self._core.reserve()
        return None if delay == 0 else Wait(delay / _NS, tat)

    def enter_wait(self, wait: Wait) -> None:
        try:
            self._core.clock.sleep(wait.delay)  # type: ignore[arg-type]
        except BaseException:
            self._core.give_back(wait.data)
            raise

    async def enter_wait_async(self, wait: Wait) -> None:
        try:
            await self._core.clock.asleep(wait.delay)  # type: ignore[arg-type]
        except BaseException:
            self._core.give_back(wait.data)
            raise

    def exit_ok(self, token: None, result: Any) -> Any:
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        return exc


class RateLimiter(CorePolicy[RateLimiterCore]):
    """Admit at most ``rate`` calls per ``per`` seconds, with bursts of ``burst`` (GCRA).

    A call over the rate waits up to ``max_wait`` for its slot (reserved, so waiting
    callers are served in order and never starve each other), else raises
    [`RateLimitedError`][resilient.RateLimitedError] whose ``retry_after`` is exactly the seconds
    until a call would be admitted. Waits never run past the current deadline.

    Args:
        rate: Calls per period (> 0; fractions allowed: ``rate=0.5`` is one call per 2 s).
        per: The period in seconds (default 1).
        burst: Calls admitted at once after an idle period (default: one period's
            worth, ``max(1, int(rate))``).
        max_wait: Seconds a call may wait for its slot (default 0: refuse at once).
        name: A name for errors, events and metrics.
        clock: Where time comes from and how waits happen (default: monotonic).
    """

    __slots__ = ("_step",)
    kind = KIND

    def __init__(
        self,
        rate: float,
        per: Duration = 1.0,
        *,
        burst: int | None = None,
        max_wait: Duration = 0.0,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._core = RateLimiterCore(rate, per, burst, max_wait, name, clock)
        self._step = _RateLimiterStep(self._core)

    def _sync_step(self) -> _RateLimiterStep:
        return self._step

    def _async_step(self) -> _RateLimiterStep:
        return self._step

    # Alone, the limiter gets guards of its own: an admitted call pays for one lock and
    # one clock read, not for a pipeline; the outcome of the call does not matter.

    def _sync_guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        admit = self._core.admit
        step = self._step

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not admit():
                wait = step.over_the_rate()
                if wait is not None:
                    step.enter_wait(wait)
            result = fn(*args, **kwargs)
            if type(result) is COROUTINE:
                refuse_coroutine(fn, result)
            return result

        return guarded

    def _async_guard(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        admit = self._core.admit
        step = self._step

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            if not admit():
                wait = step.over_the_rate()
                if wait is not None:
                    await step.enter_wait_async(wait)
            return await fn(*args, **kwargs)

        return guarded

    @property
    def rate(self) -> float:
        """Calls per period."""
        return self._core.rate

    @property
    def per(self) -> float:
        """The period in seconds."""
        return self._core.per

    @property
    def burst(self) -> int:
        """Calls admitted at once after an idle period."""
        return self._core.burst

    def metrics(self) -> RateLimiterMetrics:
        """Admitted, waited and rejected calls, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        return f"<RateLimiter {self.name!r} {self.rate:g}/{self.per:g}s burst={self.burst}>"
