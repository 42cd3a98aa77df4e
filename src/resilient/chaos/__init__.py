"""Fault injection for game days: break things on purpose, under control.

Three policies inject on a share of the calls (``rate``), drawn from their own seeded
``random.Random``, while their ``enabled`` switch (a bool, or a callable read per call:
a feature flag, an environment variable) is on::

    from resilient import CircuitBreaker, Fallback, Retry, Timeout, compose
    from resilient.chaos import InjectFault, InjectLatency

    quotes = compose(
        Fallback(lambda exc: CACHED_QUOTE),
        Retry(attempts=3),
        CircuitBreaker("quotes"),
        Timeout(1.5),
        InjectFault(ConnectionError, rate=0.3, enabled=chaos_flag),
        InjectLatency(2.0, rate=0.1, enabled=chaos_flag),
    )

[`InjectFault`][resilient.chaos.InjectFault] raises instead of calling,
[`InjectLatency`][resilient.chaos.InjectLatency] waits first (on its clock, so
``ManualClock`` makes it virtual), [`InjectResult`][resilient.chaos.InjectResult] answers
instead of calling. [`ChaosMiddleware`][resilient.chaos.ChaosMiddleware] injects into an
ASGI service's requests (on chosen routes, on requests carrying a header, never on
health checks). Loaded only when imported: ``import resilient`` does not load it.
See ``docs/chaos.md``.
"""

from resilient._core._chaos import ChaosMetrics, FaultInjected, LatencyInjected, ResultInjected
from resilient._policies._chaos import InjectFault, InjectLatency, InjectResult
from resilient.chaos._asgi import HEALTH_PATHS, ChaosMiddleware

__all__ = [
    "HEALTH_PATHS",
    "ChaosMetrics",
    "ChaosMiddleware",
    "FaultInjected",
    "InjectFault",
    "InjectLatency",
    "InjectResult",
    "LatencyInjected",
    "ResultInjected",
]

# Reprs, tracebacks and docs say `resilient.chaos.InjectFault`, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(("resilient._", "resilient.chaos._")):
        _obj.__module__ = __name__
del _name, _obj
