"""The update rules of the adaptive limits: pure functions of one sample.

Netflix's *concurrency-limits* rules (``AIMDLimit``, ``VegasLimit``, ``Gradient2Limit``),
written anew: each takes the current limit and one sample (a round-trip time in
seconds, the calls in flight, whether the call was dropped) and returns the next limit,
so the tests check each against its published formula directly. The state they need
between samples (Vegas' no-load RTT, Gradient2's long-term average) is kept by the
algorithms in ``_limit_algorithms``.
"""

from __future__ import annotations

import math
from typing import Final

__all__ = ["aimd_limit", "gradient2_limit", "log10_root", "vegas_limit"]

_SQRT_FROM: Final = 1000  # the reference's log10 table ends here; sqrt takes over


def log10_root(limit: float) -> int:
    """The reference's step size: ``max(1, floor(log10 L))`` below 1000, ``floor(sqrt L)`` above.

    ``L`` is truncated to an int first, as the reference does.
    """
    n = int(limit)
    if n < _SQRT_FROM:
        return max(1, int(math.log10(n))) if n >= 1 else 1
    return math.isqrt(n)


def aimd_limit(
    limit: int,
    rtt: float,
    inflight: int,
    dropped: bool,
    *,
    backoff_ratio: float = 0.9,
    timeout: float = 5.0,
    min_limit: int = 1,
    max_limit: int = 200,
) -> int:
    """AIMD: on a drop (or an RTT over ``timeout``) multiply by ``backoff_ratio``, else +1.

    The increase happens only when the limit is in use (``inflight * 2 >= limit``): an
    idle limiter must not drift up. The decrease is at least 1, so small limits shrink
    too. The result is clamped to ``[min_limit, max_limit]``.
    """
    if dropped or rtt > timeout:
        new = min(limit - 1, int(limit * backoff_ratio))
    elif inflight * 2 >= limit:
        new = limit + 1
    else:
        return limit
    return max(min_limit, min(max_limit, new))


def vegas_limit(
    limit: float,
    rtt_noload: float,
    rtt: float,
    inflight: int,
    dropped: bool,
    *,
    alpha: float = 3.0,
    beta: float = 6.0,
    threshold: float = 1.0,
    smoothing: float = 1.0,
    min_limit: int = 1,
    max_limit: int = 1000,
) -> float:
    """TCP Vegas: estimate the queue from the RTT's excess over the no-load RTT.

    ``queue = ceil(L * (1 - rtt_noload / rtt))``; with ``s = log10_root(L)``: a drop gives
    ``L - s``; an idle limiter (``inflight * 2 < L``) holds; otherwise a queue up to
    ``threshold * s`` gives ``L + beta * s``, under ``alpha * s`` gives ``L + s``, over
    ``beta * s`` gives ``L - s``, and in between holds. The new value is clamped to
    ``[min_limit, max_limit]`` and smoothed: ``(1 - smoothing) * L + smoothing * new``.
    """
    queue = math.ceil(limit * (1.0 - rtt_noload / rtt))
    step = log10_root(limit)
    if dropped:
        new = limit - step
    elif inflight * 2 < limit:
        return limit
    elif queue <= int(threshold * step):
        new = limit + int(beta * step)
    elif queue < int(alpha * step):
        new = limit + step
    elif queue > int(beta * step):
        new = limit - step
    else:
        return limit
    new = max(min_limit, min(max_limit, new))
    return (1.0 - smoothing) * limit + smoothing * new


def gradient2_limit(
    limit: float,
    short_rtt: float,
    long_rtt: float,
    inflight: int,
    *,
    tolerance: float = 1.5,
    queue_size: float = 4.0,
    smoothing: float = 0.2,
    min_limit: int = 20,
    max_limit: int = 200,
) -> float:
    """Gradient2: follow the ratio of the long-term RTT to the recent one.

    ``gradient = clamp(tolerance * long / short, 0.5, 1)``; ``new = L * gradient +
    queue_size``, smoothed (``(1 - smoothing) * L + smoothing * new``) and clamped to
    ``[min_limit, max_limit]``. An idle limiter (``inflight < L / 2``) holds.
    """
    if inflight < limit / 2:
        return limit
    gradient = max(0.5, min(1.0, tolerance * long_rtt / short_rtt))
    new = limit * gradient + queue_size
    new = limit * (1.0 - smoothing) + new * smoothing
    return max(float(min_limit), min(float(max_limit), new))
