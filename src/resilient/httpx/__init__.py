"""httpx integration: the library's policies around every request of an httpx client.

::

    import httpx
    from resilient import CircuitBreaker, Retry, compose
    from resilient.httpx import ResilienceTransport

    transport = ResilienceTransport(
        lambda name: compose(Retry(attempts=3), CircuitBreaker(name)),  # one per host
        name="payments",
    )
    client = httpx.Client(transport=transport)  # or httpx.AsyncClient(transport=...)

Only this module imports httpx; ``import resilient`` never does. The logic is shared
with ``resilient.requests`` (``resilient._http``); this shell only sends. See
``docs/http-clients.md``.
"""

from resilient._http._classify import HTTPStatusFailure, is_failure_status
from resilient._http._hosts import HostMetrics
from resilient.httpx._transport import ResilienceTransport

__all__ = ["HTTPStatusFailure", "HostMetrics", "ResilienceTransport", "is_failure_status"]

# Reprs, tracebacks and docs say `resilient.httpx.ResilienceTransport`. The names shared
# with resilient.requests keep their own module: the same class under either name.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient.httpx."):
        _obj.__module__ = __name__
del _name, _obj
