"""How long a retry waits before each new attempt.

A *wait strategy* is anything :func:`compile_wait` accepts: seconds, a callable
``attempt -> seconds``, or one of ours (tenacity's strategies are turned into schedules
by the adapter, ``resilient._policies._tenacity``, before they reach here). It is
compiled into a factory of *schedules*: one schedule per guarded call, because some
strategies carry state from one attempt to the next (decorrelated jitter does), and
state shared between concurrent calls is the bug tenacity has with its statistics.

Ours:

* :class:`ExponentialJitter`: "full jitter" from AWS's *Exponential Backoff and
  Jitter*: a uniform draw in ``[0, min(max, base * 2 ** (attempt - 1))]``.
* :class:`DecorrelatedJitter`: Polly's ``DecorrelatedJitterBackoffV2``, whose delays
  have a median close to ``median_first`` on the first retry and then roughly double,
  with no clumping and no run of zero-length waits.
"""

from __future__ import annotations

import datetime
import math
import random
from collections.abc import Callable
from typing import Any, Final

from resilient._core._validate import check_arity, check_duration, check_random

__all__ = ["MAX_WAIT", "DecorrelatedJitter", "ExponentialJitter", "Schedule", "compile_wait"]

MAX_WAIT: Final = 86_400.0
"""The longest wait between two attempts, in seconds (one day): ``Retry.MAX_WAIT``.

``time.sleep`` overflows near 9.2e9 s and an async sleep that long never ends, so a
constant ``wait`` above it is refused at construction and a computed wait (a callable,
a tenacity strategy with no ``max``) is clamped to it.
"""

Schedule = Callable[[int, "BaseException | None", Any], float]
"""``schedule(attempt, exception, result) -> seconds`` for the wait after ``attempt``."""


class ExponentialJitter:
    """Full jitter: wait ``uniform(0, min(max, base * 2 ** (attempt - 1)))`` seconds.

    Args:
        base: The cap of the first wait, in seconds (> 0).
        max: The largest wait, in seconds.
        random: A ``random.Random`` to draw from (seed it for reproducible tests).
    """

    __slots__ = ("_random", "base", "max")

    def __init__(
        self,
        base: float = 0.1,
        *,
        max: float = 10.0,  # noqa: A002 -- the natural name, keyword-only
        random: random.Random | None = None,
    ) -> None:
        self.base = _positive("base", base)
        self.max = _positive("max", max)
        self._random = _RANDOM if random is None else check_random(random, ("uniform",))

    def ceiling(self, attempt: int) -> float:
        """The largest wait after ``attempt`` (from 1)."""
        exponent = min(attempt - 1, 1023)  # 2.0 ** 1024 overflows; * base may give inf
        return min(self.max, self.base * 2.0**exponent)

    def schedule(self) -> Schedule:
        """A schedule for one call (this strategy has no state between attempts)."""
        uniform = self._random.uniform
        ceiling = self.ceiling
        return lambda attempt, _exc, _result: uniform(0.0, ceiling(attempt))

    def __repr__(self) -> str:
        return f"ExponentialJitter({self.base!r}, max={self.max!r})"


class DecorrelatedJitter:
    """Polly's decorrelated jitter, version 2 (``Backoff.DecorrelatedJitterBackoffV2``).

    For retry *n* (from 1), with ``t = n - 1 + uniform(0, 1)``, the formula
    ``2 ** t * tanh(sqrt(4 * t))`` grows smoothly; the wait is its increase since the
    previous retry, scaled so that the median first wait is about ``median_first``, and
    capped at ``max``.

    Args:
        median_first: The median of the first wait, in seconds (> 0).
        max: The largest wait, in seconds.
        random: A ``random.Random`` to draw from.
    """

    __slots__ = ("_random", "max", "median_first")

    _P_FACTOR = 4.0
    _RP_SCALING = 1.0 / 1.4

    def __init__(
        self,
        median_first: float = 0.1,
        *,
        max: float = 30.0,  # noqa: A002 -- the natural name, keyword-only
        random: random.Random | None = None,
    ) -> None:
        self.median_first = _positive("median_first", median_first)
        self.max = _positive("max", max)
        self._random = _RANDOM if random is None else check_random(random, ("random",))

    def schedule(self) -> Schedule:
        """A schedule for one call: it remembers the formula's previous value."""
        draw = self._random.random
        scale = self._RP_SCALING * self.median_first
        cap = self.max
        previous = 0.0

        def wait(attempt: int, _exc: BaseException | None, _result: Any) -> float:
            nonlocal previous
            t = min(attempt - 1, 1000) + draw()
            value = 2.0**t * math.tanh(math.sqrt(self._P_FACTOR * t))
            delay = (value - previous) * scale
            previous = value
            return float(min(max(delay, 0.0), cap))

        return wait

    def __repr__(self) -> str:
        return f"DecorrelatedJitter({self.median_first!r}, max={self.max!r})"


_RANDOM = random.Random()  # noqa: S311 -- jitter, not cryptography


def _positive(name: str, value: object) -> float:
    return check_duration(name, value, allow_zero=False)


def as_seconds(value: object) -> float:
    """A wait as seconds: numbers and timedeltas, never negative (a user callable's value).

    NaN is 0; an int too large for a float is ``inf`` (the caller clamps it).
    """
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except OverflowError:
        return math.inf if value > 0 else 0.0  # type: ignore[operator]
    return seconds if seconds > 0.0 else 0.0


def compile_wait(wait: object, max_wait: float = MAX_WAIT) -> Callable[[], Schedule]:
    """Turn any accepted ``wait`` into a factory of per-call schedules, or raise.

    A constant above ``max_wait`` is refused; what a strategy computes is clamped to
    ``max_wait`` by the retry flow, at each attempt.
    """
    if isinstance(wait, (ExponentialJitter, DecorrelatedJitter)):
        return wait.schedule
    if callable(wait) and not isinstance(wait, type):
        fn: Callable[[int], float] = check_arity(
            "wait", wait, 1, "seconds, a wait strategy or a callable attempt -> seconds"
        )
        try:
            first = fn(1)
        except Exception as exc:
            raise ValueError(
                f"wait(1) raised {exc!r}; a callable wait must map the attempt number "
                "(from 1) to seconds"
            ) from exc
        check_duration("wait(1)", first, maximum=None)  # later values are clamped too
        schedule: Schedule = lambda attempt, _exc, _result: as_seconds(fn(attempt))  # noqa: E731
        return lambda: schedule
    seconds = check_duration("wait", wait, maximum=None)  # bounded by max_wait below
    if seconds > max_wait:
        raise ValueError(
            f"wait must be between 0 and {max_wait:g} seconds (Retry.MAX_WAIT), got {seconds!r}"
        )
    fixed: Schedule = lambda _attempt, _exc, _result: seconds  # noqa: E731
    return lambda: fixed
