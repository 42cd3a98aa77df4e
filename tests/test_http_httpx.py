"""resilient.httpx end to end: real httpx clients, a real uvicorn server on 127.0.0.1.

Sync (``httpx.Client``) and async (``httpx.AsyncClient``, on asyncio and trio) through
one ``ResilienceTransport`` class. Retries wait on a ``ManualClock``, so a
``Retry-After: 2`` costs no real time and the waits are read from the events; a
caller's deadline is set on a ``ManualClock`` too, so the header sent is exact.
"""

from __future__ import annotations

import email.utils
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests import http_server
from tests.http_server import Backend, caller_deadline

from resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    Registry,
    Retry,
    RetryScheduled,
    compose,
)
from resilient.httpx import HTTPStatusFailure, ResilienceTransport
from resilient.testing import ManualClock, capture_events

NOW = 1_700_000_000.0

# The real server's fixtures, shared with the other client's tests.
server, backend, url = http_server.server, http_server.backend, http_server.url


def transport(policy: Any, **options: Any) -> ResilienceTransport:
    return ResilienceTransport(policy, registry=Registry(), wall=lambda: NOW, **options)


def waits(events: list[Any]) -> list[float]:
    return [e.delay for e in events if isinstance(e, RetryScheduled)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- sync --------------------------------------------------------------------------


def test_a_flaky_endpoint_recovers_on_retry(backend: Backend, url: str) -> None:
    backend.fail(503, 502)
    clock = ManualClock()
    t = transport(Retry(3, wait=0.25, clock=clock))
    with httpx.Client(transport=t, base_url=url) as client, capture_events() as events:
        response = client.get("/status")
    assert (response.status_code, response.text, backend.calls) == (200, "status 200", 3)
    assert waits(events) == [0.25, 0.25]


def test_exhausted_retries_return_the_last_response(backend: Backend, url: str) -> None:
    backend.fail(500, 502, 503)
    held: list[httpx.Response] = []
    retry = Retry(3, wait=0.0, clock=ManualClock())
    retry.add_listener(
        lambda e: (
            held.append(e.exception.response)  # type: ignore[attr-defined]
            if isinstance(e, RetryScheduled)
            else None
        )
    )
    with httpx.Client(transport=transport(retry), base_url=url) as client:
        response = client.get("/status")
    # The server's own answer, not our exception; the earlier ones were closed.
    assert (response.status_code, response.text) == (503, "status 503")
    assert [r.status_code for r in held] == [500, 502]
    assert all(r.is_closed for r in held)
    assert retry.metrics().exhausted == 1


def test_4xx_is_a_success_for_the_breaker_5xx_and_429_are_failures(
    backend: Backend, url: str
) -> None:
    breaker = CircuitBreaker("b", minimum_calls=100)
    backend.fail(404, 400, 409, 429, 500, 503)
    with httpx.Client(transport=transport(breaker), base_url=url) as client:
        statuses = [client.get("/status").status_code for _ in range(7)]
    assert statuses == [404, 400, 409, 429, 500, 503, 200]
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed_calls) == (7, 3)


def test_failure_statuses_are_configurable(backend: Backend, url: str) -> None:
    breaker = CircuitBreaker("b", minimum_calls=100)
    backend.fail(404, 503)
    t = transport(breaker, failure_statuses={404})
    with httpx.Client(transport=t, base_url=url) as client:
        client.get("/status")
        client.get("/status")
    assert breaker.metrics().failed_calls == 1


def test_an_open_breaker_rejects_without_sending(backend: Backend, url: str) -> None:
    breaker = CircuitBreaker("b", minimum_calls=2, window=CountWindow(2))
    backend.fail(503, 503)
    with httpx.Client(transport=transport(breaker), base_url=url) as client:
        client.get("/status")
        client.get("/status")
        with pytest.raises(CircuitOpenError):
            client.get("/status")
    assert backend.calls == 2


def test_connection_errors_are_failures_and_retried() -> None:
    breaker = CircuitBreaker("b", minimum_calls=100)
    retry = Retry(2, wait=0.0, clock=ManualClock())
    t = transport(compose(retry, breaker))
    with (
        httpx.Client(transport=t, base_url=f"http://127.0.0.1:{free_port()}") as client,
        pytest.raises(httpx.ConnectError),
    ):
        client.get("/ok")
    assert breaker.metrics().failed_calls == 2
    assert retry.metrics().exhausted == 1


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_the_next_wait(backend: Backend, url: str, form: str) -> None:
    value = "2" if form == "seconds" else email.utils.formatdate(NOW + 2, usegmt=True)
    backend.fail(429, 503, **{"retry-after": value})
    clock = ManualClock()
    t = transport(Retry(3, wait=0.1, clock=clock))
    with httpx.Client(transport=t, base_url=url) as client, capture_events() as events:
        assert client.get("/status").status_code == 200
    assert waits(events) == [2.0, 2.0]
    assert clock.monotonic() == 4.0


def test_retry_after_is_capped(backend: Backend, url: str) -> None:
    backend.fail(503, **{"retry-after": "3600"})
    clock = ManualClock()
    t = transport(Retry(2, clock=clock), max_retry_after=5.0)
    with httpx.Client(transport=t, base_url=url) as client, capture_events() as events:
        assert client.get("/status").status_code == 200
    assert waits(events) == [5.0]


def test_retry_after_past_the_deadline_returns_the_response_at_once(
    backend: Backend, url: str
) -> None:
    backend.fail(503, **{"retry-after": "30"})
    clock = ManualClock()
    retry = Retry(3, clock=clock)
    with (
        httpx.Client(transport=transport(retry), base_url=url) as client,
        caller_deadline(10.0, clock),
    ):
        response = client.get("/status")
    assert (response.status_code, response.headers["retry-after"]) == (503, "30")
    assert (backend.calls, clock.monotonic(), retry.metrics().deadline_give_ups) == (1, 0.0, 1)


def test_the_deadline_travels_and_bounds_the_timeout(backend: Backend, url: str) -> None:
    clock = ManualClock()
    seen: list[Any] = []

    class Spy(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.extensions["timeout"])
            return super().handle_request(request)

    t = transport(CircuitBreaker("b"), wrapped=Spy())
    with httpx.Client(transport=t, base_url=url, timeout=httpx.Timeout(5.0, read=0.5)) as client:
        client.get("/ok")  # no deadline: no header, the client's own timeouts
        with caller_deadline(1.5, clock):
            client.get("/ok")
            clock.advance(0.25)
            client.get("/ok")
    assert backend.deadlines == [None, "1.500", "1.250"]
    assert seen[0] == {"connect": 5.0, "read": 0.5, "write": 5.0, "pool": 5.0}
    assert seen[1] == {"connect": 1.5, "read": 0.5, "write": 1.5, "pool": 1.5}
    assert seen[2] == {"connect": 1.25, "read": 0.5, "write": 1.25, "pool": 1.25}


def test_the_header_name_is_configurable_and_can_be_off(backend: Backend, url: str) -> None:
    clock = ManualClock()
    with caller_deadline(2.0, clock):
        t = transport(CircuitBreaker("b"), deadline_header="grpc-timeout")
        with httpx.Client(transport=t, base_url=url) as client:
            client.get("/ok")
        t = transport(CircuitBreaker("b"), deadline_header=None)
        with httpx.Client(transport=t, base_url=url) as client:
            client.get("/ok")
    assert backend.deadlines == [None, None]  # x-request-timeout was not sent


def test_a_slow_endpoint_never_outlives_the_caller(backend: Backend, url: str) -> None:
    # Real time: the caller has 0.2 s left, the server answers after 1 s.
    from resilient import MonotonicClock  # noqa: PLC0415

    breaker = CircuitBreaker("b", minimum_calls=100)
    with (
        httpx.Client(transport=transport(breaker), base_url=url, timeout=30) as client,
        caller_deadline(0.2, MonotonicClock()),
        pytest.raises(httpx.ReadTimeout),
    ):
        client.get("/slow", params={"seconds": "1"})
    assert breaker.metrics().failed_calls == 1
    assert backend.deadlines[0] is not None
    assert float(backend.deadlines[0]) <= 0.2


def test_a_streamed_upload_is_never_sent_twice(backend: Backend, url: str) -> None:
    backend.fail(503, 503)
    retry = Retry(3, wait=0.0, clock=ManualClock())

    def upload() -> Iterator[bytes]:
        yield b"part1,"
        yield b"part2"

    with httpx.Client(transport=transport(retry), base_url=url) as client:
        response = client.post("/echo", content=upload())
    assert (response.status_code, backend.calls, backend.bodies) == (503, 1, [b"part1,part2"])
    assert retry.metrics().exhausted == 1


def test_a_bytes_body_is_sent_again(backend: Backend, url: str) -> None:
    backend.fail(503)
    t = transport(Retry(3, wait=0.0, clock=ManualClock()))
    with httpx.Client(transport=t, base_url=url) as client:
        response = client.post("/echo", content=b"payload")
    assert (response.status_code, response.content) == (200, b"payload")
    assert backend.bodies == [b"payload", b"payload"]


def test_a_streamed_response_reaches_the_caller_unread(backend: Backend, url: str) -> None:
    backend.fail(503)
    t = transport(Retry(2, wait=0.0, clock=ManualClock()))
    with (
        httpx.Client(transport=t, base_url=url) as client,
        client.stream("GET", "/stream") as response,
    ):
        chunks = list(response.iter_bytes())
    assert response.status_code == 200
    assert b"".join(chunks) == b"chunk0,chunk1,chunk2,chunk3,chunk4,"


def test_a_fallback_can_answer_for_a_failed_response(backend: Backend, url: str) -> None:
    backend.fail(500)

    def cached(exc: BaseException) -> httpx.Response:
        assert isinstance(exc, HTTPStatusFailure)
        return httpx.Response(200, text=f"cached after {exc.status}")

    with httpx.Client(transport=transport(Fallback(cached)), base_url=url) as client:
        response = client.get("/status")
    assert (response.status_code, response.text) == (200, "cached after 500")


def test_per_host_policies_by_authority(backend: Backend, url: str) -> None:
    registry = Registry()
    t = ResilienceTransport(
        lambda name: CircuitBreaker(name, minimum_calls=100), name="svc", registry=registry
    )
    host = url.removeprefix("http://")
    localhost = host.replace("127.0.0.1", "localhost")
    with httpx.Client(transport=t) as client:
        client.get(f"{url}/ok")
        client.get(f"http://{localhost}/ok")
    assert sorted(registry) == sorted([f"svc:{host}", f"svc:{localhost}"])
    policy = t.policy(host)
    assert isinstance(policy, CircuitBreaker)
    assert policy.metrics().calls == 1
    assert t.metrics() == type(t.metrics())(2, 100, 2, 0)
    assert repr(t) == "<ResilienceTransport 'svc'>"
    assert t.name == "svc"


def test_a_wrapped_async_transport_refuses_a_sync_client(url: str) -> None:
    t = transport(CircuitBreaker("b"), wrapped=httpx.AsyncHTTPTransport())
    with httpx.Client(transport=t, base_url=url) as client, pytest.raises(TypeError, match="async"):
        client.get("/ok")


def test_wrapped_must_be_a_transport() -> None:
    with pytest.raises(TypeError, match="wrapped"):
        ResilienceTransport(CircuitBreaker("b"), wrapped="http://x")  # type: ignore[arg-type]


# -- async: asyncio and trio ---------------------------------------------------------


@pytest.fixture
def aclient(url: str) -> Any:
    def make(policy: Any, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=transport(policy, **options), base_url=url)

    return make


async def test_async_flaky_and_retry_after(backend: Backend, aclient: Any) -> None:
    backend.fail(503, 429, **{"retry-after": "2"})
    clock = ManualClock()
    async with aclient(Retry(3, wait=0.1, clock=clock)) as client:
        with capture_events() as events:
            response = await client.get("/status")
    assert (response.status_code, backend.calls) == (200, 3)
    assert waits(events) == [2.0, 2.0]


async def test_async_exhausted_returns_the_last_response(backend: Backend, aclient: Any) -> None:
    backend.fail(500, 503)
    async with aclient(Retry(2, wait=0.0, clock=ManualClock())) as client:
        response = await client.get("/status")
    assert (response.status_code, response.text) == (503, "status 503")


async def test_async_streamed_upload_is_sent_once(backend: Backend, aclient: Any) -> None:
    backend.fail(503)

    async def upload() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    async with aclient(Retry(3, wait=0.0, clock=ManualClock())) as client:
        response = await client.post("/echo", content=upload())
    assert (response.status_code, backend.bodies) == (503, [b"ab"])


async def test_async_streamed_response_and_deadline(backend: Backend, aclient: Any) -> None:
    backend.fail(502)
    clock = ManualClock()
    async with aclient(Retry(2, wait=0.0, clock=clock)) as client:
        with caller_deadline(3.0, clock):
            async with client.stream("GET", "/stream") as response:
                body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert body == b"chunk0,chunk1,chunk2,chunk3,chunk4,"
    assert backend.deadlines == ["3.000", "3.000"]


async def test_async_connection_error_opens_the_breaker(aclient: Any) -> None:
    breaker = CircuitBreaker("b", minimum_calls=1)
    t = transport(breaker)
    async with httpx.AsyncClient(transport=t, base_url=f"http://127.0.0.1:{free_port()}") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/ok")
        with pytest.raises(CircuitOpenError):
            await client.get("/ok")


async def test_a_wrapped_sync_transport_refuses_an_async_client(url: str) -> None:
    t = transport(CircuitBreaker("b"), wrapped=httpx.HTTPTransport())
    async with httpx.AsyncClient(transport=t, base_url=url) as client:
        with pytest.raises(TypeError, match="sync"):
            await client.get("/ok")


async def test_async_fallback_answers_and_the_failed_response_is_closed(
    backend: Backend, aclient: Any
) -> None:
    backend.fail(500)
    failed: list[httpx.Response] = []

    def cached(exc: BaseException) -> httpx.Response:
        assert isinstance(exc, HTTPStatusFailure)
        failed.append(exc.response)
        return httpx.Response(200, text="cached")

    async with aclient(Fallback(cached)) as client:
        response = await client.get("/status")
    assert (response.text, failed[0].status_code, failed[0].is_closed) == ("cached", 500, True)
