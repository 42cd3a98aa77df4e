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
holds policies by name; ``_breaker_timing`` lets an exporter ask named breakers for
call durations; ``_atomic`` counts without locks; ``_waiters`` wakes callers across
threads and event loops. ``resilient.instrumentation`` (``_instrument``, ``_readings``,
``_tracing``) is the OpenTelemetry wing, an extra.

Importing the package loads only what a sync circuit breaker needs (no asyncio, anyio,
wrapt, opentelemetry or tenacity; ``tests/test_import_cost.py``, and
``benchmarks/import_time.py`` for the time): every other public name (the other
policies, ``compose``, the registry, ``instrument``) loads its module on first access,
through ``__getattr__`` below; ``dir(resilient)`` lists them all the same.
``resilient.testing`` is public: a manual clock and event capture for tests.
``resilient.asgi`` is a public package (not imported here, so importing ``resilient``
costs nothing for it): the ASGI middleware, over its private modules ``_middleware``,
``_exchange`` (one request's outcome, held-back response, replayed body),
``_policies`` (retries and timeouts adapted to requests), ``_routes``, ``_deadline``,
``_problem`` and ``_types``.
"""

import typing as _typing

# What a sync circuit breaker needs is imported now; the rest on first access.
from resilient._breaker import CircuitBreaker
from resilient._breaker_state import CircuitBreakerMetrics, CircuitState
from resilient._clock import Clock, MonotonicClock
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
from resilient._version import __version__
from resilient._window import CountWindow, TimeWindow, WindowSnapshot

if _typing.TYPE_CHECKING:  # loaded on first access, see __getattr__
    from resilient._budget import BudgetSnapshot, RetryBudget, RetryThrottle
    from resilient._bulkhead import Bulkhead
    from resilient._bulkhead_core import BulkheadMetrics
    from resilient._compose import Composition, compose
    from resilient._deadline import remaining
    from resilient._fallback import Fallback
    from resilient._keyed_ratelimit import KeyedRateLimiter
    from resilient._ratelimit import RateLimiter, RateLimiterMetrics
    from resilient._registry import Registry, default_registry
    from resilient._retry import Retry, RetryMetrics
    from resilient._retry_block import Attempt
    from resilient._timeout import Timeout, TimeoutMetrics
    from resilient._wait import DecorrelatedJitter, ExponentialJitter
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
    "Attempt": "resilient._retry_block",
    "BudgetSnapshot": "resilient._budget",
    "Bulkhead": "resilient._bulkhead",
    "BulkheadMetrics": "resilient._bulkhead_core",
    "Composition": "resilient._compose",
    "DecorrelatedJitter": "resilient._wait",
    "ExponentialJitter": "resilient._wait",
    "Fallback": "resilient._fallback",
    "Instrumentation": "resilient.instrumentation",
    "KeyedRateLimiter": "resilient._keyed_ratelimit",
    "RateLimiter": "resilient._ratelimit",
    "RateLimiterMetrics": "resilient._ratelimit",
    "Registry": "resilient._registry",
    "Retry": "resilient._retry",
    "RetryBudget": "resilient._budget",
    "RetryMetrics": "resilient._retry",
    "RetryThrottle": "resilient._budget",
    "Timeout": "resilient._timeout",
    "TimeoutMetrics": "resilient._timeout",
    "compose": "resilient._compose",
    "default_registry": "resilient._registry",
    "instrument": "resilient.instrumentation",
    "remaining": "resilient._deadline",
}


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
