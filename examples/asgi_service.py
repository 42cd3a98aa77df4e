"""A Starlette service with a flaky downstream, protected by ResilienceMiddleware.

Run it: ``python examples/asgi_service.py`` (needs starlette and httpx: ``pip install
-e '.[test]'``). It drives the app in-process through ``httpx.ASGITransport`` and
prints what clients saw, in three acts, in about a second:

1. **Shedding**: 30 concurrent requests hit a bulkhead of 5 slots. Five are served;
   the rest get 503 at once instead of queueing behind a slow downstream.
2. **Fail fast**: the downstream starts failing. The breaker opens after a few 5xx
   answers, and from then on requests get 503 with ``Retry-After`` without touching
   the downstream at all.
3. **Recovery**: the downstream is healthy again; after the open period (a manual clock
   stands in for 30 seconds) trial requests close the breaker.

The downstream is a second service (its own app and middleware). The quotes service
calls it through ``resilient.httpx.ResilienceTransport``, which retries a 5xx once and
sends what is left of the incoming request's deadline (every request carries
``x-request-timeout: 1.5``) as that call's ``x-request-timeout``: the prices service
sees it through ``resilient.remaining()``. ``/health`` is exempt from every policy.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CountWindow,
    RejectedError,
    Retry,
    Timeout,
    compose,
    remaining,
)
from resilient.asgi import ResilienceMiddleware
from resilient.asgi import Route as PolicyRoute
from resilient.httpx import ResilienceTransport
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from starlette.requests import Request


class Prices:
    """The downstream service: slow, answering 503 while ``broken``."""

    def __init__(self) -> None:
        self.broken = False
        self.calls = 0
        self.seen: list[tuple[str | None, float | None]] = []  # (header, remaining())

    async def price(self, request: Request) -> Response:
        self.calls += 1
        self.seen.append((request.headers.get("x-request-timeout"), remaining()))
        await asyncio.sleep(0.05)  # the time the dependency takes
        if self.broken:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse({"item": request.path_params["item"], "price": "9.99"})


downstream = Prices()
# The prices service has its own middleware, which reads the caller's deadline header.
prices_app = ResilienceMiddleware(
    Starlette(routes=[Route("/prices/{item}", downstream.price)]), None
)
# The quotes service calls it through the transport: one retry per request (per host),
# and each attempt sends what is left of the incoming request's deadline.
prices = httpx.AsyncClient(
    transport=ResilienceTransport(
        lambda name: Retry(2, wait=0.0, name=name),
        name="prices",
        wrapped=httpx.ASGITransport(app=prices_app),
    ),
    base_url="http://prices",
)
clock = ManualClock()  # the breaker's clock: lets the example skip its 30 s open period


async def quote(request: Request) -> Response:
    response = await prices.get(f"/prices/{request.path_params['item']}")
    if response.status_code >= 500:  # the last attempt's response, after the retry
        return JSONResponse({"error": "downstream failed"}, status_code=502)
    return JSONResponse(response.json())


async def health(_request: Request) -> Response:
    return JSONResponse({"ok": True})


breaker = CircuitBreaker(
    "quotes",
    window=CountWindow(10),
    minimum_calls=5,
    failure_rate_threshold=0.5,
    open_duration=30.0,
    half_open_calls=2,
    ignore=RejectedError,  # a shed request says nothing about the downstream
    clock=clock,
)
app = ResilienceMiddleware(
    Starlette(routes=[Route("/quotes/{item}", quote), Route("/health", health)]),
    compose(breaker, Timeout(2.0), Bulkhead(5)),  # 5xx answers count as failures
    routes=[PolicyRoute("/health", None)],
)


async def burst(client: httpx.AsyncClient, n: int) -> collections.Counter[str]:
    """Send ``n`` requests at once; count the outcomes."""
    headers = {"x-request-timeout": "1.5"}
    responses = await asyncio.gather(
        *(client.get(f"/quotes/{i}", headers=headers) for i in range(n))
    )
    seen: collections.Counter[str] = collections.Counter()
    for response in responses:
        retry = response.headers.get("retry-after")
        seen[f"{response.status_code}" + (f" (Retry-After: {retry})" if retry else "")] += 1
    return seen


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        print("1. 30 concurrent requests, bulkhead of 5:")
        print("  ", dict(await burst(client, 30)))
        header, left = downstream.seen[0]
        assert header is not None and float(header) <= 1.5  # noqa: PT018, S101
        assert left is not None and left <= 1.5  # noqa: PT018, S101
        print(f"   the prices service saw x-request-timeout: {header}, remaining() <= 1.5")

        downstream.broken = True
        print("2. the downstream breaks; 4 rounds of 5 requests (each tried twice):")
        for _ in range(4):
            before = downstream.calls
            outcome = dict(await burst(client, 5))
            print(f"   {outcome}, downstream calls: {downstream.calls - before}")
        print(
            "   breaker:",
            breaker.state.value,
            "| /health (exempt):",
            (await client.get("/health")).status_code,
        )

        downstream.broken = False
        clock.advance(30)
        print("3. healthy again, 30 s later:")
        print("  ", dict(await burst(client, 2)), "-> breaker:", breaker.state.value)
        print("  ", dict(await burst(client, 5)))
    await prices.aclose()


if __name__ == "__main__":
    asyncio.run(main())
