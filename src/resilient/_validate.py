"""Construction-time validation shared by every policy.

Each helper names the offending option and the accepted range in its error, so a bad
configuration fails where it is written, not later inside a call.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeAlias

logger = logging.getLogger("resilient")

__all__ = [
    "Duration",
    "ExceptionMatcher",
    "check_duration",
    "check_int",
    "check_number",
    "check_rate",
    "compile_matcher",
    "matches",
]

Duration: TypeAlias = "float | datetime.timedelta"
"""Seconds as a number, or a :class:`datetime.timedelta`."""

ExceptionMatcher: TypeAlias = (
    "type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]"
)
"""Exception types (one or a tuple), or a predicate over the exception."""


def matches(
    predicate: Callable[[Any], object], value: object, what: str, policy: str | None
) -> bool:
    """Ask a user predicate; if it raises, log it and answer "no match".

    A predicate is user code running inside the library: its failure must not replace
    the outcome of the call being judged (the rule for ``on``, ``on_result`` and, for
    the breaker, ``record_result``; a raising ``record`` counts as a failure instead).
    """
    try:
        return bool(predicate(value))
    except Exception:
        logger.exception("%s of %r raised; treated as no match", what, policy)
        return False


def check_duration(
    name: str, value: object, *, allow_zero: bool = True, allow_none: bool = False
) -> float | None:
    """Return ``value`` as finite non-negative seconds, or raise naming ``name``."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not None")
    if isinstance(value, datetime.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, not {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {seconds!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {seconds!r}")
    return seconds


def check_rate(name: str, value: object) -> float:
    """Return ``value`` as a fraction in (0, 1], or raise naming ``name``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number in (0, 1], not {type(value).__name__}")
    rate = float(value)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (a fraction, not a percentage), got {value!r}")
    return rate


def check_number(name: str, value: object, *, minimum: float, inclusive: bool = True) -> float:
    """Return ``value`` as a finite float >= (or >) ``minimum``, or raise naming ``name``."""
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number {bound}, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < minimum or (number == minimum and not inclusive):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def check_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` as an int >= ``minimum``, or raise naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _is_exception_type(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def check_name(name: object) -> str | None:
    """A policy's name: a str, or ``None``."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    return name


def check_result_predicate(option: str, value: object) -> Callable[[Any], bool] | None:
    """A predicate over return values (``record_result``, ``on_result``), or ``None``."""
    if value is not None and not callable(value):
        raise TypeError(
            f"{option} must be a predicate over results or None, not {type(value).__name__}"
        )
    return value


@functools.lru_cache(maxsize=256)
def _isinstance_of(
    types: type[BaseException] | tuple[type[BaseException], ...],
) -> Callable[[BaseException], bool]:
    # Shared between policies: a closure costs ~250 bytes, a breaker's budget is 2 KiB.
    return lambda exc: isinstance(exc, types)


def compile_matcher(name: str, value: object) -> Callable[[BaseException], bool] | None:
    """Turn exception types or a predicate into one predicate; ``()`` gives ``None``.

    Types are matched with :func:`isinstance`, which is both the common case and the
    fastest, so the tuple is kept as such rather than wrapped in a lambda per type.
    """
    if _is_exception_type(value):
        return _isinstance_of(value)
    if isinstance(value, tuple):
        if not value:
            return None
        if not all(_is_exception_type(item) for item in value):
            raise TypeError(
                f"{name} must be an exception type, a tuple of exception types, or a "
                f"predicate; the tuple holds {value!r}"
            )
        return _isinstance_of(value)
    if callable(value) and not isinstance(value, type):
        return value
    raise TypeError(
        f"{name} must be an exception type, a tuple of exception types, or a predicate, "
        f"not {type(value).__name__}"
    )
