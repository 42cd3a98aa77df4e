"""Per-request cost of the ASGI middleware, next to the bare app, through httpx.

The app is a minimal Starlette app (one route answering ``PlainTextResponse("ok")``),
called in-process through ``httpx.ASGITransport``, which is how the target is stated:
the middleware adds under 5% to such a request. Each round awaits ``ASYNCIO_BATCH``
requests in one running loop (``conftest.py``); the ``median_ns_per_call`` of a row
minus the bare row's is the middleware's cost per request.

Rows: the bare app; the middleware with no policy for the path (a route exempts it:
route lookup and pass-through only); a ``Bulkhead`` with free slots; a breaker and a
bulkhead composed; the same with a caller's ``x-request-timeout`` header and a
``Timeout`` (which costs a cancel scope per request); and a per-client ``RateLimiter``
keyed by the client address. Every policy is built so that nothing but its fast path
runs, and the responses are checked after the benchmark.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from resilient import Bulkhead, CircuitBreaker, RateLimiter, Timeout, compose
from resilient.asgi import ResilienceMiddleware, client_ip

IMPLS = ["bare", "exempt", "bulkhead", "breaker+bulkhead", "deadline+timeout", "per-client"]


async def ok(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def _app(impl: str) -> Any:
    app = Starlette(routes=[Route("/", ok)])
    if impl == "bare":
        return app
    if impl == "exempt":
        return ResilienceMiddleware(app, Bulkhead(100), routes={"/": None})
    if impl == "bulkhead":
        return ResilienceMiddleware(app, Bulkhead(100))
    if impl == "breaker+bulkhead":
        return ResilienceMiddleware(app, compose(CircuitBreaker("api"), Bulkhead(100)))
    if impl == "deadline+timeout":
        policy = compose(CircuitBreaker("api"), Timeout(10), Bulkhead(100))
        return ResilienceMiddleware(app, policy)
    assert impl == "per-client"
    return ResilienceMiddleware(app, key=client_ip, per_key=lambda _key: RateLimiter(1e9))


@pytest.mark.benchmark(group="asgi, minimal Starlette request via httpx.ASGITransport")
@pytest.mark.parametrize("impl", IMPLS)
def test_asgi_request(run_asyncio_batch, aio_loop, impl: str) -> None:
    headers = {"x-request-timeout": "30"} if impl == "deadline+timeout" else {}
    transport = httpx.ASGITransport(app=_app(impl))
    http = httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers)

    async def request(_: int) -> httpx.Response:
        return await http.get("/")

    try:
        response = run_asyncio_batch(request)
    finally:
        aio_loop.run_until_complete(http.aclose())
    assert (response.status_code, response.text) == (200, "ok")
