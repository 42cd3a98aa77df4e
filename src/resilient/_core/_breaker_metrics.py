"""What a circuit breaker reports: its metrics, totals, durations and ``retry_after``.

Mixed into ``BreakerCore``, whose state machine writes every attribute read here; this
module only reads them, under the lock.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient._core._atomic import counted
from resilient._core._breaker_state import (
    _ADMIT_ALL,
    HALF_OPEN,
    OPEN,
    CircuitState,
    Epoch,
)
from resilient._core._clock import TimeSource
from resilient._core._window import EMPTY, CountWindow, Window

if TYPE_CHECKING:
    from resilient._core._snapshots import CircuitBreakerMetrics

__all__ = ["BreakerReadouts"]


class BreakerReadouts:
    """The read side of the breaker (see the module docstring)."""

    __slots__ = ()

    if TYPE_CHECKING:  # written by BreakerCore, which holds the slots
        _lock: threading.Lock
        _clock: TimeSource
        _state: CircuitState
        _epoch: Epoch
        _window: Window
        _half_open_max: float | None
        _half_open_calls: int
        _half_open_taken: int
        _minimum_calls: int
        _open_until: float
        _claims: itertools.count[int]
        _locked_claims: int
        _locked_successes: int
        _locked_failures: int
        _ignored_calls: itertools.count[int]
        _rejections: itertools.count[int]
        _rejections_base: int
        _not_permitted: int
        _retired_rejections: int
        _transitions: dict[tuple[CircuitState, CircuitState], int] | None
        _expire: Callable[[float, list[Any]], None]  # events, and work queued for after the lock
        _dispatch: Callable[[list[Any]], None]

    def metrics(self) -> CircuitBreakerMetrics:
        """A frozen snapshot of the current window and state."""
        events: list[Any] = []
        with self._lock:
            if self._half_open_max is not None:
                self._expire(self._clock.monotonic(), events)
            snap = self._window.snapshot()
            state = self._state
            lock_free = counted(self._rejections) - self._rejections_base
            not_permitted = self._not_permitted + lock_free
            total_rejected = self._retired_rejections + not_permitted
            successes, failures = self._locked_outcomes
            successes += counted(self._claims) - self._locked_claims
            minimum = self._half_open_calls if state is HALF_OPEN else self._minimum_calls
        self._dispatch(events)
        from resilient._core._snapshots import CircuitBreakerMetrics  # noqa: PLC0415 -- see there

        return CircuitBreakerMetrics(
            state=state,
            calls=snap.calls,
            failed_calls=snap.failed_calls,
            slow_calls=snap.slow_calls,
            slow_failed_calls=snap.slow_failed_calls,
            successful_calls=snap.successful_calls,
            not_permitted_calls=not_permitted,
            failure_rate=snap.failure_rate,
            slow_call_rate=snap.slow_call_rate,
            total_duration=snap.total_duration,
            buffered_calls_needed=max(minimum - snap.calls, 0),
            total_successful_calls=successes,
            total_failed_calls=failures,
            total_ignored_calls=counted(self._ignored_calls),
            total_not_permitted_calls=total_rejected,
        )

    def window_durations(self) -> list[float] | None:
        """The durations of the calls in the current count window, if it keeps them."""
        with self._lock:
            window = self._window
            if not isinstance(window, CountWindow) or window._durations is None:
                return None
            return [
                duration
                for outcome, duration in zip(window._outcomes, window._durations, strict=True)
                if outcome != EMPTY and not math.isnan(duration)  # NaN: not measured
            ]

    def transition_counts(self) -> dict[tuple[CircuitState, CircuitState], int]:
        """How many times each (from, to) transition happened since creation."""
        with self._lock:
            return dict(self._transitions or {})

    @property
    def _locked_outcomes(self) -> tuple[int, int]:
        """The successes and failures reported under the lock (read with the lock)."""
        return self._locked_successes, self._locked_failures

    def retry_after(self) -> float | None:
        """Seconds until an OPEN breaker admits a trial call; 0.0 if it admits now."""
        events: list[Any] = []
        with self._lock:
            now = self._clock.monotonic()
            self._expire(now, events)
            state = self._state
            open_until = self._open_until
            taken = self._half_open_taken
        self._dispatch(events)
        if state is OPEN:
            return max(open_until - now, 0.0)
        if state in _ADMIT_ALL or (state is HALF_OPEN and taken < self._half_open_calls):
            return 0.0
        return None
