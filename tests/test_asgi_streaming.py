"""Streaming, timeouts around the response start, deadlines, and pass-through scopes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from fastapi import FastAPI, HTTPException
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute

from asgi_apps import Service, client
from resilient import Bulkhead, CircuitBreaker, RateLimiter, Retry, Timeout, TimeoutExceededError
from resilient.asgi import ResilienceMiddleware, client_ip
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

pytestmark = pytest.mark.anyio


# -- streaming and timeouts -----------------------------------------------------------


async def test_streaming_response_outlives_a_timeout_on_the_response_start() -> None:
    svc = Service()
    app = ResilienceMiddleware(svc.app, Timeout(0.05))
    async with client(app) as c:
        response = await c.get("/stream")
    assert response.status_code == 200
    # The body went on past the 0.05 s, and saw no deadline once the response started.
    assert response.text == "first,left=None"


async def test_timeout_on_the_whole_body_after_the_response_started_aborts() -> None:
    svc = Service()
    app = ResilienceMiddleware(svc.app, Timeout(0.05), timeout_body=True)
    async with client(app) as c:
        with pytest.raises(TimeoutExceededError):
            await c.get("/stream-then-hang")


async def test_never_a_second_response_start() -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await anyio.Event().wait()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    middleware = ResilienceMiddleware(app, Timeout(0.05), timeout_body=True)
    with pytest.raises(TimeoutExceededError):
        await middleware(scope, receive, send)
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]


async def test_a_streaming_failure_status_is_recorded_at_the_end() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 502, "headers": []})
        for part in (b"a", b"b"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    b = CircuitBreaker("api", minimum_calls=10)
    async with client(ResilienceMiddleware(app, b)) as c:
        response = await c.get("/")
    assert (response.status_code, response.content) == (502, b"ab")
    assert b.metrics().failed_calls == 1


async def test_a_bulkhead_holds_its_slot_for_the_whole_streamed_body() -> None:
    gate = anyio.Event()
    started = anyio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await gate.wait()
        await send({"type": "http.response.body", "body": b"done"})

    middleware = ResilienceMiddleware(app, Bulkhead(1))
    statuses: list[int] = []
    async with client(middleware) as c, anyio.create_task_group() as tg:

        async def first() -> None:
            statuses.append((await c.get("/")).status_code)

        tg.start_soon(first)
        await started.wait()
        statuses.append((await c.get("/")).status_code)
        gate.set()
    assert statuses == [503, 200]


# -- deadlines ------------------------------------------------------------------------


async def test_request_timeout_header_sets_the_deadline() -> None:
    clock = ManualClock(100.0)
    app = ResilienceMiddleware(Service().app, clock=clock)
    async with client(app) as c:
        response = await c.get("/deadline", headers={"x-request-timeout": "1.5"})
        grpc = await c.get("/deadline", headers={"grpc-timeout": "250m"})
        both = await c.get("/deadline", headers={"grpc-timeout": "2S", "x-request-timeout": "3"})
        none = await c.get("/deadline")
    assert response.text == "1.5|{'x-request-timeout': '1.500'}|{'grpc-timeout': '1500000u'}"
    assert grpc.text.startswith("0.25|{'x-request-timeout': '0.250'}")
    assert both.text.startswith("2.0|")  # the tighter one
    assert none.text == "None|{}|{}"


async def test_invalid_deadline_headers_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    app = ResilienceMiddleware(Service().app)
    with caplog.at_level(logging.DEBUG, logger="resilient.asgi"):
        async with client(app) as c:
            for value in ["abc", "-1", "1e3", "nan", "inf", " 1", "1" * 20]:
                response = await c.get("/deadline", headers={"x-request-timeout": value})
                assert (response.status_code, response.text) == (200, "None|{}|{}"), value
            for value in ["100", "123456789S", "1x", "1.5S", "-1S"]:
                response = await c.get("/deadline", headers={"grpc-timeout": value})
                assert (response.status_code, response.text) == (200, "None|{}|{}"), value
    assert "ignoring an invalid x-request-timeout header" in caplog.text


async def test_the_callers_deadline_tightens_a_timeout_policy() -> None:
    svc = Service()
    async with client(ResilienceMiddleware(svc.app, Timeout(30))) as c:
        response = await c.get("/hold", headers={"x-request-timeout": "0.05"})
    assert response.status_code == 504


async def test_deadline_headers_can_be_changed_or_turned_off() -> None:
    app = ResilienceMiddleware(Service().app, deadline_headers=["X-Deadline"], clock=ManualClock())
    off = ResilienceMiddleware(Service().app, deadline_headers=())
    async with client(app) as c:
        assert (await c.get("/deadline", headers={"x-deadline": "2"})).text.startswith("2")
        assert (await c.get("/deadline", headers={"x-request-timeout": "2"})).text[:4] == "None"
    async with client(off) as c:
        assert (await c.get("/deadline", headers={"x-request-timeout": "2"})).text[:4] == "None"


async def test_an_expired_callers_deadline_gives_504_at_once() -> None:
    svc = Service()
    async with client(ResilienceMiddleware(svc.app, Timeout(30))) as c:
        response = await c.get("/ok", headers={"x-request-timeout": "0"})
    assert response.status_code == 504
    assert svc.calls == 0


# -- pass-through scopes --------------------------------------------------------------


async def test_lifespan_and_websocket_scopes_pass_through_untouched() -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    shut = CircuitBreaker("shut")
    shut.force_open()
    middleware = ResilienceMiddleware(app, shut, key=client_ip, per_key=lambda k: Bulkhead(1))

    async def receive() -> dict[str, Any]:
        return {}  # pragma: no cover

    async def send(message: Any) -> None:
        pass  # pragma: no cover

    for scope in ({"type": "lifespan"}, {"type": "websocket", "path": "/", "headers": []}):
        await middleware(scope, receive, send)
        assert seen.pop() == (scope, receive, send)


async def drive(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    """Run ``app`` on ``scope`` with scripted incoming events; return what it sent."""
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_websocket_and_lifespan_with_starlette_while_http_is_rejected() -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("up")
        yield
        started.append("down")

    shut = CircuitBreaker("shut")
    shut.force_open()
    app = Starlette(routes=[WebSocketRoute("/ws", echo)], lifespan=lifespan)
    app.add_middleware(ResilienceMiddleware, policy=shut)

    lifespan = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent = await drive(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, lifespan)
    assert started == ["up", "down"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    ws_scope = {"type": "websocket", "path": "/ws", "headers": [], "query_string": b""}
    events = [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "hi"}]
    sent = await drive(app, ws_scope, events)
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "hi"

    async with client(app) as c:
        assert (await c.get("/ws")).status_code == 503


# -- FastAPI --------------------------------------------------------------------------


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        if item == 0:
            raise HTTPException(status_code=503, detail="down")
        if item == 4:
            raise HTTPException(status_code=404, detail="no such item")
        return {"item": item}

    return api


async def test_fastapi_status_mapping_and_failure_classification() -> None:
    api = fastapi_app()
    clock = ManualClock()
    b = CircuitBreaker("items", minimum_calls=10, clock=clock)
    api.add_middleware(
        ResilienceMiddleware,
        policy=b,
        key=client_ip,
        per_key=lambda key: RateLimiter(3, per=1.0, clock=clock),
    )
    async with client(api) as c:
        ok = await c.get("/items/1")
        missing = await c.get("/items/4")
        down = await c.get("/items/0")
        limited = await c.get("/items/1")
    assert (ok.status_code, ok.json()) == (200, {"item": 1})
    assert missing.status_code == 404
    assert (down.status_code, down.json()) == (503, {"detail": "down"})  # the app's own
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert (b.metrics().calls, b.metrics().failed_calls) == (3, 1)


async def test_fastapi_retry_of_a_post_with_a_json_body() -> None:
    api = FastAPI()
    seen: list[dict[str, Any]] = []

    @api.post("/orders")
    async def order(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        if len(seen) == 1:
            raise HTTPException(status_code=502)
        return {"ok": payload}

    api.add_middleware(ResilienceMiddleware, policy=Retry(2, wait=0))
    async with client(api) as c:
        response = await c.post("/orders", json={"id": 7})
    assert response.json() == {"ok": {"id": 7}}
    assert seen == [{"id": 7}, {"id": 7}]
