"""The responses a client can act on: policy errors as RFC 9457 problem details.

A rejection or a timeout becomes an ``application/problem+json`` response whose status
tells the client what to do: 503 (the service sheds load, or a dependency is down),
429 (slow down), 504 (the deadline passed). ``Retry-After`` is whole seconds rounded
up, and at least 1, so a client that obeys it never comes back before the policy would
admit it. The details are generic on purpose: policy names are internal.
"""

from __future__ import annotations

import json
import math
from typing import Final

from resilient._core._errors import (
    BulkheadFullError,
    CircuitOpenError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
    TimeoutExceededError,
)
from resilient.asgi._types import Send

__all__ = ["problem_status", "retry_after_header", "send_problem"]

_TITLES: Final = {429: "Too Many Requests", 503: "Service Unavailable", 504: "Gateway Timeout"}


def _body(status: int, detail: str) -> bytes:
    problem = {"type": "about:blank", "title": _TITLES[status], "status": status, "detail": detail}
    return json.dumps(problem, separators=(",", ":")).encode()


# Built once: a rejection under overload must be cheap to answer.
_OPEN: Final = _body(503, "A dependency of this service is failing; the request was not attempted.")
_FULL: Final = _body(503, "The service is at capacity; the request was shed.")
_REJECTED: Final = _body(503, "The service is overloaded; the request was not attempted.")
_LIMITED: Final = _body(429, "Too many requests; retry after the time given in Retry-After.")
_TIMEOUT: Final = _body(504, "The request did not complete within its deadline.")


def retry_after_header(seconds: float | None) -> bytes | None:
    """``Retry-After`` for ``seconds``: whole seconds rounded up, at least 1."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return str(max(1, math.ceil(seconds))).encode()


def problem_status(exc: ResilienceError) -> tuple[int, bytes, bytes | None]:
    """The status, problem body and ``Retry-After`` value for a policy error."""
    if isinstance(exc, TimeoutExceededError):
        return 504, _TIMEOUT, None
    if isinstance(exc, RateLimitedError):
        return 429, _LIMITED, retry_after_header(exc.retry_after)
    if isinstance(exc, CircuitOpenError):
        return 503, _OPEN, retry_after_header(exc.retry_after)
    if isinstance(exc, BulkheadFullError):
        return 503, _FULL, None
    assert isinstance(exc, RejectedError)  # noqa: S101 -- the caller catches only these
    return 503, _REJECTED, None


async def send_problem(send: Send, exc: ResilienceError, head: bool) -> None:
    """Answer with ``exc``'s problem response (headers only for a ``HEAD`` request)."""
    status, body, retry_after = problem_status(exc)
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if retry_after is not None:
        headers.append((b"retry-after", retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
