"""One mapping for the library's errors raised by the app, and keys that see the scope.

Two defects found in review are guarded here: a ``RateLimitedError`` raised by the app
became a 429 on a guarded route but a 500 on an exempt route or for a request without
a key; and a ``KeyedRateLimiter`` in the middleware's policy had its ``key`` called with
the middleware's internal request object, so a key reading the scope crashed (500).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import pytest

from asgi_apps import Service, client
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitOpenError,
    KeyedRateLimiter,
    RateLimitedError,
    ResilienceError,
    TimeoutExceededError,
    WorkersExhaustedError,
    compose,
)
from resilient.asgi import ResilienceMiddleware, Route, client_ip, header_key
from resilient.testing import ManualClock

pytestmark = pytest.mark.anyio

ERRORS: list[tuple[ResilienceError, int, str | None]] = [
    (RateLimitedError("slow down", retry_after=2.5), 429, "3"),
    (CircuitOpenError(policy="inner", retry_after=0.2), 503, "1"),
    (BulkheadFullError("full"), 503, None),
    (WorkersExhaustedError("busy"), 503, None),
    (TimeoutExceededError("late", seconds=1.0), 504, None),
]


def raising(error: Exception, *, after_start: bool = False) -> Any:
    """An ASGI app that raises ``error`` (after sending its response start, if told)."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # pragma: no cover - httpx sends only http scopes
            return
        if after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise error

    return app


def _one_key(_: object) -> Hashable:
    return "k"


# Every way a request can reach the app: through a policy, or through none.
SETUPS: dict[str, Callable[[Any], ResilienceMiddleware]] = {
    "guarded": lambda app: ResilienceMiddleware(app, Bulkhead(5)),
    "exempt_route": lambda app: ResilienceMiddleware(app, Bulkhead(5), routes=[Route("/", None)]),
    "no_policy": ResilienceMiddleware,
    "per_key_but_no_key": lambda app: ResilienceMiddleware(
        app, key=header_key("x-api-key"), per_key=lambda key: Bulkhead(5)
    ),
    "per_key_only": lambda app: ResilienceMiddleware(
        app, key=_one_key, per_key=lambda key: Bulkhead(5)
    ),
}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize(("error", "status", "retry_after"), ERRORS)
async def test_an_error_raised_by_the_app_gets_the_same_answer_on_every_request(
    setup: str, error: ResilienceError, status: int, retry_after: str | None
) -> None:
    async with client(SETUPS[setup](raising(error))) as c:
        response = await c.get("/")
        head = await c.head("/")
    # Before the fix: 429 (or 503/504) when guarded, an unhandled error (500) otherwise.
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers.get("retry-after") == retry_after
    assert (head.status_code, head.content) == (status, b"")


@pytest.mark.parametrize("setup", SETUPS)
async def test_after_the_response_started_the_error_propagates_on_every_request(
    setup: str,
) -> None:
    # A second response start is never sent: the server must abort the connection.
    app = SETUPS[setup](raising(RateLimitedError("slow down", retry_after=1.0), after_start=True))
    async with client(app) as c:
        with pytest.raises(RateLimitedError):
            await c.get("/")


@pytest.mark.parametrize("setup", SETUPS)
async def test_other_app_errors_still_propagate(setup: str) -> None:
    async with client(SETUPS[setup](raising(KeyError("bug")))) as c:
        with pytest.raises(KeyError):
            await c.get("/")


# -- a KeyedRateLimiter in the middleware's policy gets the ASGI scope --------------------


async def test_keyed_rate_limiter_key_receives_the_asgi_scope() -> None:
    clock = ManualClock()
    seen: list[object] = []

    def api_key(scope: dict[str, Any], *rest: object) -> Hashable:
        seen.append((type(scope), rest))
        return dict(scope["headers"]).get(b"x-api-key")

    svc = Service()
    limiter = KeyedRateLimiter(1, per=60, key=api_key, clock=clock)
    app = ResilienceMiddleware(svc.app, compose(Bulkhead(5), limiter))
    async with client(app) as c:
        a1 = await c.get("/ok", headers={"x-api-key": "a"})
        a2 = await c.get("/ok", headers={"x-api-key": "a"})
        b1 = await c.get("/ok", headers={"x-api-key": "b"})
    # Before the fix: the key got the middleware's Exchange, and every request was a 500.
    assert (a1.status_code, a2.status_code, b1.status_code) == (200, 429, 200)
    assert a2.headers["retry-after"] == "60"
    assert seen == [(dict, ())] * 3  # the scope, and nothing else
    assert svc.calls == 2


@pytest.mark.parametrize("where", ["route", "per_key"])
async def test_keyed_rate_limiter_takes_the_middlewares_own_key_functions(where: str) -> None:
    # client_ip and header_key are functions of the scope: they serve both.
    clock = ManualClock()
    limiter = KeyedRateLimiter(1, per=60, key=client_ip, clock=clock)
    svc = Service()
    if where == "route":
        app = ResilienceMiddleware(svc.app, routes=[Route("/ok", limiter)])
    else:
        app = ResilienceMiddleware(
            svc.app, key=header_key("x-tenant"), per_key=lambda tenant: limiter
        )
    statuses = []
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        async with client(app, client=(address, 5000)) as c:
            statuses.append((await c.get("/ok", headers={"x-tenant": "t"})).status_code)
    assert statuses == [200, 429, 200]


async def test_keyed_rate_limiter_outside_the_middleware_still_gets_the_call_arguments() -> None:
    clock = ManualClock()
    limiter = KeyedRateLimiter(1, per=60, key=lambda user, *a, **k: user, clock=clock)

    @limiter
    async def fetch(user: str) -> str:
        return user

    assert await fetch("a") == "a"
    with pytest.raises(RateLimitedError):
        await fetch("a")
    assert await fetch("b") == "b"


async def test_a_plain_response_is_untouched_on_an_exempt_route() -> None:
    svc = Service()
    app = ResilienceMiddleware(svc.app, Bulkhead(5), routes=[Route("/ok", None)])
    async with client(app) as c:
        response = await c.get("/ok")
    assert (response.status_code, response.text) == (200, "ok")
