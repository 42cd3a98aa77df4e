"""What a circuit breaker accepts: each option of ``CircuitBreaker`` and its check.

``CircuitBreaker``'s signature spells the options out for users and type checkers, and
hands them on as they came; :data:`OPTIONS` is the one other place that lists them, in
the same order, each with the check that turns it into what ``BreakerCore`` keeps (or
raises ``ValueError``/``TypeError`` naming it). ``tests/test_breaker_options.py`` keeps
the two in step.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

from resilient._core._errors import MisuseError, RejectedError
from resilient._core._validate import (
    check_arity,
    check_duration,
    check_int,
    check_rate,
    check_result_predicate,
    compile_matcher,
)
from resilient._core._window import CountWindow, TimeWindow

__all__ = ["OPTIONS", "Matcher", "OpenDuration", "classify_error", "named_rejections"]

logger = logging.getLogger("resilient")

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


def classify_error(
    exc: BaseException,
    ignore: Matcher,
    record: Matcher,
    record_rejections: tuple[type[RejectedError], ...] | None,
    kind: str,
    name: str | None,
) -> tuple[bool, bool]:
    """``(ignored, failed)`` for an exception a guarded call raised, as a breaker sees it.

    ``ignore`` wins; a :class:`MisuseError` (a bug in the calling code) is always
    ignored, and so is a rejection by one of the library's own policies unless
    ``record`` names its class, since neither says anything about the dependency. A
    predicate that raises an :class:`Exception` is logged against the policy (``kind``
    and ``name``) and the call counts as failed; a :class:`BaseException` from it
    propagates, for the caller to give its permit back.
    """
    if type(exc) is MisuseError:
        return True, False
    try:
        ignored = ignore is not None and ignore(exc)
        if not ignored and isinstance(exc, RejectedError):
            ignored = record_rejections is None or not isinstance(exc, record_rejections)
        return ignored, not ignored and record is not None and record(exc)
    except Exception:
        logger.exception(
            "the record/ignore predicate of %s %r raised; counting the call as a failure",
            kind,
            name,
        )
        return False, True
