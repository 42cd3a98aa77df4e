"""Each policy's call counts by outcome, since it was created, read from its metrics.

One table for every reader of the counts: the OpenTelemetry instruments
(``instrumentation._readings``) and the dashboard (``resilient.dashboard``). It imports
no exporter, so a reader without opentelemetry installed can use it; a kind added to the
library registers its reader in ``OUTCOMES`` here, and both report it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

from resilient._policies._adaptive import AdaptiveLimiter
from resilient._policies._breaker import CircuitBreaker
from resilient._policies._bulkhead import Bulkhead
from resilient._policies._cache import Cache
from resilient._policies._coalesce import Coalesce
from resilient._policies._fallback import Fallback
from resilient._policies._hedge import Hedge
from resilient._policies._keyed_ratelimit import KeyedRateLimiter
from resilient._policies._policy import CorePolicy
from resilient._policies._ratelimit import RateLimiter
from resilient._policies._retry import Retry
from resilient._policies._throttle import AdaptiveThrottle
from resilient._policies._timeout import Timeout

__all__ = ["OUTCOMES", "nearest_rank", "outcomes"]


def _breaker_outcomes(breaker: CircuitBreaker) -> dict[str, int]:
    m = breaker.metrics()
    return {
        "success": m.total_successful_calls,
        "failure": m.total_failed_calls,
        "ignored": m.total_ignored_calls,
        "rejected": m.total_not_permitted_calls,
    }


def _timeout_outcomes(timeout: Timeout) -> dict[str, int]:
    m = timeout.metrics()
    return {"admitted": m.admitted, "timeout": m.timeouts, "rejected": m.rejected}


def _bulkhead_outcomes(bulkhead: Bulkhead) -> dict[str, int]:
    m = bulkhead.metrics()
    return {"admitted": m.admitted, "rejected": m.rejected}


def _limiter_outcomes(limiter: RateLimiter | KeyedRateLimiter) -> dict[str, int]:
    m = limiter.metrics()
    return {"admitted": m.admitted, "rejected": m.rejected}


def _retry_outcomes(retry: Retry) -> dict[str, int]:
    m = retry.metrics()
    return {
        "retry": m.retries,
        "recovered": m.recovered,
        "exhausted": m.exhausted,
        "deadline": m.deadline_give_ups,
        "budget_refused": m.budget_refusals,
        "stopped": m.stopped,
        "first_attempt": m.first_attempt,
    }


# A policy's call counts by outcome, since it was created, by the policy's class.
OUTCOMES: Final[dict[type, Callable[[Any], dict[str, int]]]] = {
    CircuitBreaker: _breaker_outcomes,
    Bulkhead: _bulkhead_outcomes,
    Timeout: _timeout_outcomes,
    RateLimiter: _limiter_outcomes,
    KeyedRateLimiter: _limiter_outcomes,
    Retry: _retry_outcomes,
    Fallback: lambda f: {"fallback": f.used},
}


# -- issue 17: adaptive throttling (kept apart for merging) ---------------------------


def _throttle_outcomes(throttle: AdaptiveThrottle) -> dict[str, int]:
    # As a breaker's: the backend accepted (success) or not (failure), or neither.
    m = throttle.metrics()
    return {
        "success": m.accepted,
        "failure": m.failed,
        "ignored": m.ignored,
        "rejected": m.rejected,
    }


OUTCOMES[AdaptiveThrottle] = _throttle_outcomes


def _hedge_outcomes(hedge: Hedge) -> dict[str, int]:
    # Calls end answered by the first attempt, by a hedge, or failed; "hedge" counts
    # extra attempts (not calls), "cancelled" the losers.
    m = hedge.metrics()
    return {
        "first_attempt": m.first_wins,
        "hedge_won": m.hedge_wins,
        "failed": m.failed,
        "hedge": m.hedges,
        "cancelled": m.cancelled,
        "budget_refused": m.budget_refused,
    }


OUTCOMES[Hedge] = _hedge_outcomes


# -- issue 17: the adaptive limiter's outcomes (a block of its own) --------------------


def _adaptive_outcomes(limiter: AdaptiveLimiter) -> dict[str, int]:
    m = limiter.metrics()
    return {"admitted": m.admitted, "rejected": m.rejected, "dropped": m.dropped}


OUTCOMES[AdaptiveLimiter] = _adaptive_outcomes


# -- issue 19: coalescing and caching (a block of its own) -----------------------------


def _coalesce_outcomes(coalesce: Coalesce) -> dict[str, int]:
    # A leader ran the function; a follower shared a leader's call instead.
    m = coalesce.metrics()
    return {"leader": m.leaders, "follower": m.followers}


def _cache_outcomes(cache: Cache) -> dict[str, int]:
    # One outcome per call: a stale answer is a miss whose call failed, counted apart.
    m = cache.metrics()
    return {"hit": m.hits, "miss": m.misses - m.stale_served, "stale": m.stale_served}


OUTCOMES[Coalesce] = _coalesce_outcomes
OUTCOMES[Cache] = _cache_outcomes


def outcomes(policy: CorePolicy[Any]) -> dict[str, int]:
    for cls in type(policy).__mro__:  # a user's subclass reports as its base
        read = OUTCOMES.get(cls)
        if read is not None:
            return read(policy)
    # A policy of an integration (resilient.chaos) reports its own counts, so that this
    # floor imports none of them.
    own = getattr(policy, "_call_outcomes", None)
    return own() if own is not None else {}


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (in (0, 1]) of non-empty ``ordered`` values, by nearest rank."""
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]
