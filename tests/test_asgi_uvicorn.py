"""End to end: a real uvicorn server on 127.0.0.1, a bulkhead shedding concurrent load.

The server runs in a thread on a socket the test binds first (port 0: a free port), so
connections queue in the backlog until uvicorn accepts them and no wait for start-up is
needed. Overlap is made certain, not hoped for: an outermost counter sees each request
arrive, and admitted handlers hold their slot until all of them have arrived. So
exactly ``LIMIT`` requests are admitted and the rest are shed, and a counter in the
handler shows that no more than ``LIMIT`` were ever in flight.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from resilient import Bulkhead
from resilient.asgi import ResilienceMiddleware

if TYPE_CHECKING:
    from starlette.requests import Request

LIMIT = 4
REQUESTS = 20


class Load:
    """The app under test, and what it observed."""

    def __init__(self) -> None:
        self.arrived = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.all_arrived: asyncio.Event | None = None  # made on the server's loop
        starlette = Starlette(routes=[Route("/work", self.work)])
        self.app = ResilienceMiddleware(starlette, Bulkhead(LIMIT))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if self.all_arrived is None:
                self.all_arrived = asyncio.Event()
            self.arrived += 1
            if self.arrived == REQUESTS:
                self.all_arrived.set()
        await self.app(scope, receive, send)

    async def work(self, request: Request) -> Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            assert self.all_arrived is not None
            await asyncio.wait_for(self.all_arrived.wait(), timeout=5)
            return PlainTextResponse("done")
        finally:
            self.in_flight -= 1


@pytest.fixture
def served() -> Iterator[tuple[Load, str]]:
    load = Load()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(REQUESTS * 2)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        load, log_level="warning", lifespan="off", ws="none", http="h11", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield load, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_bulkhead_sheds_excess_load_on_a_real_server(served: tuple[Load, str]) -> None:
    load, url = served
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        responses = await asyncio.gather(*(client.get("/work") for _ in range(REQUESTS)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * LIMIT + [503] * (REQUESTS - LIMIT)
    assert all(r.text == "done" for r in responses if r.status_code == 200)
    shed = [r for r in responses if r.status_code == 503]
    assert all(r.headers["content-type"] == "application/problem+json" for r in shed)
    assert load.max_in_flight == LIMIT
    assert load.in_flight == 0
