"""resilient.requests end to end: a real ``requests.Session``, a real uvicorn server.

The adapter is a shell over the same ``resilient._http`` as the httpx transport, so
these tests check what the shell does: mounting, the response the caller gets,
``Retry-After``, the deadline (header and ``timeout``), bodies that can and cannot be
sent again, per-host policies.
"""

from __future__ import annotations

import email.utils
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter
from tests import http_server
from tests.http_server import Backend, caller_deadline

from resilient import CircuitBreaker, Registry, Retry, RetryScheduled, compose
from resilient.requests import ResilienceAdapter
from resilient.requests._adapter import authority
from resilient.testing import ManualClock, capture_events

NOW = 1_700_000_000.0

# The real server's fixtures, shared with the other client's tests.
server, backend, url = http_server.server, http_server.backend, http_server.url


@contextmanager
def session(policy: Any, **options: Any) -> Iterator[requests.Session]:
    adapter = ResilienceAdapter(policy, registry=Registry(), wall=lambda: NOW, **options)
    with requests.Session() as s:
        s.mount("http://", adapter)
        yield s


def waits(events: list[Any]) -> list[float]:
    return [e.delay for e in events if isinstance(e, RetryScheduled)]


def test_a_flaky_endpoint_recovers(backend: Backend, url: str) -> None:
    backend.fail(500, 503)
    with session(Retry(3, wait=0.5, clock=ManualClock())) as s, capture_events() as events:
        response = s.get(f"{url}/status")
    assert (response.status_code, response.text, backend.calls) == (200, "status 200", 3)
    assert waits(events) == [0.5, 0.5]


def test_exhausted_retries_return_the_last_response(backend: Backend, url: str) -> None:
    backend.fail(500, 502, 503)
    with session(Retry(3, wait=0.0, clock=ManualClock())) as s:
        response = s.get(f"{url}/status")
    assert (response.status_code, response.text) == (503, "status 503")


def test_4xx_succeeds_5xx_and_429_fail(backend: Backend, url: str) -> None:
    breaker = CircuitBreaker("b", minimum_calls=100)
    backend.fail(404, 429, 500)
    with session(breaker) as s:
        assert [s.get(f"{url}/status").status_code for _ in range(4)] == [404, 429, 500, 200]
    assert (breaker.metrics().calls, breaker.metrics().failed_calls) == (4, 2)


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_retry_after_is_the_next_wait(backend: Backend, url: str, form: str) -> None:
    value = "3" if form == "seconds" else email.utils.formatdate(NOW + 3, usegmt=True)
    backend.fail(429, **{"retry-after": value})
    clock = ManualClock()
    with session(Retry(2, wait=0.1, clock=clock)) as s, capture_events() as events:
        assert s.get(f"{url}/status").status_code == 200
    assert waits(events) == [3.0]


def test_the_deadline_travels_and_bounds_the_timeout(backend: Backend, url: str) -> None:
    seen: list[Any] = []

    class Spy(HTTPAdapter):
        def send(self, request: Any, **options: Any) -> requests.Response:
            seen.append(options["timeout"])
            return super().send(request, **options)

    clock = ManualClock()
    with session(CircuitBreaker("b"), wrapped=Spy()) as s:
        s.get(f"{url}/ok", timeout=9)
        with caller_deadline(2.0, clock):
            s.get(f"{url}/ok", timeout=(0.5, 9))
            clock.advance(1)
            s.get(f"{url}/ok")
    assert backend.deadlines == [None, "2.000", "1.000"]
    assert seen == [9, (0.5, 2.0), 1.0]


def test_a_slow_endpoint_never_outlives_the_caller(backend: Backend, url: str) -> None:
    from resilient import MonotonicClock  # noqa: PLC0415

    breaker = CircuitBreaker("b", minimum_calls=100)
    with (
        session(breaker) as s,
        caller_deadline(0.2, MonotonicClock()),
        pytest.raises(requests.Timeout),
    ):
        s.get(f"{url}/slow", params={"seconds": "1"}, timeout=30)
    assert breaker.metrics().failed_calls == 1


def test_a_streamed_upload_is_never_sent_twice(backend: Backend, url: str) -> None:
    backend.fail(503, 503)
    retry = Retry(3, wait=0.0, clock=ManualClock())

    def upload() -> Iterator[bytes]:
        yield b"part1,"
        yield b"part2"

    with session(retry) as s:
        response = s.post(f"{url}/echo", data=upload())
    assert (response.status_code, backend.calls, backend.bodies) == (503, 1, [b"part1,part2"])


def test_a_bytes_body_is_sent_again(backend: Backend, url: str) -> None:
    backend.fail(502)
    with session(Retry(2, wait=0.0, clock=ManualClock())) as s:
        response = s.post(f"{url}/echo", data=b"payload")
    assert (response.status_code, backend.bodies) == (200, [b"payload", b"payload"])


def test_a_streamed_response(backend: Backend, url: str) -> None:
    backend.fail(503)
    with session(Retry(2, wait=0.0, clock=ManualClock())) as s:
        response = s.get(f"{url}/stream", stream=True)
        assert b"".join(response.iter_content(4)) == b"chunk0,chunk1,chunk2,chunk3,chunk4,"


def test_connection_errors_are_failures() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    breaker = CircuitBreaker("b", minimum_calls=100)
    with (
        session(compose(Retry(2, wait=0.0, clock=ManualClock()), breaker)) as s,
        pytest.raises(requests.ConnectionError),
    ):
        s.get(f"http://127.0.0.1:{port}/ok")
    assert breaker.metrics().failed_calls == 2


def test_per_host_policies(backend: Backend, url: str) -> None:
    registry = Registry()
    adapter = ResilienceAdapter(CircuitBreaker, name="svc", registry=registry, max_hosts=1)
    with requests.Session() as s:
        s.mount("http://", adapter)
        s.get(f"{url}/ok")
        s.get(url.replace("127.0.0.1", "localhost") + "/ok")
    host = url.removeprefix("http://").replace("127.0.0.1", "localhost")
    assert list(registry) == [f"svc:{host}"]
    assert adapter.metrics() == type(adapter.metrics())(1, 1, 2, 1)
    assert isinstance(adapter.policy(host), CircuitBreaker)
    assert (adapter.name, repr(adapter)) == ("svc", "<ResilienceAdapter 'svc'>")


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("http://Example.com/x", "example.com"),
        ("http://example.com:80/x", "example.com"),
        ("https://example.com:443/x", "example.com"),
        ("https://example.com:8443/x", "example.com:8443"),
        ("http://example.com:bad/x", "example.com"),
    ],
)
def test_authority(url: str, host: str) -> None:
    assert authority(url) == host


def test_wrapped_must_be_an_adapter() -> None:
    with pytest.raises(TypeError, match="wrapped"):
        ResilienceAdapter(CircuitBreaker("b"), wrapped=object())  # type: ignore[arg-type]


def test_a_user_timeout_object_is_left_alone() -> None:
    from requests.adapters import TimeoutSauce  # noqa: PLC0415

    from resilient.requests._adapter import _bounded  # noqa: PLC0415

    mine = TimeoutSauce(connect=1, read=2)
    assert _bounded(mine, 0.5) is mine


def test_a_fallback_answers_and_the_failed_response_is_closed(backend: Backend, url: str) -> None:
    from resilient import Fallback  # noqa: PLC0415
    from resilient.requests import HTTPStatusFailure  # noqa: PLC0415

    backend.fail(503)
    failed: list[requests.Response] = []

    def cached(exc: BaseException) -> requests.Response:
        assert isinstance(exc, HTTPStatusFailure)
        failed.append(exc.response)
        response = requests.Response()
        response.status_code = 200
        response._content = b"cached"
        return response

    with session(Fallback(cached)) as s:
        response = s.get(f"{url}/status")
    assert (response.text, failed[0].status_code) == ("cached", 503)
    assert failed[0].raw.closed
