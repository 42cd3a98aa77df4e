"""resilient: circuit breakers and friends, sync and async, on one metrics core.

Layout, bottom to top (a floor imports only the floors below it; ``tests/test_layers.py``
checks it):

- ``_core/``: the decisions. Each policy's state machine, sans-I/O, standard library
  only: breaker (with its windows), bulkhead, GCRA rate limiters, retry (with waits and
  budgets), timeout, fallback; the exception tree, event records, option checks.
- ``_waiting/``: where time passes. The real clock, wake-ups across threads and event
  loops, the asyncio timer, the worker threads of sync timeouts, the current deadline.
- ``_policies/``: the public policies, thin sync and async adapters over the cores,
  with ``compose``, the runners it generates, and the registry.
- Integrations, each a public package loaded only when imported:
  ``resilient.instrumentation`` (OpenTelemetry, an extra) and ``resilient.asgi``
  (middleware). ``resilient.testing`` holds a manual clock and event capture for tests.

The public API is re-exported here and nowhere else. Importing the package loads only
what a sync circuit breaker needs (no asyncio, anyio, wrapt, opentelemetry or
tenacity, and no dataclass: the event records and the snapshots are created on first
use; ``tests/test_import_cost.py``, and ``benchmarks/import_time.py`` for the time):
every other public name loads its module on first access, through ``__getattr__``
below; ``dir(resilient)`` lists them all the same.
"""

import typing as _typing

from resilient._core._breaker_state import CircuitState
from resilient._core._clock import Clock
from resilient._core._errors import (
    BulkheadFullError,
    CircuitOpenError,
    MisuseError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    TimeoutExceededError,
    WorkersExhaustedError,
)
from resilient._core._window import CountWindow, TimeWindow

# What a sync circuit breaker needs is imported now; the rest on first access.
from resilient._policies._breaker import CircuitBreaker
from resilient._version import __version__
from resilient._waiting._clock import MonotonicClock

if _typing.TYPE_CHECKING:  # loaded on first access, see __getattr__
    from resilient._core._budget import BudgetSnapshot, RetryBudget, RetryThrottle
    from resilient._core._bulkhead import BulkheadMetrics
    from resilient._core._gcra import RateLimiterMetrics
    from resilient._core._records import (
        CallFailed,
        CallIgnored,
        CallRejected,
        CallSucceeded,
        CallTimedOut,
        Event,
        FallbackUsed,
        RetriesExhausted,
        RetryScheduled,
        StateTransition,
    )
    from resilient._core._snapshots import CircuitBreakerMetrics, WindowSnapshot
    from resilient._core._timeout import TimeoutMetrics
    from resilient._core._wait import DecorrelatedJitter, ExponentialJitter
    from resilient._policies._bulkhead import Bulkhead
    from resilient._policies._compose import Composition, compose
    from resilient._policies._fallback import Fallback
    from resilient._policies._keyed_ratelimit import KeyedRateLimiter
    from resilient._policies._ratelimit import RateLimiter
    from resilient._policies._registry import Registry, default_registry
    from resilient._policies._retry import Retry, RetryMetrics
    from resilient._policies._retry_block import Attempt
    from resilient._policies._timeout import Timeout
    from resilient._waiting._deadline import remaining
    from resilient.instrumentation import Instrumentation, instrument

__all__ = [
    "Attempt",
    "BudgetSnapshot",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadMetrics",
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSucceeded",
    "CallTimedOut",
    "CircuitBreaker",
    "CircuitBreakerMetrics",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "Composition",
    "CountWindow",
    "DecorrelatedJitter",
    "Event",
    "ExponentialJitter",
    "Fallback",
    "FallbackUsed",
    "Instrumentation",
    "KeyedRateLimiter",
    "MisuseError",
    "MonotonicClock",
    "RateLimitedError",
    "RateLimiter",
    "RateLimiterMetrics",
    "Registry",
    "RejectedError",
    "ResilienceError",
    "RetriesExhausted",
    "Retry",
    "RetryBudget",
    "RetryMetrics",
    "RetryScheduled",
    "RetryThrottle",
    "StateTransition",
    "TimeWindow",
    "Timeout",
    "TimeoutExceededError",
    "TimeoutMetrics",
    "WindowSnapshot",
    "WorkersExhaustedError",
    "__version__",
    "compose",
    "default_registry",
    "instrument",
    "remaining",
]

# Names loaded on first access (PEP 562), by the module that defines them.
_LAZY = {
    "Attempt": "resilient._policies._retry_block",
    "BudgetSnapshot": "resilient._core._budget",
    "Bulkhead": "resilient._policies._bulkhead",
    "BulkheadMetrics": "resilient._core._bulkhead",
    "CallFailed": "resilient._core._records",
    "CallIgnored": "resilient._core._records",
    "CallRejected": "resilient._core._records",
    "CallSucceeded": "resilient._core._records",
    "CallTimedOut": "resilient._core._records",
    "CircuitBreakerMetrics": "resilient._core._snapshots",
    "Composition": "resilient._policies._compose",
    "DecorrelatedJitter": "resilient._core._wait",
    "Event": "resilient._core._records",
    "ExponentialJitter": "resilient._core._wait",
    "Fallback": "resilient._policies._fallback",
    "FallbackUsed": "resilient._core._records",
    "Instrumentation": "resilient.instrumentation",
    "KeyedRateLimiter": "resilient._policies._keyed_ratelimit",
    "RateLimiter": "resilient._policies._ratelimit",
    "RateLimiterMetrics": "resilient._core._gcra",
    "Registry": "resilient._policies._registry",
    "RetriesExhausted": "resilient._core._records",
    "Retry": "resilient._policies._retry",
    "RetryBudget": "resilient._core._budget",
    "RetryMetrics": "resilient._policies._retry",
    "RetryScheduled": "resilient._core._records",
    "RetryThrottle": "resilient._core._budget",
    "StateTransition": "resilient._core._records",
    "Timeout": "resilient._policies._timeout",
    "TimeoutMetrics": "resilient._core._timeout",
    "WindowSnapshot": "resilient._core._snapshots",
    "compose": "resilient._policies._compose",
    "default_registry": "resilient._policies._registry",
    "instrument": "resilient.instrumentation",
    "remaining": "resilient._waiting._deadline",
}


# -- issue 17: adaptive throttling (a block of its own, kept apart for merging) --------
if _typing.TYPE_CHECKING:
    from resilient._core._errors import ThrottledError
    from resilient._core._throttle import AdaptiveThrottleMetrics
    from resilient._policies._throttle import AdaptiveThrottle

__all__ += ["AdaptiveThrottle", "AdaptiveThrottleMetrics", "ThrottledError"]
__all__.sort()
_LAZY.update(
    {
        "AdaptiveThrottle": "resilient._policies._throttle",
        "AdaptiveThrottleMetrics": "resilient._core._throttle",
        "ThrottledError": "resilient._core._errors",
    }
)


# -- issue 17: hedged requests (a block of its own, kept apart for merging) ------------
if _typing.TYPE_CHECKING:
    from resilient._core._hedge import HedgeMetrics
    from resilient._core._records import HedgeStarted
    from resilient._policies._hedge import Hedge

__all__ += ["Hedge", "HedgeMetrics", "HedgeStarted"]
__all__.sort()
_LAZY.update(
    {
        "Hedge": "resilient._policies._hedge",
        "HedgeMetrics": "resilient._core._hedge",
        "HedgeStarted": "resilient._core._records",
    }
)


def _public(obj: _typing.Any) -> _typing.Any:
    # Reprs, tracebacks and docs say `resilient.CircuitBreaker`, not the private module.
    if getattr(obj, "__module__", "").startswith("resilient._"):
        obj.__module__ = __name__
    return obj


for _name in __all__:
    if _name not in _LAZY:
        _public(globals()[_name])
del _name


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415 -- on first access only
    import sys  # noqa: PLC0415

    importlib.import_module(module)
    # Every public name whose module is loaded by now (this one may have loaded others)
    # becomes a plain attribute, its repr saying `resilient.X`.
    for other, where in _LAZY.items():
        value = getattr(sys.modules.get(where), other, None)  # None: not (yet) defined
        if value is not None and other not in globals():
            globals()[other] = _public(value)
    return globals()[name]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


# -- issue 17: the adaptive limiter (a block of its own, to ease merging) --------------
if _typing.TYPE_CHECKING:
    # Redundant aliases: re-exports, listed in __all__ below.
    from resilient._core._adaptive_parts import AdaptiveLimiterMetrics as AdaptiveLimiterMetrics
    from resilient._core._adaptive_parts import PartitionMetrics as PartitionMetrics
    from resilient._core._limit_algorithms import AIMD as AIMD
    from resilient._core._limit_algorithms import Gradient2 as Gradient2
    from resilient._core._limit_algorithms import Vegas as Vegas
    from resilient._core._records import LimitChanged as LimitChanged
    from resilient._policies._adaptive import AdaptiveLimiter as AdaptiveLimiter
    from resilient._policies._adaptive import AdaptivePartition as AdaptivePartition

_ADAPTIVE = {
    "AIMD": "resilient._core._limit_algorithms",
    "AdaptiveLimiter": "resilient._policies._adaptive",
    "AdaptiveLimiterMetrics": "resilient._core._adaptive_parts",
    "AdaptivePartition": "resilient._policies._adaptive",
    "Gradient2": "resilient._core._limit_algorithms",
    "LimitChanged": "resilient._core._records",
    "PartitionMetrics": "resilient._core._adaptive_parts",
    "Vegas": "resilient._core._limit_algorithms",
}
_LAZY.update(_ADAPTIVE)
__all__ += list(_ADAPTIVE)
__all__.sort()
del _ADAPTIVE


# -- issue 19: reconfiguration (a block of its own, to ease merging) -------------------
if _typing.TYPE_CHECKING:
    from resilient._core._records import Reconfigured as Reconfigured

_LAZY["Reconfigured"] = "resilient._core._records"
__all__ += ["Reconfigured"]
__all__.sort()

# -- issue 19: coalescing and caching (a block of its own, to ease merging) ------------
if _typing.TYPE_CHECKING:
    # Redundant aliases: re-exports, listed in __all__ below.
    from resilient._core._cache import CacheMetrics as CacheMetrics
    from resilient._core._cache import CacheStatus as CacheStatus
    from resilient._core._coalesce import CoalesceMetrics as CoalesceMetrics
    from resilient._core._records import CallCoalesced as CallCoalesced
    from resilient._core._records import StaleValueServed as StaleValueServed
    from resilient._policies._cache import Cache as Cache
    from resilient._policies._cache import cache_status as cache_status
    from resilient._policies._coalesce import Coalesce as Coalesce

_COALESCING = {
    "Cache": "resilient._policies._cache",
    "CacheMetrics": "resilient._core._cache",
    "CacheStatus": "resilient._core._cache",
    "CallCoalesced": "resilient._core._records",
    "Coalesce": "resilient._policies._coalesce",
    "CoalesceMetrics": "resilient._core._coalesce",
    "StaleValueServed": "resilient._core._records",
    "cache_status": "resilient._policies._cache",
}
_LAZY.update(_COALESCING)
__all__ += list(_COALESCING)
__all__.sort()
del _COALESCING
