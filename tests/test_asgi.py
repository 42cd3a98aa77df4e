"""The ASGI middleware with Starlette apps through httpx.ASGITransport.

Covers each status mapping and Retry-After, failure classification, retries (body
replay, never after the response started), fallbacks, routes and per-key policies.
Timed state changes use ManualClock; the only real waits are short timeouts.
"""

from __future__ import annotations

import json

import anyio
import pytest
from starlette.responses import JSONResponse

from asgi_apps import Service, client
from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    RateLimiter,
    Retry,
    Timeout,
    WorkersExhaustedError,
    compose,
)
from resilient.asgi import FailureStatusError, ResilienceMiddleware, Route, client_ip, header_key
from resilient.testing import ManualClock

pytestmark = pytest.mark.anyio


def problem(response: object) -> dict[str, object]:
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    return json.loads(response.content)  # type: ignore[attr-defined, no-any-return]


def breaker(clock: ManualClock, **kwargs: object) -> CircuitBreaker:
    options: dict[str, object] = {
        "window": CountWindow(2),
        "minimum_calls": 2,
        "open_duration": 30.0,
        "clock": clock,
    }
    options.update(kwargs)
    return CircuitBreaker("api", **options)  # type: ignore[arg-type]


# -- status mappings ------------------------------------------------------------------


async def test_open_circuit_is_503_with_retry_after_rounded_up() -> None:
    clock = ManualClock()
    svc = Service()
    svc.statuses = [500, 500]
    b = breaker(clock)
    async with client(ResilienceMiddleware(svc.app, b)) as c:
        assert (await c.get("/status")).status_code == 500
        assert (await c.get("/status")).status_code == 500
        clock.advance(10.5)  # 19.5 s of the 30 s left
        response = await c.get("/status")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "20"
    body = problem(response)
    assert body["status"] == 503
    assert body["title"] == "Service Unavailable"
    assert svc.calls == 2  # the third request was not attempted


async def test_forced_open_circuit_has_no_retry_after() -> None:
    svc = Service()
    b = CircuitBreaker("api")
    b.force_open()
    async with client(ResilienceMiddleware(svc.app, b)) as c:
        response = await c.get("/ok")
    assert response.status_code == 503
    assert "retry-after" not in response.headers


async def test_full_bulkhead_is_503() -> None:
    svc = Service()
    app = ResilienceMiddleware(svc.app, Bulkhead(1))
    async with client(app) as c, anyio.create_task_group() as tg:
        first: list[int] = []

        async def hold() -> None:
            first.append((await c.get("/hold")).status_code)

        tg.start_soon(hold)
        await svc.entered.wait()
        response = await c.get("/ok")
        svc.release.set()
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    assert "capacity" in str(problem(response)["detail"])
    assert first == [200]


async def test_rate_limited_is_429_with_retry_after_rounded_up() -> None:
    clock = ManualClock()
    svc = Service()
    app = ResilienceMiddleware(svc.app, RateLimiter(1, per=2.5, clock=clock))
    async with client(app) as c:
        assert (await c.get("/ok")).status_code == 200
        response = await c.get("/ok")
        clock.advance(2.0)
        later = await c.get("/ok")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"  # 2.5 s, rounded up
    assert problem(response)["title"] == "Too Many Requests"
    assert later.headers["retry-after"] == "1"  # 0.5 s: rounded up, never 0


async def test_timeout_before_the_response_is_504() -> None:
    svc = Service()
    async with client(ResilienceMiddleware(svc.app, Timeout(0.05))) as c:
        response = await c.get("/hold")
    assert response.status_code == 504
    assert problem(response)["title"] == "Gateway Timeout"


async def test_other_rejections_are_503_and_so_are_those_raised_by_the_app() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise WorkersExhaustedError("busy")

    async def app2(scope: object, receive: object, send: object) -> None:
        raise CircuitOpenError(policy="inner", retry_after=0.2)

    async with client(ResilienceMiddleware(app, Bulkhead(5))) as c:
        response = await c.get("/")
    assert response.status_code == 503
    assert "retry-after" not in response.headers
    async with client(ResilienceMiddleware(app2, Bulkhead(5))) as c:
        response = await c.get("/")
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")


async def test_head_request_gets_the_status_without_a_body() -> None:
    b = CircuitBreaker("api")
    b.force_open()
    async with client(ResilienceMiddleware(Service().app, b)) as c:
        response = await c.head("/ok")
    assert response.status_code == 503
    assert response.content == b""


# -- failure classification -----------------------------------------------------------


async def test_5xx_is_a_failure_and_4xx_is_not() -> None:
    svc = Service()
    svc.statuses = [404, 500, 503]
    b = CircuitBreaker("api", minimum_calls=10)
    async with client(ResilienceMiddleware(svc.app, b)) as c:
        statuses = [(await c.get("/status")).status_code for _ in range(4)]
    assert statuses == [404, 500, 503, 200]
    metrics = b.metrics()
    assert (metrics.calls, metrics.failed_calls) == (4, 2)


async def test_failure_status_predicate() -> None:
    svc = Service()
    svc.statuses = [404, 500]
    b = CircuitBreaker("api", minimum_calls=10)
    app = ResilienceMiddleware(svc.app, b, failure_status=lambda status: status == 404)
    async with client(app) as c:
        assert (await c.get("/status")).status_code == 404
        assert (await c.get("/status")).status_code == 500
    assert b.metrics().failed_calls == 1


async def test_the_app_response_is_delivered_intact_when_it_counts_as_failure() -> None:
    svc = Service()
    svc.statuses = [503]
    async with client(ResilienceMiddleware(svc.app, CircuitBreaker("api"))) as c:
        response = await c.get("/status")
    assert (response.status_code, response.text) == (503, "status 503")
    assert response.headers["content-type"].startswith("text/plain")


async def test_an_app_exception_is_a_failure_and_propagates() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise KeyError("bug")

    b = CircuitBreaker("api", minimum_calls=10)
    async with client(ResilienceMiddleware(app, b)) as c:
        with pytest.raises(KeyError):
            await c.get("/")
    assert b.metrics().failed_calls == 1


# -- retries --------------------------------------------------------------------------


async def test_retry_replays_the_request_body() -> None:
    svc = Service()
    svc.statuses = [503, 500]
    app = ResilienceMiddleware(svc.app, Retry(3, wait=0))
    async with client(app) as c:
        response = await c.post("/echo", content=b"payload")
    assert (response.status_code, response.content) == (200, b"payload")
    assert svc.bodies == [b"payload"] * 3


async def test_retry_replays_a_streamed_body() -> None:
    svc = Service()
    svc.statuses = [500]

    async def chunks():  # type: ignore[no-untyped-def]
        for part in (b"a" * 10, b"b" * 10):
            yield part

    async with client(ResilienceMiddleware(svc.app, Retry(2, wait=0))) as c:
        response = await c.put("/echo", content=chunks())
    assert response.status_code == 200
    assert svc.bodies == [b"a" * 10 + b"b" * 10] * 2


async def test_no_retry_when_the_body_is_too_large_to_replay() -> None:
    svc = Service()
    svc.statuses = [503]
    app = ResilienceMiddleware(svc.app, Retry(3, wait=0), buffer_limit=4)
    async with client(app) as c:
        response = await c.post("/echo", content=b"too large")
    assert (response.status_code, response.content) == (503, b"too large")
    assert svc.calls == 1


async def test_no_retry_after_the_response_started() -> None:
    svc = Service()
    async with client(ResilienceMiddleware(svc.app, Retry(3, wait=0))) as c:
        with pytest.raises(ConnectionError):
            await c.get("/stream-then-fail")
    assert svc.calls == 1


async def test_a_failed_response_too_large_to_hold_goes_out_and_is_not_retried() -> None:
    svc = Service()
    b = CircuitBreaker("api", minimum_calls=10)
    app = ResilienceMiddleware(svc.app, compose(Retry(3, wait=0), b), buffer_limit=100)
    async with client(app) as c:
        response = await c.get("/big-error")
    assert (response.status_code, len(response.content)) == (500, 1000)
    assert svc.calls == 1
    assert b.metrics().failed_calls == 1


async def test_retry_then_open_circuit_answers_503() -> None:
    svc = Service()
    svc.statuses = [500, 500, 500]
    app = ResilienceMiddleware(svc.app, compose(Retry(5, wait=0), breaker(ManualClock())))
    async with client(app) as c:
        response = await c.get("/status")
    assert response.status_code == 503
    assert svc.calls == 2  # the breaker opened after two; the open circuit is not retried


async def test_retry_on_failure_status_only() -> None:
    svc = Service()
    svc.statuses = [502]
    app = ResilienceMiddleware(svc.app, Retry(2, wait=0, on=FailureStatusError))
    async with client(app) as c:
        assert (await c.get("/status")).status_code == 200
    assert svc.calls == 2


# -- fallbacks ------------------------------------------------------------------------


async def test_fallback_answers_with_the_asgi_app_it_returns() -> None:
    svc = Service()
    svc.statuses = [500]
    fallback = Fallback(lambda exc: JSONResponse({"stale": True, "why": type(exc).__name__}))
    async with client(ResilienceMiddleware(svc.app, fallback)) as c:
        response = await c.get("/status")
        ok = await c.get("/status")
    assert response.json() == {"stale": True, "why": "FailureStatusError"}
    assert ok.text == "status 200"


async def test_fallback_returning_a_non_app_is_a_type_error() -> None:
    svc = Service()
    svc.statuses = [500]
    async with client(ResilienceMiddleware(svc.app, Fallback(lambda exc: "text"))) as c:
        with pytest.raises(TypeError, match="ASGI app"):
            await c.get("/status")


# -- routes ---------------------------------------------------------------------------


async def test_first_matching_route_wins_and_replaces_the_default() -> None:
    shut = CircuitBreaker("shut")
    shut.force_open()
    svc = Service()
    routes = [
        Route("/health", None),
        Route("/users/{user}", shut, methods=["delete"]),
        Route("/users/*", Bulkhead(5)),
    ]
    app = ResilienceMiddleware(svc.app, shut, routes=routes)
    async with client(app) as c:
        assert (await c.get("/health")).status_code == 200  # exempt
        assert (await c.get("/users/7")).status_code == 200  # 3rd route
        assert (await c.delete("/users/7")).status_code == 503  # 2nd route
        assert (await c.get("/ok")).status_code == 503  # the default
    assert svc.calls == 2


async def test_routes_as_a_mapping() -> None:
    shut = CircuitBreaker("shut")
    shut.force_open()
    app = ResilienceMiddleware(Service().app, routes={"/ok": shut})
    async with client(app) as c:
        assert (await c.get("/ok")).status_code == 503
        assert (await c.get("/health")).status_code == 200  # no default policy


def test_route_patterns() -> None:
    assert Route("/a/{x}/b", None).matches("GET", "/a/1/b")
    assert not Route("/a/{x}/b", None).matches("GET", "/a/1/2/b")
    assert Route("/static/*", None).matches("GET", "/static/css/site.css")
    assert not Route("/static/*", None).matches("GET", "/static")
    assert Route("/a.b", None).matches("GET", "/a.b")
    assert not Route("/a.b", None).matches("GET", "/axb")
    assert not Route("/x", None, methods=["POST"]).matches("GET", "/x")
    assert "methods=['POST']" in repr(Route("/x", None, methods=["post"]))
    with pytest.raises(ValueError, match="pattern must be a path starting with"):
        Route("x", None)
    with pytest.raises(ValueError, match=r"pattern may have .\*. only at its end"):
        Route("/a/*/b", None)
    with pytest.raises(TypeError, match="collection"):
        Route("/x", None, methods="GET")
    with pytest.raises(TypeError, match="policy"):
        Route("/x", "policy")  # type: ignore[arg-type]


# -- per-key policies -----------------------------------------------------------------


async def test_per_key_rate_limits() -> None:
    clock = ManualClock()
    svc = Service()
    app = ResilienceMiddleware(
        svc.app,
        key=header_key("X-API-Key"),
        per_key=lambda key: RateLimiter(1, per=60, clock=clock),
    )
    async with client(app) as c:
        a1 = await c.get("/ok", headers={"x-api-key": "a"})
        a2 = await c.get("/ok", headers={"x-api-key": "a"})
        b1 = await c.get("/ok", headers={"x-api-key": "b"})
        anonymous = [(await c.get("/ok")).status_code for _ in range(3)]
    assert (a1.status_code, a2.status_code, b1.status_code) == (200, 429, 200)
    assert a2.headers["retry-after"] == "60"
    assert anonymous == [200, 200, 200]  # no key: no per-key policy


async def test_per_key_policy_runs_outside_the_route_policy() -> None:
    clock = ManualClock()
    svc = Service()
    app = ResilienceMiddleware(
        svc.app,
        Bulkhead(5),
        key=client_ip,
        per_key=lambda key: RateLimiter(1, per=60, clock=clock),
    )
    async with client(app, client=("10.0.0.1", 5000)) as c:
        assert (await c.get("/ok")).status_code == 200
        assert (await c.get("/ok")).status_code == 429
    async with client(app, client=("10.0.0.2", 5000)) as c:
        assert (await c.get("/ok")).status_code == 200


async def test_per_key_memory_is_bounded_by_max_keys_and_ttl() -> None:
    clock = ManualClock()
    built: list[object] = []

    def build(key: object) -> Bulkhead:
        built.append(key)
        return Bulkhead(1)

    app = ResilienceMiddleware(
        Service().app, key=header_key("k"), per_key=build, max_keys=3, key_ttl=10, clock=clock
    )
    keyed = app._keyed
    assert keyed is not None
    async with client(app) as c:
        for name in "abcde":
            await c.get("/ok", headers={"k": name})
        assert len(keyed) == 3  # a and b dropped, least recently used first
        await c.get("/ok", headers={"k": "e"})
        assert built == list("abcde")  # e reused
        clock.advance(11)
        await c.get("/ok", headers={"k": "f"})
        assert len(keyed) <= 2  # idle keys dropped as new ones come


async def test_a_key_with_a_request_in_flight_is_never_dropped() -> None:
    svc = Service()
    app = ResilienceMiddleware(
        svc.app, key=header_key("k"), per_key=lambda key: Bulkhead(1), max_keys=1
    )
    async with client(app) as c, anyio.create_task_group() as tg:

        async def hold() -> None:
            await c.get("/hold", headers={"k": "busy"})

        tg.start_soon(hold)
        await svc.entered.wait()
        for name in "xyz":
            await c.get("/ok", headers={"k": name})
        # Had "busy" been dropped, a new Bulkhead(1) would admit this one.
        response = await c.get("/ok", headers={"k": "busy"})
        svc.release.set()
    assert response.status_code == 503


# -- construction ---------------------------------------------------------------------


def test_invalid_options() -> None:
    app = Service().app
    with pytest.raises(ValueError, match="per_key"):
        ResilienceMiddleware(app, key=client_ip)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="policy"):
        ResilienceMiddleware(app, "bulkhead")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="failure_status"):
        ResilienceMiddleware(app, failure_status=500)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="deadline_headers"):
        ResilienceMiddleware(app, deadline_headers="x-request-timeout")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_limit"):
        ResilienceMiddleware(app, buffer_limit=-1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="key_ttl"):
        ResilienceMiddleware(app, key=client_ip, per_key=Bulkhead, key_ttl=-1)  # type: ignore[arg-type]


async def test_per_key_factory_must_return_a_policy() -> None:
    app = ResilienceMiddleware(Service().app, key=client_ip, per_key=lambda key: "nope")  # type: ignore[arg-type, return-value]
    async with client(app) as c:
        with pytest.raises(TypeError, match="policy"):
            await c.get("/ok")
