"""requests integration: the library's policies around every request of a Session.

::

    import requests
    from resilient import CircuitBreaker, Retry, compose
    from resilient.requests import ResilienceAdapter

    session = requests.Session()
    session.mount(
        "https://",
        ResilienceAdapter(lambda name: compose(Retry(attempts=3), CircuitBreaker(name))),
    )

Only this module imports requests; ``import resilient`` never does. The logic is
shared with ``resilient.httpx`` (``resilient._http``); this shell only sends. See
``docs/http-clients.md``.
"""

from resilient._http._classify import HTTPStatusFailure, is_failure_status
from resilient._http._hosts import HostMetrics
from resilient.requests._adapter import ResilienceAdapter

__all__ = ["HTTPStatusFailure", "HostMetrics", "ResilienceAdapter", "is_failure_status"]

# Reprs, tracebacks and docs say `resilient.requests.ResilienceAdapter`.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient.requests."):
        _obj.__module__ = __name__
del _name, _obj
