"""Construction-time validation shared by every policy.

Each helper names the offending option and the accepted range in its error, so a bad
configuration fails where it is written, not later inside a call.
"""

from __future__ import annotations

import builtins
import functools
import inspect
import logging
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, cast, overload

from resilient._core._clock import Clock

if TYPE_CHECKING:
    import datetime

logger = logging.getLogger("resilient")

__all__ = [
    "MAX_BUFFER",
    "MAX_COUNT",
    "MAX_KEYS",
    "MAX_RATE",
    "MAX_SECONDS",
    "MIN_BUCKET_SECONDS",
    "Duration",
    "ExceptionMatcher",
    "check_arity",
    "check_clock",
    "check_duration",
    "check_int",
    "check_names",
    "check_number",
    "check_random",
    "check_rate",
    "compile_matcher",
    "matches",
]

# The working ranges. Each bound is far beyond any sensible configuration and well
# inside what the code paths behind it can represent: a duration past MAX_SECONDS
# (about 31.7 years) overflows `time.sleep` or a nanosecond clock somewhere, a count
# past MAX_COUNT allocates that many slots up front, and a bucket narrower than
# MIN_BUCKET_SECONDS makes "which bucket is now" overflow or divide by zero.
MAX_SECONDS = 1e9
"""The longest duration any option accepts, in seconds (about 31.7 years)."""
MAX_COUNT = 10_000_000
"""The largest count of pre-allocated slots (window sizes, half-open trials, bulkheads)."""
MAX_RATE = 1e9
"""The largest rate or burst (one call per nanosecond)."""
MIN_BUCKET_SECONDS = 0.001
MAX_KEYS = 10_000_000
"""The most keys a keyed policy may keep (entries are created lazily, so above MAX_COUNT)."""
MAX_BUFFER = 2**30
"""The most bytes the ASGI middleware may hold back per request (1 GiB)."""
"""The narrowest bucket of a time-bucketed ring (``TimeWindow``, ``RetryBudget``)."""

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


def show_bound(number: float) -> str:
    """A bound as people write it: ``1e9``, ``0.001``."""
    return f"{number:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


def _real(name: str, value: object, expected: str) -> float:
    """``value`` as a float; bools, non-numbers and ints too large for a float refused."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {expected}, got an int too large for a float") from None


@overload
def check_duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = ...,
    allow_none: Literal[False] = ...,
    minimum: float = ...,
    maximum: float | None = ...,
) -> float: ...
@overload
def check_duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = ...,
    allow_none: Literal[True],
    minimum: float = ...,
    maximum: float | None = ...,
) -> float | None: ...
def check_duration(
    name: str,
    value: object,
    *,
    allow_zero: bool = True,
    allow_none: bool = False,
    minimum: float = 0.0,
    maximum: float | None = MAX_SECONDS,
) -> float | None:
    """Return ``value`` as seconds in the working range, or raise naming ``name``.

    The range is ``[minimum, maximum]`` (``(0, maximum]`` without ``allow_zero``);
    ``maximum=None`` allows any finite duration.
    """
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds or a timedelta, not None")
    low = (
        f"> {show_bound(minimum)}"
        if not allow_zero and minimum == 0
        else f">= {show_bound(minimum)}"
    )
    bound = (
        f"{low} and <= {show_bound(maximum)} seconds" if maximum is not None else f"{low} seconds"
    )
    # A timedelta exists only once `datetime` is imported, so a program that passes
    # numbers does not have this module import `datetime` for it.
    timedelta: type[datetime.timedelta] | None = getattr(
        sys.modules.get("datetime"), "timedelta", None
    )
    if timedelta is not None and isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _real(name, value, f"a number {bound}")
    else:
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta ({bound}), "
            f"not {type(value).__name__}"
        )
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number {bound}, got {seconds!r}")
    if (
        seconds < minimum
        or (seconds == 0 and not allow_zero)
        or (maximum is not None and seconds > maximum)
    ):
        raise ValueError(f"{name} must be {bound}, got {seconds!r}")
    return seconds


def check_rate(name: str, value: object) -> float:
    """Return ``value`` as a fraction in (0, 1], or raise naming ``name``."""
    rate = _real(name, value, "a number in (0, 1]")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"{name} must be in (0, 1] (a fraction, not a percentage), got {value!r}")
    return rate


def check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    inclusive: bool = True,
    maximum: float = MAX_RATE,
) -> float:
    """Return ``value`` as a float in ``[minimum, maximum]`` (``(minimum, maximum]``)."""
    bound = f"{'>=' if inclusive else '>'} {show_bound(minimum)} and <= {show_bound(maximum)}"
    number = _real(name, value, f"a number {bound}")
    if (
        not math.isfinite(number)
        or number < minimum
        or (number == minimum and not inclusive)
        or number > maximum
    ):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return number


def check_int(name: str, value: object, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``, or raise naming ``name``."""
    bound = f"an int >= {minimum} and <= {maximum:,}"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be {bound}, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        shown = repr(value) if abs(value) < 10**30 else f"an int of {len(str(abs(value)))} digits"
        raise ValueError(f"{name} must be {bound}, got {shown}")
    return int(value)


def check_arity(option: str, fn: object, nargs: int, expected: str) -> Callable[..., Any]:
    """Return ``fn`` if it can be called with ``nargs`` positional arguments, else raise.

    ``expected`` says what the option is (``"a predicate over exceptions"``). A callable
    whose signature cannot be read (some builtins) is trusted.
    """
    if not callable(fn):
        raise TypeError(f"{option} must be {expected}, not {type(fn).__name__}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    try:
        signature.bind(*range(nargs))
    except TypeError:
        args = "one argument" if nargs == 1 else f"{nargs} arguments"
        raise TypeError(
            f"{option} must be {expected}, called with {args}; "
            f"{getattr(fn, '__qualname__', fn)!r} takes {signature}"
        ) from None
    return fn


def check_names(option: str, value: object, what: str) -> tuple[str, ...]:
    """A collection of strings (header names, HTTP methods), not one bare str."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{option} must be a collection of {what}, not one {type(value).__name__}")
    try:
        items: tuple[object, ...] = tuple(cast("Any", value))
    except TypeError:
        raise TypeError(
            f"{option} must be a collection of {what}, not {type(value).__name__}"
        ) from None
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{option} must hold {what} as str, not {type(item).__name__}")
    return items  # type: ignore[return-value]


def _check_methods(option: str, value: object, methods: tuple[str, ...], what: str) -> None:
    if isinstance(value, type):
        raise TypeError(f"{option} must be {what}: an instance, not the class {value.__name__}")
    missing = [m for m in methods if not callable(getattr(value, m, None))]
    if missing:
        wanted = ", ".join(f"{m}()" for m in methods)
        raise TypeError(
            f"{option} must be {what} providing {wanted}; {type(value).__name__} "
            f"lacks {', '.join(f'{m}()' for m in missing)}"
        )


def check_clock(value: object, option: str = "clock") -> Clock | None:
    """``None`` (the caller picks the default), or a ``Clock``.

    Checked here rather than at first use, where a missing method would surface as an
    ``AttributeError`` inside some unrelated call (or only under a deadline).
    """
    if value is None:
        return None
    _check_methods(option, value, ("monotonic", "sleep", "asleep"), "a Clock")
    return value  # type: ignore[return-value]


def check_random(value: object, methods: tuple[str, ...], option: str = "random") -> Any:
    """A ``random.Random``-like source providing ``methods``, or ``None`` (the default)."""
    if value is not None:
        _check_methods(option, value, methods, "a random.Random or None")
    return value


def _is_exception_type(obj: object) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def _can_match_exception(kind: type[BaseException]) -> bool:
    # The policies match only `Exception`s (cancellation and interrupts pass through
    # unmatched), so KeyboardInterrupt or SystemExit could never match. BaseException
    # and BaseExceptionGroup do: some Exception derives from them.
    return issubclass(kind, Exception) or issubclass(Exception, kind) or issubclass(_GROUP, kind)


# ExceptionGroup (3.11+) is an Exception deriving from BaseExceptionGroup.
_GROUP: type[BaseException] = getattr(builtins, "ExceptionGroup", Exception)


def check_name(name: object) -> str | None:
    """A policy's name: a str, or ``None``."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, not {type(name).__name__}")
    return name


def check_result_predicate(option: str, value: object) -> Callable[[Any], bool] | None:
    """A predicate over return values (``record_result``, ``on_result``), or ``None``."""
    if value is None:
        return None
    return check_arity(option, value, 1, "a predicate over results (one argument) or None")


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
    Types that no ``Exception`` can be an instance of are refused: they would never match.
    """
    expected = "an exception type, a tuple of exception types, or a predicate (one argument)"
    types = value if isinstance(value, tuple) else (value,)
    if _is_exception_type(value) or isinstance(value, tuple):
        if not value:
            return None
        if not all(_is_exception_type(item) for item in types):
            raise TypeError(f"{name} must be {expected}; the tuple holds {value!r}")
        never = [t.__name__ for t in types if not _can_match_exception(t)]
        if never:
            raise ValueError(
                f"{name} must name Exception types: {', '.join(never)} never reach it "
                "(cancellation and interrupts are never matched)"
            )
        return _isinstance_of(value)
    if isinstance(value, type):
        raise TypeError(f"{name} must be {expected}, not the class {value.__name__}")
    return check_arity(name, value, 1, expected)
