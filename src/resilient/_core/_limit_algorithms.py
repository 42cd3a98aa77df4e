"""How an adaptive concurrency limit moves: AIMD, Vegas and Gradient2, sans I/O.

The rules and defaults are those of Netflix's *concurrency-limits* (its ``AIMDLimit``,
``VegasLimit`` and ``Gradient2Limit``), written anew; the rules themselves are pure
functions in ``_limit_rules``. The public classes :class:`AIMD`, :class:`Vegas` and
:class:`Gradient2` are immutable configurations; ``start()`` makes the per-limiter state
that carries what the rule needs between samples (Vegas' no-load RTT, Gradient2's
long-term average). One configuration may thus serve many limiters, each on its own.

Times are seconds (floats); the limit is kept as a float estimate, of which the
limiter enforces the integer part, as the reference does.
"""

from __future__ import annotations

import random as _random
from typing import Any, Final, Protocol

from resilient._core._limit_rules import aimd_limit, gradient2_limit, vegas_limit
from resilient._core._validate import check_duration, check_int, check_number, check_random

__all__ = ["AIMD", "Gradient2", "LimitAlgorithm", "LimitState", "Vegas"]

_RANDOM: Final = _random.Random()  # noqa: S311 -- probe jitter, not cryptography

MAX_LIMIT: Final = 1_000_000
"""The largest limit any algorithm accepts."""


# -- configurations and their states ---------------------------------------------------


class LimitState(Protocol):
    """One limiter's running algorithm: its estimate, moved by each sample."""

    estimate: float

    def update(self, rtt: float, inflight: int, dropped: bool) -> float:
        """Take one sample (seconds, calls in flight, dropped?); return the new estimate."""
        ...


class LimitAlgorithm(Protocol):
    """A configuration that starts a :class:`LimitState` for each limiter."""

    initial_limit: int
    min_limit: int
    max_limit: int

    def start(self, random: Any = None) -> LimitState:
        """A fresh state, starting at ``initial_limit``."""
        ...


def _bounds(initial: object, low: object, high: object) -> tuple[int, int, int]:
    """Check ``min_limit <= initial_limit <= max_limit``, each an int in [1, MAX_LIMIT]."""
    lo = check_int("min_limit", low, maximum=MAX_LIMIT)
    hi = check_int("max_limit", high, maximum=MAX_LIMIT)
    init = check_int("initial_limit", initial, maximum=MAX_LIMIT)
    if lo > hi:
        raise ValueError(f"min_limit must be <= max_limit, got {lo} > {hi}")
    if not lo <= init <= hi:
        raise ValueError(
            f"initial_limit must be between min_limit and max_limit ({lo}..{hi}), got {init}"
        )
    return init, lo, hi


def _smoothing(value: object) -> float:
    return check_number("smoothing", value, minimum=0.0, inclusive=False, maximum=1.0)


class _Config:
    """Immutable after construction; equal and hashable by options."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    def _options(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._options() == other._options()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._options()))

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{type(self).__name__}({shown})"


class AIMD(_Config):
    """Additive increase, multiplicative decrease: a loss-based limit.

    The limit grows by 1 per sample while it is in use (``inflight * 2 >= limit``) and
    is multiplied by ``backoff_ratio`` on a drop: a call classified as overload (a
    timeout, by default) or a round trip longer than ``timeout``. It ignores latency
    otherwise, so it suits dependencies that say when they are overloaded.

    Args:
        initial_limit: The limit to start from.
        min_limit: The lowest limit (>= 1).
        max_limit: The highest limit.
        backoff_ratio: The factor applied on a drop, in [0.5, 1).
        timeout: A round trip longer than this many seconds counts as a drop.
    """

    __slots__ = ("backoff_ratio", "initial_limit", "max_limit", "min_limit", "timeout")
    _fields = ("initial_limit", "min_limit", "max_limit", "backoff_ratio", "timeout")

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        backoff_ratio: float = 0.9,
        timeout: float = 5.0,
    ) -> None:
        init, lo, hi = _bounds(initial_limit, min_limit, max_limit)
        self.initial_limit, self.min_limit, self.max_limit = init, lo, hi
        ratio = check_number("backoff_ratio", backoff_ratio, minimum=0.5, maximum=1.0)
        if ratio >= 1.0:
            raise ValueError(f"backoff_ratio must be >= 0.5 and < 1, got {backoff_ratio!r}")
        self.backoff_ratio = ratio
        self.timeout = check_duration("timeout", timeout, allow_zero=False)

    def start(self, random: Any = None) -> _AIMDState:
        """A fresh state at ``initial_limit``."""
        return _AIMDState(self)


class _AIMDState:
    __slots__ = ("_config", "estimate")

    def __init__(self, config: AIMD) -> None:
        self._config = config
        self.estimate = float(config.initial_limit)

    def update(self, rtt: float, inflight: int, dropped: bool) -> float:
        c = self._config
        self.estimate = float(
            aimd_limit(
                int(self.estimate),
                rtt,
                inflight,
                dropped,
                backoff_ratio=c.backoff_ratio,
                timeout=c.timeout,
                min_limit=c.min_limit,
                max_limit=c.max_limit,
            )
        )
        return self.estimate


class Vegas(_Config):
    """TCP Vegas: a delay-based limit measured against the no-load round trip.

    The smallest RTT seen is the no-load RTT; the excess of a sample over it estimates
    the queue the limit builds (``queue = ceil(L * (1 - rtt_noload / rtt))``). With
    ``s = log10(L)`` (at least 1; ``sqrt(L)`` from 1000): no queue grows the limit by
    ``beta * s``, a small one (< ``alpha * s``) by ``s``; a queue over ``beta * s``, or a
    drop, shrinks it by ``s``. Every ``probe_multiplier * L`` samples or so (jittered by
    a factor in [0.5, 1)) the no-load RTT is measured afresh, so that it follows a
    dependency that became slower for good.

    Args:
        initial_limit: The limit to start from.
        min_limit: The lowest limit.
        max_limit: The highest limit.
        alpha: Queue below ``alpha * log10(L)``: grow by ``log10(L)``.
        beta: Queue above ``beta * log10(L)``: shrink; no queue: grow by ``beta * log10(L)``.
        smoothing: The weight of the new value against the old, in (0, 1].
        probe_multiplier: Re-probe the no-load RTT every ``probe_multiplier * L`` samples.
    """

    __slots__ = (
        "alpha",
        "beta",
        "initial_limit",
        "max_limit",
        "min_limit",
        "probe_multiplier",
        "smoothing",
    )
    _fields = (
        "initial_limit",
        "min_limit",
        "max_limit",
        "alpha",
        "beta",
        "smoothing",
        "probe_multiplier",
    )

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 1000,
        alpha: float = 3.0,
        beta: float = 6.0,
        smoothing: float = 1.0,
        probe_multiplier: int = 30,
    ) -> None:
        init, lo, hi = _bounds(initial_limit, min_limit, max_limit)
        self.initial_limit, self.min_limit, self.max_limit = init, lo, hi
        self.alpha = check_number("alpha", alpha, minimum=0.0, inclusive=False, maximum=1e6)
        self.beta = check_number("beta", beta, minimum=0.0, inclusive=False, maximum=1e6)
        if self.beta < self.alpha:
            raise ValueError(f"beta must be >= alpha, got beta={beta!r} < alpha={alpha!r}")
        self.smoothing = _smoothing(smoothing)
        self.probe_multiplier = check_int("probe_multiplier", probe_multiplier, maximum=1_000_000)

    def start(self, random: Any = None) -> _VegasState:
        """A fresh state at ``initial_limit``, its probes jittered by ``random``."""
        return _VegasState(self, _RANDOM if random is None else check_random(random, ("uniform",)))


class _VegasState:
    __slots__ = ("_config", "_jitter", "_random", "estimate", "probe_count", "rtt_noload")

    def __init__(self, config: Vegas, random: Any) -> None:
        self._config = config
        self._random = random
        self.estimate = float(config.initial_limit)
        self.rtt_noload = 0.0  # 0: none measured yet
        self.probe_count = 0
        self._jitter = random.uniform(0.5, 1.0)

    def update(self, rtt: float, inflight: int, dropped: bool) -> float:
        c = self._config
        self.probe_count += 1
        if self._jitter * c.probe_multiplier * self.estimate <= self.probe_count:
            # Re-probe: this sample is the new no-load RTT, whatever it is.
            self._jitter = self._random.uniform(0.5, 1.0)
            self.probe_count = 0
            self.rtt_noload = rtt
            return self.estimate
        if self.rtt_noload == 0.0 or rtt < self.rtt_noload:
            self.rtt_noload = rtt
            return self.estimate
        self.estimate = vegas_limit(
            self.estimate,
            self.rtt_noload,
            rtt,
            inflight,
            dropped,
            alpha=c.alpha,
            beta=c.beta,
            smoothing=c.smoothing,
            min_limit=c.min_limit,
            max_limit=c.max_limit,
        )
        return self.estimate


class Gradient2(_Config):
    """Gradient2: a delay-based limit measured against a long-term average round trip.

    The recent RTT (a window's average) is compared with an exponential moving average
    over ``long_window`` samples: ``gradient = clamp(tolerance * long / short, 0.5, 1)``,
    then ``new = L * gradient + queue_size``, smoothed and clamped. Averages rather than
    minimums make it robust to bursty latencies; when the long average drifts above
    twice the recent RTT (latency is back to normal after a long overload) it decays by
    5% per sample rather than waiting for the average. Netflix's recommended default.

    Args:
        initial_limit: The limit to start from.
        min_limit: The lowest limit.
        max_limit: The highest limit.
        smoothing: The weight of the new value against the old, in (0, 1].
        queue_size: The headroom added to ``L * gradient`` (>= 0).
        long_window: Samples in the long-term average (its weight is ``2 / (n + 1)``).
        tolerance: How much slower than the long-term RTT the recent one may be before
            the limit shrinks (>= 1).
    """

    __slots__ = (
        "initial_limit",
        "long_window",
        "max_limit",
        "min_limit",
        "queue_size",
        "smoothing",
        "tolerance",
    )
    _fields = (
        "initial_limit",
        "min_limit",
        "max_limit",
        "smoothing",
        "queue_size",
        "long_window",
        "tolerance",
    )

    #: Samples averaged plainly before the long-term average becomes exponential.
    WARMUP: Final = 10
    #: How far above the recent RTT the long average may drift before it decays.
    DRIFT: Final = 2.0
    #: The long average's decay per sample while it is over ``DRIFT`` times the recent RTT.
    DECAY: Final = 0.95

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 20,
        max_limit: int = 200,
        smoothing: float = 0.2,
        queue_size: int = 4,
        long_window: int = 600,
        tolerance: float = 1.5,
    ) -> None:
        init, lo, hi = _bounds(initial_limit, min_limit, max_limit)
        self.initial_limit, self.min_limit, self.max_limit = init, lo, hi
        self.smoothing = _smoothing(smoothing)
        self.queue_size = check_int("queue_size", queue_size, minimum=0, maximum=MAX_LIMIT)
        self.long_window = check_int("long_window", long_window, maximum=MAX_LIMIT)
        self.tolerance = check_number("tolerance", tolerance, minimum=1.0, maximum=1e6)

    def start(self, random: Any = None) -> _Gradient2State:
        """A fresh state at ``initial_limit``, with no long-term RTT yet."""
        return _Gradient2State(self)


class _Gradient2State:
    __slots__ = ("_config", "_count", "_sum", "estimate", "long_rtt")

    def __init__(self, config: Gradient2) -> None:
        self._config = config
        self.estimate = float(config.initial_limit)
        self.long_rtt = 0.0
        self._count = 0
        self._sum = 0.0

    def _average(self, rtt: float) -> float:
        if self._count < Gradient2.WARMUP:
            self._count += 1
            self._sum += rtt
            self.long_rtt = self._sum / self._count
        else:
            factor = 2.0 / (self._config.long_window + 1)
            self.long_rtt = self.long_rtt * (1.0 - factor) + rtt * factor
        return self.long_rtt

    def update(self, rtt: float, inflight: int, dropped: bool) -> float:
        c = self._config
        long_rtt = self._average(rtt)
        if long_rtt / rtt > Gradient2.DRIFT:
            self.long_rtt *= Gradient2.DECAY
        self.estimate = gradient2_limit(
            self.estimate,
            rtt,
            long_rtt,
            inflight,
            tolerance=c.tolerance,
            queue_size=c.queue_size,
            smoothing=c.smoothing,
            min_limit=c.min_limit,
            max_limit=c.max_limit,
        )
        return self.estimate
