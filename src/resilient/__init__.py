"""resilient: circuit breakers and friends, sync and async, on one metrics core.

Layout: the public API is re-exported here and nowhere else. Every implementation
module is private (``_name.py``) and holds one concept: ``_clock`` (time),
``_errors`` (the exception tree), ``_events`` (event records and listeners),
``_window`` (sliding windows, the metrics core), ``_validate`` (option checks),
``_decorate`` (turning guards into decorators), ``_pipeline`` (the one adapter:
sync and async runners over policy steps), ``_policy`` (the base class every policy
shares), ``_compose``; then one module (or a core/adapter pair) per policy:
``_breaker_core``/``_breaker``, ``_bulkhead_core``/``_bulkhead``, ``_timeout`` (with
``_timer``, ``_workers`` and ``_deadline``), ``_fallback``, ``_retry`` (with
``_wait`` and ``_budget``), ``_ratelimit`` (and ``_keyed_ratelimit``); ``_registry``
holds policies by name; ``_instrument`` (OpenTelemetry metrics, read by
``_readings``) and ``_tracing`` (span events) report them; ``_atomic`` counts without
locks; ``_waiters`` wakes callers across threads and event loops.
``resilient.testing`` is public: a manual clock and event capture for tests.
``resilient.asgi`` is public too (not re-exported here, so importing ``resilient``
costs nothing for it): the ASGI middleware, over ``_asgi`` (the middleware),
``_asgi_exchange`` (one request's outcome, held-back response, replayed body),
``_asgi_policies`` (retries and timeouts adapted to requests), ``_asgi_routes``,
``_asgi_deadline``, ``_asgi_problem`` and ``_asgi_types``.
"""

from resilient._breaker import CircuitBreaker
from resilient._breaker_state import CircuitBreakerMetrics, CircuitState
from resilient._budget import BudgetSnapshot, RetryBudget, RetryThrottle
from resilient._bulkhead import Bulkhead
from resilient._bulkhead_core import BulkheadMetrics
from resilient._clock import Clock, MonotonicClock
from resilient._compose import Composition, compose
from resilient._deadline import remaining
from resilient._errors import (
    BulkheadFullError,
    CircuitOpenError,
    MisuseError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    TimeoutExceededError,
    WorkersExhaustedError,
)
from resilient._events import (
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
from resilient._fallback import Fallback
from resilient._instrument import Instrumentation, instrument
from resilient._keyed_ratelimit import KeyedRateLimiter
from resilient._ratelimit import RateLimiter, RateLimiterMetrics
from resilient._registry import Registry, default_registry
from resilient._retry import Retry, RetryMetrics
from resilient._retry_block import Attempt
from resilient._timeout import Timeout, TimeoutMetrics
from resilient._version import __version__
from resilient._wait import DecorrelatedJitter, ExponentialJitter
from resilient._window import CountWindow, TimeWindow, WindowSnapshot

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

# Reprs, tracebacks and docs say `resilient.CircuitBreaker`, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient._"):
        _obj.__module__ = __name__
del _name, _obj
