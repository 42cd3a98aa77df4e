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

Meanwhile every request carries ``x-request-timeout``; the handler sees the deadline
through ``resilient.remaining()`` and forwards it to the downstream with
``timeout_header()``. ``/health`` is exempt from every policy.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from resilient import Bulkhead, CircuitBreaker, CountWindow, RejectedError, Timeout, compose
from resilient.asgi import ResilienceMiddleware, timeout_header
from resilient.asgi import Route as PolicyRoute
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from starlette.requests import Request


class Downstream:
    """A stand-in for a remote dependency: slow, and failing while ``broken``."""

    def __init__(self) -> None:
        self.broken = False
        self.calls = 0
        self.forwarded: list[dict[str, str]] = []

    async def fetch(self, item: str, headers: dict[str, str]) -> dict[str, str]:
        self.calls += 1
        self.forwarded.append(headers)
        await asyncio.sleep(0.05)  # the time the dependency takes
        if self.broken:
            raise ConnectionError("downstream unavailable")
        return {"item": item, "price": "9.99"}


downstream = Downstream()
clock = ManualClock()  # the breaker's clock: lets the example skip its 30 s open period


async def quote(request: Request) -> Response:
    try:
        body = await downstream.fetch(request.path_params["item"], timeout_header())
    except ConnectionError:
        return JSONResponse({"error": "downstream failed"}, status_code=502)
    return JSONResponse(body)


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
        print("   the handler forwarded", downstream.forwarded[0])

        downstream.broken = True
        print("2. the downstream breaks; 4 rounds of 5 requests:")
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


if __name__ == "__main__":
    asyncio.run(main())
