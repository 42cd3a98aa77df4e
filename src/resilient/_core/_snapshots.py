"""The breaker's frozen snapshots: ``CircuitBreakerMetrics`` and ``WindowSnapshot``.

Kept apart from the breaker and its windows because creating a dataclass generates and
compiles its methods: this module is loaded by the first ``metrics()`` (or the first
use of either name), never by ``import resilient`` nor by a breaker's calls
(``tests/test_import_cost.py``), like the event records in ``_records``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from resilient._core._breaker_state import CircuitState

__all__ = ["CircuitBreakerMetrics", "WindowSnapshot"]


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """What a window holds at one moment.

    Attributes:
        calls: Outcomes in the window.
        failed_calls: Of those, failures (slow or not).
        slow_calls: Of those, slow calls (successes and failures).
        slow_failed_calls: Of those, calls that were both slow and failed.
        total_duration: Sum of the measured durations in seconds (0.0 where the policy
            measured none).
    """

    calls: int
    failed_calls: int
    slow_calls: int
    slow_failed_calls: int
    total_duration: float

    @property
    def successful_calls(self) -> int:
        """Calls that did not fail (slow or not)."""
        return self.calls - self.failed_calls

    @property
    def failure_rate(self) -> float:
        """``failed_calls / calls``, or 0.0 for an empty window."""
        return self.failed_calls / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """``slow_calls / calls``, or 0.0 for an empty window."""
        return self.slow_calls / self.calls if self.calls else 0.0

    @property
    def mean_duration(self) -> float:
        """Mean measured duration in seconds, or 0.0 for an empty window."""
        return self.total_duration / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class CircuitBreakerMetrics:
    """A breaker's counts at one moment, over its current window.

    Attributes:
        state: The state when the snapshot was taken.
        calls: Recorded calls in the window (in HALF_OPEN: the finished trials only).
        failed_calls: Of those, failures.
        slow_calls: Of those, slow calls (successes and failures).
        slow_failed_calls: Of those, calls both slow and failed.
        successful_calls: Of those, calls that did not fail.
        not_permitted_calls: Calls rejected since the window began.
        failure_rate: ``failed_calls / calls`` (0.0 with no calls), a fraction.
        slow_call_rate: ``slow_calls / calls`` (0.0 with no calls), a fraction.
        total_duration: Sum of measured durations (0.0 where none are measured).
        buffered_calls_needed: Calls still needed before rates are evaluated (0 once
            ``minimum_calls`` is reached).
        total_successful_calls: Calls that succeeded since the breaker was created, in
            any state, recorded in a window or not.
        total_failed_calls: Calls that failed since the breaker was created.
        total_ignored_calls: Calls whose exception was ignored since it was created.
        total_not_permitted_calls: Calls rejected since it was created.
    """

    state: CircuitState
    calls: int
    failed_calls: int
    slow_calls: int
    slow_failed_calls: int
    successful_calls: int
    not_permitted_calls: int
    failure_rate: float
    slow_call_rate: float
    total_duration: float
    buffered_calls_needed: int
    total_successful_calls: int = 0
    total_failed_calls: int = 0
    total_ignored_calls: int = 0
    total_not_permitted_calls: int = 0


# Reprs, pickles and docs say `resilient.WindowSnapshot` (the public name), however the
# module was first reached.
WindowSnapshot.__module__ = CircuitBreakerMetrics.__module__ = "resilient"
