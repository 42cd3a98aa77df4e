"""Once a response has started, nothing may replace it, and held-back responses keep timing.

Raw ASGI apps and messages, so that what the server would see is exact: the messages
sent and the exception the middleware lets out.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resilient import Fallback, Retry, RetryThrottle, Timeout, TimeoutExceededError, compose
from resilient.asgi import ResilienceMiddleware

SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}


async def drive(app: Any) -> tuple[list[dict[str, Any]], BaseException | None]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app(dict(SCOPE), receive, send)
    except Exception as exc:
        return sent, exc
    return sent, None


class Spare:
    """A fallback response (an ASGI app)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"spare"})


async def starts_then_raises(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise RuntimeError("broke mid-stream")


async def test_a_fallback_does_not_hide_an_error_after_the_response_started() -> None:
    fallback = Fallback(lambda exc: Spare(), name="spare")
    sent, error = await drive(ResilienceMiddleware(starts_then_raises, fallback))
    assert isinstance(error, RuntimeError)  # reaches the server, which aborts
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[-1]["more_body"] is True  # nothing pretends the body is complete
    assert fallback._core.used == 0


async def test_a_fallback_still_answers_an_error_before_the_response_started() -> None:
    async def raises(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("broke before answering")

    sent, error = await drive(ResilienceMiddleware(raises, Fallback(lambda exc: Spare())))
    assert error is None
    assert [m.get("status") for m in sent] == [200, None]
    assert sent[-1]["body"] == b"spare"


async def test_a_body_timeout_after_the_start_is_not_replaced_by_a_fallback() -> None:
    async def stalls(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"p1", "more_body": True})
        await anyio.Event().wait()

    policy = compose(Fallback(lambda exc: Spare()), Timeout(0.05))
    sent, error = await drive(ResilienceMiddleware(stalls, policy, timeout_body=True))
    assert isinstance(error, TimeoutExceededError)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


async def test_a_held_back_failure_does_not_stop_the_start_timeout() -> None:
    """A 500 kept for a retry is not a response start: the Timeout goes on counting."""
    attempts = 0

    async def fails_then_hangs(scope: Any, receive: Any, send: Any) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": b"error"})
            return
        await anyio.Event().wait()

    policy = compose(Timeout(0.05), Retry(3, wait=0))
    with anyio.fail_after(5):  # a bound on the test, reached only if the timeout broke
        sent, error = await drive(ResilienceMiddleware(fails_then_hangs, policy))
    assert error is None
    assert attempts == 2
    assert sent[0]["status"] == 504


async def test_a_flushed_failure_still_ends_the_start_timeout() -> None:
    """When the held-back failure does go out, a streamed body after it is not timed."""

    async def fails_slowly(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"busy"})

    policy = compose(Timeout(5), Retry(2, wait=0))
    sent, error = await drive(ResilienceMiddleware(fails_slowly, policy))
    assert error is None
    assert [m.get("status") for m in sent] == [503, None]


@pytest.mark.parametrize("first", [500, 503])
async def test_retries_through_the_middleware_count_like_any_retry(first: int) -> None:
    statuses = [first, 200]

    async def flaky(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": statuses.pop(0), "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    throttle = RetryThrottle(max_tokens=10, token_ratio=0.5)
    retry = Retry(3, wait=0, budget=throttle, name="through-asgi")
    sent, error = await drive(ResilienceMiddleware(flaky, retry))
    assert error is None
    assert sent[0]["status"] == 200
    metrics = retry.metrics()
    assert (metrics.retries, metrics.recovered, metrics.exhausted) == (1, 1, 0)
    # The throttle saw both outcomes, exactly as a plain Retry reports them.
    plain_throttle = RetryThrottle(max_tokens=10, token_ratio=0.5)
    outcomes = [RuntimeError("first"), "ok"]

    async def plain_flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    await Retry(3, wait=0, budget=plain_throttle).call_async(plain_flaky)
    assert throttle.snapshot() == plain_throttle.snapshot()
    assert throttle.snapshot().balance < 5.0  # the failure did cost a token


async def test_a_request_that_cannot_be_repeated_counts_as_exhausted() -> None:
    async def streams_a_failure(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
        await send({"type": "http.response.body", "body": b"y" * 100})

    retry = Retry(3, wait=0, name="unrepeatable")
    app = ResilienceMiddleware(streams_a_failure, retry, buffer_limit=10)
    sent, error = await drive(app)
    assert error is None
    assert sent[0]["status"] == 500  # too big to hold back: it went out, and stays
    metrics = retry.metrics()
    assert (metrics.retries, metrics.recovered, metrics.exhausted) == (0, 0, 1)
