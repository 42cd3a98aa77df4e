"""ASGI middleware: guard a web service's requests with the library's policies.

A plain ASGI middleware, so it works with any framework (Starlette, FastAPI, Litestar,
Quart) or none, and imports none of them::

    from resilient import Bulkhead, CircuitBreaker, compose
    from resilient.asgi import ResilienceMiddleware, Route

    app = ResilienceMiddleware(
        app,
        compose(CircuitBreaker("api"), Bulkhead(100)),
        routes=[Route("/health", None)],
    )

Rejections become ``application/problem+json`` responses (503, 429, 504, with
``Retry-After``), a 5xx response of the app counts as a failure, the caller's deadline
header (``x-request-timeout``, ``grpc-timeout``) sets the request's deadline, and
[`timeout_header`][resilient.asgi.timeout_header] passes what is left of it to the next
hop. See ``docs/asgi.md``.
"""

from resilient.asgi._deadline import timeout_header
from resilient.asgi._exchange import FailureStatusError
from resilient.asgi._middleware import ResilienceMiddleware, is_server_error
from resilient.asgi._routes import Route, client_ip, header_key
from resilient.asgi._types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "ASGIApp",
    "FailureStatusError",
    "Message",
    "Receive",
    "ResilienceMiddleware",
    "Route",
    "Scope",
    "Send",
    "client_ip",
    "header_key",
    "is_server_error",
    "timeout_header",
]

# Reprs, tracebacks and docs say `resilient.asgi.Route`, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("resilient.asgi._"):
        _obj.__module__ = __name__
del _name, _obj
