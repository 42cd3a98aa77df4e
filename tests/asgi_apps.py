"""Small apps and helpers shared by the ASGI middleware tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from resilient import remaining
from resilient.asgi import timeout_header

if TYPE_CHECKING:
    from starlette.requests import Request


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client talking to ``app`` in-process."""
    transport = httpx.ASGITransport(app=app, **kwargs)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


class Service:
    """A Starlette app whose handlers do what each test needs, and count what they saw."""

    def __init__(self) -> None:
        self.calls = 0
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []  # handed out in order by /status, then 200
        self.entered = anyio.Event()
        self.release = anyio.Event()
        self.app = Starlette(
            routes=[
                Route("/ok", self.ok),
                Route("/status", self.status),
                Route("/echo", self.echo, methods=["POST", "PUT"]),
                Route("/hold", self.hold),
                Route("/stream", self.stream),
                Route("/stream-then-hang", self.stream_then_hang),
                Route("/stream-then-fail", self.stream_then_fail),
                Route("/big-error", self.big_error),
                Route("/deadline", self.deadline),
                Route("/users/{user}", self.ok, methods=["GET", "DELETE"]),
                Route("/health", self.ok),
            ]
        )

    async def ok(self, request: Request) -> Response:
        self.calls += 1
        return PlainTextResponse("ok")

    async def status(self, request: Request) -> Response:
        self.calls += 1
        code = self.statuses.pop(0) if self.statuses else 200
        return PlainTextResponse(f"status {code}", status_code=code)

    async def echo(self, request: Request) -> Response:
        self.calls += 1
        body = await request.body()
        self.bodies.append(body)
        code = self.statuses.pop(0) if self.statuses else 200
        return Response(body, status_code=code)

    async def hold(self, request: Request) -> Response:
        self.calls += 1
        self.entered.set()
        await self.release.wait()
        return PlainTextResponse("released")

    async def stream(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first,"
            await anyio.sleep(0.1)  # longer than the 0.05 s timeout of the test
            yield f"left={remaining()}".encode()

        return StreamingResponse(chunks())

    async def stream_then_hang(self, request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"first,"
            await anyio.Event().wait()  # never set: only a timeout ends this
            yield b"never"  # pragma: no cover

        return StreamingResponse(chunks())

    async def stream_then_fail(self, request: Request) -> Response:
        self.calls += 1

        async def chunks() -> AsyncIterator[bytes]:
            yield b"first,"
            raise ConnectionError

        return StreamingResponse(chunks())

    async def big_error(self, request: Request) -> Response:
        self.calls += 1
        return PlainTextResponse("x" * 1000, status_code=500)

    async def deadline(self, request: Request) -> Response:
        left = remaining()
        header = timeout_header()
        grpc = timeout_header("grpc-timeout")
        return PlainTextResponse(f"{left}|{header}|{grpc}")
