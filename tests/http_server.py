"""A real uvicorn server on 127.0.0.1 for the HTTP client tests (resilient.httpx, .requests).

The app's answers are scripted per test: ``Backend.script`` is a queue of (status,
headers) handed out in order by ``/status`` and ``/echo``, then 200. The server runs in
a thread on a socket bound first (port 0), so no wait for start-up is needed: requests
queue in the backlog until uvicorn accepts them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from resilient._waiting._deadline import DEADLINE

if TYPE_CHECKING:
    from starlette.requests import Request


class Backend:
    """The app under test, and what it saw."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.calls = 0
        self.bodies: list[bytes] = []
        self.deadlines: list[str | None] = []
        self.app = Starlette(
            routes=[
                Route("/ok", self.ok),
                Route("/status", self.status),
                Route("/echo", self.echo, methods=["POST", "PUT"]),
                Route("/slow", self.slow),
                Route("/stream", self.stream),
            ]
        )

    def reset(self) -> None:
        self.script.clear()
        self.calls = 0
        self.bodies.clear()
        self.deadlines.clear()

    def fail(self, *statuses: int, **headers: str) -> None:
        """Answer the next requests with ``statuses`` (then 200), with ``headers``."""
        self.script += [(status, dict(headers)) for status in statuses]

    def _next(self, request: Request) -> tuple[int, dict[str, str]]:
        self.calls += 1
        self.deadlines.append(request.headers.get("x-request-timeout"))
        return self.script.pop(0) if self.script else (200, {})

    async def ok(self, request: Request) -> Response:
        self._next(request)
        return PlainTextResponse("ok")

    async def status(self, request: Request) -> Response:
        code, headers = self._next(request)
        return PlainTextResponse(f"status {code}", status_code=code, headers=headers)

    async def echo(self, request: Request) -> Response:
        body = await request.body()
        self.bodies.append(body)
        code, headers = self._next(request)
        return Response(body, status_code=code, headers=headers)

    async def slow(self, request: Request) -> Response:
        self._next(request)
        await asyncio.sleep(float(request.query_params.get("seconds", "5")))
        return PlainTextResponse("late")

    async def stream(self, request: Request) -> Response:
        code, headers = self._next(request)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(5):
                yield f"chunk{i},".encode()

        return StreamingResponse(chunks(), status_code=code, headers=headers)


@contextmanager
def serve(backend: Backend) -> Iterator[str]:
    """Run ``backend`` on uvicorn in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        backend.app, log_level="warning", lifespan="off", ws="none", http="h11", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    assert not thread.is_alive()


@contextmanager
def caller_deadline(seconds: float, clock: Any) -> Iterator[None]:
    """A caller's deadline ``seconds`` from now on ``clock`` (as a Timeout would set)."""
    token = DEADLINE.set((clock.monotonic() + seconds, clock))
    try:
        yield
    finally:
        DEADLINE.reset(token)


# Fixtures of the client tests, imported by their modules: one server per module.


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Backend, str]]:
    """A real uvicorn serving a :class:`Backend`, and its URL."""
    backend = Backend()
    with serve(backend) as url:
        yield backend, url


@pytest.fixture
def backend(server: tuple[Backend, str]) -> Backend:
    """The server's backend, reset for the test."""
    server[0].reset()
    return server[0]


@pytest.fixture
def url(server: tuple[Backend, str]) -> str:
    """The server's URL."""
    return server[1]
