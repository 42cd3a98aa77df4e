"""ChaosMiddleware: inject into a service's requests, on routes, by header, never on health."""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_apps import client
from resilient.asgi import ResilienceMiddleware
from resilient.chaos import ChaosMiddleware, InjectFault, InjectLatency, InjectResult
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from starlette.requests import Request

pytestmark = pytest.mark.anyio


class Service:
    def __init__(self) -> None:
        self.seen: list[str] = []
        paths = ["/orders", "/orders/{n}", "/other", "/health", "/healthz/deep", "/ready"]
        self.app = Starlette(routes=[Route(path, self.answer) for path in paths])

    async def answer(self, request: Request) -> PlainTextResponse:
        self.seen.append(request.url.path)
        if request.url.path == "/other" and request.headers.get("x-crash"):
            raise RuntimeError("the app's own bug")
        return PlainTextResponse("served")


async def test_a_fault_on_a_route_answers_without_calling_the_app(anyio_backend: str) -> None:
    service = Service()
    app = ChaosMiddleware(service.app, InjectFault(ConnectionError, rate=1.0), paths=["/orders"])
    async with client(app) as http:
        hit = await http.get("/orders")
        under = await http.get("/orders/7")
        other = await http.get("/other")
    assert (hit.status_code, under.status_code, other.status_code) == (500, 500, 200)
    assert hit.headers["x-resilient-chaos"] == "injected"
    assert "ConnectionError" in hit.text
    assert service.seen == ["/other"]


async def test_a_header_selects_the_share_of_requests(anyio_backend: str) -> None:
    service = Service()
    fault = InjectFault(ConnectionError, rate=0.4, seed=3)
    app = ChaosMiddleware(service.app, fault, header="x-chaos", fault_status=503)
    async with client(app) as http:
        chosen = [
            (await http.get("/orders", headers={"x-chaos": "1"})).status_code for _ in range(100)
        ]
        off = [
            (await http.get("/orders", headers={"x-chaos": "off"})).status_code for _ in range(20)
        ]
        plain = [(await http.get("/orders")).status_code for _ in range(50)]
    rng = random.Random(3)
    assert chosen.count(503) == sum(rng.random() < 0.4 for _ in range(100))
    assert set(off) == set(plain) == {200}
    assert fault.metrics().calls == 100  # only the chosen requests reach the policy


@pytest.mark.parametrize("path", ["/health", "/healthz/deep", "/ready"])
async def test_health_checks_are_never_injected(anyio_backend: str, path: str) -> None:
    service = Service()
    app = ChaosMiddleware(service.app, InjectFault(ConnectionError, rate=1.0))
    async with client(app) as http:
        assert (await http.get(path)).status_code == 200
        assert (await http.get("/orders")).status_code == 500


async def test_exempt_paths_are_configurable(anyio_backend: str) -> None:
    service = Service()
    app = ChaosMiddleware(service.app, InjectResult(503, rate=1.0), exempt=["/other"])
    async with client(app) as http:
        assert (await http.get("/other")).status_code == 200
        assert (await http.get("/health")).status_code == 503


async def test_a_delay_holds_the_request_in_virtual_time(anyio_backend: str) -> None:
    clock = ManualClock()
    service = Service()
    app = ChaosMiddleware(service.app, InjectLatency(2.0, rate=1.0, clock=clock))
    async with client(app) as http:
        assert (await http.get("/orders")).text == "served"
    assert clock.monotonic() == 2.0


async def test_a_delay_past_the_request_deadline_is_a_504(anyio_backend: str) -> None:
    clock = ManualClock()
    service = Service()
    chaos = ChaosMiddleware(service.app, InjectLatency(5.0, rate=1.0, clock=clock))
    app = ResilienceMiddleware(chaos, clock=clock)
    async with client(app) as http:
        response = await http.get("/orders", headers={"x-request-timeout": "1"})
    assert response.status_code == 504
    assert clock.monotonic() == pytest.approx(1.0)
    assert service.seen == []


@pytest.mark.parametrize(
    ("value", "status", "body"),
    [(418, 418, ""), ((429, "slow down"), 429, "slow down"), ((200, b"{}"), 200, "{}")],
)
async def test_an_injected_result_is_the_response(
    anyio_backend: str, value: Any, status: int, body: str
) -> None:
    service = Service()
    app = ChaosMiddleware(service.app, InjectResult(value, rate=1.0))
    async with client(app) as http:
        response = await http.get("/orders")
    assert (response.status_code, response.text) == (status, body)
    assert service.seen == []


async def test_a_result_that_is_no_response_is_logged_and_answered(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = ChaosMiddleware(Service().app, InjectResult("nonsense", rate=1.0))
    with caplog.at_level(logging.ERROR, logger="resilient"):
        async with client(app) as http:
            assert (await http.get("/orders")).status_code == 500
    assert "must be a status" in caplog.text


async def test_the_apps_own_failure_is_not_masked(anyio_backend: str) -> None:
    app = ChaosMiddleware(Service().app, InjectLatency(0.0, rate=1.0, clock=ManualClock()))
    async with client(app) as http:
        with pytest.raises(RuntimeError, match="own bug"):
            await http.get("/other", headers={"x-crash": "1"})


async def test_lifespan_and_websocket_scopes_pass_through(anyio_backend: str) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    chaos = ChaosMiddleware(app, InjectFault(ConnectionError, rate=1.0))
    await chaos({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    await chaos({"type": "websocket", "path": "/orders"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"policy": "fault"}, TypeError, r"^policy must be"),
        ({"paths": "/x"}, TypeError, r"^paths must be"),
        ({"paths": ["x"]}, TypeError, r"^paths must hold"),
        ({"exempt": [5]}, TypeError, r"^exempt must hold"),
        ({"header": 5}, TypeError, r"^header must be"),
        ({"fault_status": 99}, ValueError, r"^fault_status must be"),
        ({"fault_status": "500"}, TypeError, r"^fault_status must be"),
    ],
)
def test_options_are_checked(kwargs: dict[str, Any], error: type, match: str) -> None:
    options: dict[str, Any] = {"policy": InjectFault(ConnectionError, rate=1.0), **kwargs}
    with pytest.raises(error, match=match):
        ChaosMiddleware(Service().app, **options)
