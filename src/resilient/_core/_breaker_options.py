"""What a circuit breaker accepts: each option of ``CircuitBreaker`` and its check.

``CircuitBreaker``'s signature spells the options out for users and type checkers, and
hands them on as they came; :data:`OPTIONS` is the one other place that lists them, in
the same order, each with the check that turns it into what ``BreakerCore`` keeps (or
raises ``ValueError``/``TypeError`` naming it). ``tests/test_breaker_options.py`` keeps
the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from resilient._core._errors import RejectedError
from resilient._core._validate import (
    check_arity,
    check_duration,
    check_int,
    check_rate,
    check_result_predicate,
    compile_matcher,
)
from resilient._core._window import CountWindow, TimeWindow

__all__ = ["OPTIONS", "Matcher", "OpenDuration", "named_rejections"]

OpenDuration = float | Callable[[int], float]
Matcher = Callable[[BaseException], bool] | None


def _check_window(option: str, value: object) -> CountWindow | TimeWindow:
    if not isinstance(value, (CountWindow, TimeWindow)):
        raise TypeError(
            f"{option} must be a CountWindow or a TimeWindow, not {type(value).__name__}"
        )
    return value


def _check_open_duration(option: str, value: object) -> tuple[OpenDuration, float]:
    """Seconds, or a callable ``attempt -> seconds``, with the first opening's seconds."""
    if callable(value) and not isinstance(value, (int, float)):
        check_arity(option, value, 1, "seconds or a callable attempt -> seconds")
        try:
            first = value(1)
        except Exception as exc:
            raise ValueError(
                f"{option}(1) raised {exc!r}; a callable {option} must map "
                "the consecutive-open count (from 1) to seconds"
            ) from exc
        seconds = check_duration(f"{option}(1)", first)
        return value, seconds
    seconds = check_duration(option, value)
    return seconds, seconds


OPTIONS: Final[dict[str, Callable[[str, object], Any]]] = {
    "failure_rate_threshold": check_rate,
    "slow_call_rate_threshold": check_rate,
    "slow_call_duration": lambda option, value: check_duration(option, value, allow_none=True),
    "window": _check_window,
    "minimum_calls": check_int,
    "open_duration": _check_open_duration,
    "half_open_calls": check_int,
    "half_open_max_duration": lambda option, value: check_duration(
        option, value, allow_zero=False, allow_none=True
    ),
    "record": compile_matcher,
    "ignore": compile_matcher,
    "record_result": check_result_predicate,
}
"""The options of ``CircuitBreaker`` after ``name`` (``clock`` aside), each with its check.

In the order of the public signature, which spells them (with their defaults and
types) for users and type checkers; this table is the one other place that lists them,
and ``tests/test_breaker_options.py`` keeps the two in step.
"""


def named_rejections(record: object) -> tuple[type[RejectedError], ...] | None:
    """The :class:`RejectedError` classes ``record`` names, which a breaker then counts."""
    named = record if isinstance(record, tuple) else (record,)
    found = tuple(t for t in named if isinstance(t, type) and issubclass(t, RejectedError))
    return found or None
