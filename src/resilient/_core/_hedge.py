"""Hedged requests: a backup attempt when the first one is slower than usual.

"The Tail at Scale" (Dean and Barroso) and Finagle's backup requests: if an attempt has
not answered after ``delay``, start another, up to ``max_hedged`` more, and take the
first acceptable answer; the others are cancelled (async) or abandoned (sync). The delay
is fixed, computed by a callable from the hedge's number, or a latency quantile of the
policy's own recent attempts (``"p95"``: hedge the slowest 5%). Each hedge spends from
a retry budget, so a dependency that is slow for everyone does not get twice the load.

This module decides and counts; the drivers in ``_policies._hedge`` start attempts, wait
and cancel. :class:`HedgeRun` is one call's state, driven by one task or thread; the
core's counts and latency window are shared under its lock. User callables (``delay``,
``on``, ``on_result``) never run under it.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from resilient._core import _events
from resilient._core._budget import RetryBudget, RetryThrottle
from resilient._core._errors import MisuseError
from resilient._core._events import EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import (
    MAX_SECONDS,
    check_arity,
    check_duration,
    check_int,
    check_name,
    check_result_predicate,
    compile_matcher,
)

__all__ = ["KIND", "MAX_HEDGED", "HedgeCore", "HedgeMetrics", "HedgeRun", "Verdict"]

KIND: Final = "hedge"
MAX_HEDGED: Final = 100
"""The most extra attempts per call: each may hold a task or a worker thread."""
MIN_SAMPLES: Final = 10
"""Latencies a quantile delay needs before the first hedge (fewer: no hedging)."""

logger = logging.getLogger("resilient")

_QUANTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


@dataclass(frozen=True, slots=True)
class HedgeMetrics:
    """A hedge's counts since it was created, and its current delay.

    Attributes:
        calls: Calls through the hedge.
        first_wins: Calls answered by their first attempt.
        hedge_wins: Calls answered by an extra attempt. (``calls - first_wins -
            hedge_wins - failed`` were cancelled or interrupted by their caller, or are
            in flight.)
        hedges: Extra attempts started.
        budget_refused: Extra attempts the budget did not allow.
        cancelled: Attempts cancelled (async) or abandoned to finish unattended (sync)
            because another one answered first.
        failed: Calls whose every attempt failed (the last failure was raised).
        delay: The delay before the next call's first hedge, in seconds (``None`` while a
            quantile delay has too few latencies, or for a callable delay).
    """

    calls: int
    first_wins: int
    hedge_wins: int
    hedges: int
    budget_refused: int
    cancelled: int
    failed: int
    delay: float | None


class Verdict:
    """What one finished attempt means for its call."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


WIN: Final = Verdict("WIN")  # acceptable: the caller gets it, the others are cancelled
LOST: Final = Verdict("LOST")  # every attempt failed and no more may start: raise this one
HEDGE_NOW: Final = Verdict("HEDGE_NOW")  # a failure: start the next hedge at once if allowed
WAIT: Final = Verdict("WAIT")  # a failure, others still running: wait for them


def _parse_delay(value: object) -> tuple[str, Any]:
    """``("fixed", seconds)``, ``("quantile", q)`` or ``("callable", fn)``."""
    if isinstance(value, str):
        match = _QUANTILE.match(value)
        q = float(match.group(1)) / 100 if match else 0.0
        if not 0.0 < q < 1.0:
            raise ValueError(
                f'delay must be seconds, a quantile such as "p95" (p1 to p99.9...), '
                f"or a callable hedge -> seconds; got {value!r}"
            )
        return "quantile", q
    if callable(value) and not isinstance(value, (int, float)):
        return "callable", check_arity("delay", value, 1, "a callable hedge number -> seconds")
    return "fixed", check_duration("delay", value)


class HedgeCore(EventSource):
    """The options, the latency window, the counts; :meth:`run` starts one call's state."""

    __slots__ = (
        "_latencies",
        "_lock",
        "_next",
        "_on",
        "_on_result",
        "_quantile",
        "_since",
        "budget",
        "budget_refused",
        "calls",
        "cancelled",
        "delay",
        "delay_kind",
        "failed",
        "first_wins",
        "hedge_wins",
        "hedges",
        "max_hedged",
        "name",
        "window",
    )

    def __init__(
        self,
        name: object,
        *,
        max_hedged: object,
        delay: object,
        budget: object,
        on: object,
        on_result: object,
        window: object,
        default_budget: Callable[[], RetryBudget],
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.max_hedged = check_int("max_hedged", max_hedged, maximum=MAX_HEDGED)
        self.delay_kind, self.delay = _parse_delay(delay)
        if budget is None:
            budget = default_budget()
        elif not isinstance(budget, (RetryBudget, RetryThrottle)):
            raise TypeError(
                "budget must be a RetryBudget, a RetryThrottle or None, "
                f"not {type(budget).__name__}"
            )
        self.budget: RetryBudget | RetryThrottle = budget
        self._on = compile_matcher("on", on)
        self._on_result: Callable[[Any], bool] | None = check_result_predicate(
            "on_result", on_result
        )
        self.window = check_int("window", window, maximum=100_000)
        self._latencies: list[float] = []
        self._next = 0  # where the ring's next latency goes, once it is full
        # The quantile, recomputed (a sort of the window) once 5% of it is new, not per call.
        self._quantile: float | None = None
        self._since = 0  # latencies recorded since the quantile was computed
        self._lock = new_lock(self)
        self.calls = self.hedges = self.hedge_wins = self.first_wins = 0
        self.budget_refused = self.cancelled = self.failed = 0

    def run(self) -> HedgeRun:
        """A new call: count it and deposit into the budget."""
        with self._lock:
            self.calls += 1
        self.budget.on_first_attempt()
        return HedgeRun(self)

    # -- the delay ---------------------------------------------------------------------

    def current_delay(self) -> float | None:
        """The fixed delay, or the quantile of the window (``None``: too few latencies)."""
        if self.delay_kind == "fixed":
            return float(self.delay)
        if self.delay_kind != "quantile":
            return None
        with self._lock:
            cached, count = self._quantile, len(self._latencies)
            if cached is not None and self._since * 20 < count:
                return cached
            if count < min(MIN_SAMPLES, self.window):
                return None
            latencies = list(self._latencies)
            self._since = 0
        latencies.sort()  # outside the lock: other calls go on meanwhile
        # Nearest rank, as the breaker's duration quantiles.
        q: float = self.delay
        value = latencies[max(math.ceil(q * len(latencies)) - 1, 0)]
        with self._lock:
            self._quantile = value
        return value

    def delay_for(self, hedge: int) -> float | None:
        """Seconds to wait before extra attempt ``hedge`` (from 1); ``None``: do not hedge."""
        if self.delay_kind != "callable":
            return self.current_delay()
        try:
            seconds = self.delay(hedge)
            return check_duration("delay(hedge)", seconds)
        except Exception:
            logger.exception("delay of hedge %r failed for hedge %d; not hedging", self.name, hedge)
            return None

    def record_latency(self, seconds: float) -> None:
        """Keep the duration of an attempt that answered, for a quantile delay."""
        if self.delay_kind != "quantile" or not 0.0 <= seconds <= MAX_SECONDS:
            return
        with self._lock:
            self._since += 1
            if len(self._latencies) < self.window:
                self._latencies.append(seconds)
            else:
                self._latencies[self._next] = seconds
                self._next = (self._next + 1) % self.window

    # -- classification ----------------------------------------------------------------

    def acceptable(self, exc: BaseException | None, result: Any) -> bool:
        """Whether an attempt's outcome answers the call (else another attempt may)."""
        if exc is not None:
            return self._final_error(exc)
        check = self._on_result
        if check is None:
            return True
        try:
            return not check(result)
        except Exception:
            logger.exception("on_result of hedge %r raised; the result stands", self.name)
            return True

    def _final_error(self, exc: BaseException) -> bool:
        # A bug in the calling code, or an interrupt: no other attempt does better.
        on = self._on
        if on is None or type(exc) is MisuseError or not isinstance(exc, Exception):
            return True
        try:
            return not on(exc)
        except Exception:
            logger.exception("the on predicate of hedge %r raised; the failure stands", self.name)
            return True

    def metrics(self) -> HedgeMetrics:
        """A frozen snapshot of the counts and the current delay."""
        delay = self.current_delay()
        with self._lock:
            return HedgeMetrics(
                self.calls,
                self.first_wins,
                self.hedge_wins,
                self.hedges,
                self.budget_refused,
                self.cancelled,
                self.failed,
                delay,
            )


class HedgeRun:
    """One call: which attempts started, which are running, what happens next.

    Driven by the one task or thread that made the call; only the core's shared counts
    take its lock.
    """

    __slots__ = ("_core", "_delay", "closed", "last_start", "running", "started")

    def __init__(self, core: HedgeCore) -> None:
        self._core = core
        self.started = 1  # the first attempt, number 0, starts with the run
        self.running = 1
        self.closed = False  # no more extra attempts: the limit, the budget or the delay
        self.last_start = 0.0  # seconds into the call when the latest attempt started
        self._delay: tuple[int, float | None] | None = None  # asked once per extra attempt

    def next_start(self) -> float | None:
        """Seconds into the call when the next extra attempt is due; ``None``: never.

        Each extra attempt is due ``delay`` after the previous attempt started.
        """
        if self.closed or self.started > self._core.max_hedged:
            return None
        cached = self._delay
        if cached is None or cached[0] != self.started:
            cached = self._delay = (self.started, self._core.delay_for(self.started))
        if cached[1] is None:
            self.closed = True
            return None
        return self.last_start + cached[1]

    def hedge(self, after: float) -> int | None:
        """Start an extra attempt ``after`` seconds into the call, if the budget allows.

        Returns its number (from 1), or ``None`` (then no more will start).
        """
        core = self._core
        if self.closed or self.started > core.max_hedged:
            return None
        if not core.budget.try_retry():
            self.closed = True
            with core._lock:
                core.budget_refused += 1
            return None
        attempt = self.started
        self.started += 1
        self.running += 1
        self.last_start = after
        with core._lock:
            core.hedges += 1
        if core.observed():
            core.emit(_events.HedgeStarted(core.name, KIND, attempt, after))
        return attempt

    def not_started(self) -> None:
        """The attempt just counted could not start (no worker): no more will.

        (Its withdrawal from the budget stays spent: a full pool is rare, and a budget
        takes nothing back.)
        """
        self.running -= 1
        self.started -= 1
        self.closed = True
        with self._core._lock:
            self._core.hedges -= 1

    def finished(
        self, attempt: int, exc: BaseException | None, result: Any, seconds: float
    ) -> Verdict:
        """Attempt ``attempt`` ended after ``seconds``: what the call does now."""
        core = self._core
        self.running -= 1
        core.record_latency(seconds)
        if core.acceptable(exc, result):
            self._end(won_by=attempt)
            return WIN
        if self.running > 0:
            return HEDGE_NOW if self._may_hedge() else WAIT
        if self._may_hedge():
            return HEDGE_NOW
        self._end(won_by=None)
        return LOST

    def lost_if_idle(self) -> bool:
        """After a failure, no extra attempt could start: is the call lost (none running)?"""
        if self.running > 0:
            return False
        self._end(won_by=None)
        return True

    def _may_hedge(self) -> bool:
        return not self.closed and self.started <= self._core.max_hedged

    def _end(self, won_by: int | None) -> None:
        core = self._core
        self.closed = True
        with core._lock:
            core.cancelled += self.running
            if won_by is None:
                core.failed += 1
            elif won_by > 0:
                core.hedge_wins += 1
            else:
                core.first_wins += 1

    def abandon(self) -> None:
        """The caller gave up (cancelled, interrupted): the running attempts go too."""
        if not self.closed:
            self.closed = True
            with self._core._lock:
                self._core.cancelled += self.running
