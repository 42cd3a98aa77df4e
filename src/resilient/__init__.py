"""resilient: circuit breakers and friends, sync and async, on one metrics core.

Layout: the public API is re-exported here and nowhere else. Every implementation
module is private (``_name.py``) and holds one concept: ``_clock`` (time),
``_errors`` (the exception tree), ``_events`` (event records and listeners),
``_window`` (sliding windows, the metrics core), ``_validate`` (option checks),
``_decorate`` (turning guards into decorators), and one pair per policy: a sans-I/O
core (``_breaker_core``) and its sync/async adapters (``_breaker``).
``resilient.testing`` is public: a manual clock and event capture for tests.
"""

from resilient._breaker import CircuitBreaker
from resilient._breaker_core import CircuitBreakerMetrics, CircuitState
from resilient._clock import Clock, MonotonicClock
from resilient._errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    TimeoutExceededError,
)
from resilient._events import (
    CallFailed,
    CallIgnored,
    CallRejected,
    CallSucceeded,
    Event,
    StateTransition,
)
from resilient._version import __version__
from resilient._window import CountWindow, TimeWindow, WindowSnapshot

__all__ = [
    "BulkheadFullError",
    "CallFailed",
    "CallIgnored",
    "CallRejected",
    "CallSucceeded",
    "CircuitBreaker",
    "CircuitBreakerMetrics",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CountWindow",
    "Event",
    "MonotonicClock",
    "RateLimitedError",
    "RejectedError",
    "ResilienceError",
    "StateTransition",
    "TimeWindow",
    "TimeoutExceededError",
    "WindowSnapshot",
    "__version__",
]

# Reprs, tracebacks and docs say `resilient.CircuitBreaker`, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient._"):
        _obj.__module__ = __name__
del _name, _obj
