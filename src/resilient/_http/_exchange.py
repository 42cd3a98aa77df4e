"""One outgoing request across its attempts: deadline, judged responses, held responses.

The shells (``resilient.httpx``, ``resilient.requests``) build one :class:`Exchange`
per request and run their *attempt* (send once, judge the response) through the guards
of their ``_client.Client``:

* the deadline of each attempt (:func:`deadline`): what is left of the caller's, as the
  header to send and the bound on the request's own timeouts (:func:`clamp`);
* the failed responses (:meth:`Exchange.judge`): raised as an ``HTTPStatusFailure`` so
  the policies see a failure, held until the next attempt (which closes them) or the
  end (:func:`run_sync`, :func:`run_async`), where the last one is the caller's
  response and every other is closed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from resilient._core._errors import TimeoutExceededError
from resilient._core._timeout_header import header
from resilient._http._classify import HTTPStatusFailure, parse_retry_after
from resilient._waiting._deadline import remaining

if TYPE_CHECKING:
    from resilient._http._client import Client

__all__ = [
    "Exchange",
    "aclose_quietly",
    "clamp",
    "close_quietly",
    "deadline",
    "run_async",
    "run_sync",
]

logger = logging.getLogger("resilient")


class Exchange:
    """The state of one request across its attempts (see the module docstring).

    Attributes:
        repeatable_body: Whether the body can be sent again (bytes, or the user said
            a stream may be re-sent).
        attempts: Attempts begun.
        held: Failed responses not yet closed (the last may be the caller's).
        base: What the shell keeps for every attempt (the request's own timeouts).
    """

    __slots__ = ("attempts", "base", "client", "held", "repeatable_body")

    def __init__(self, client: Client, repeatable_body: bool, base: Any = None) -> None:
        self.client = client
        self.repeatable_body = repeatable_body or client.repeat_streams
        self.attempts = 0
        self.held: list[Any] = []
        self.base = base

    def repeatable(self) -> bool:
        """Whether another attempt may send the request again."""
        return self.repeatable_body

    def begin(self) -> list[Any]:
        """Start an attempt; the failed responses of earlier ones, for the shell to close."""
        self.attempts += 1
        held = self.held
        if held:
            self.held = []
        return held

    def judge(
        self, response: Any, status: int, retry_after: Callable[[Any], str | None] | None
    ) -> Any:
        """``response`` if it succeeded; else raise it as an ``HTTPStatusFailure``.

        ``retry_after(response)`` reads the ``Retry-After`` header: only for a failure
        (reading a header is a scan of them all in httpx, a cost on every request).
        """
        client = self.client
        try:
            failed = client.is_failure(status)
        except Exception:
            # The user's predicate: its failure must not become the caller's result.
            logger.exception(
                "%s: failure_statuses raised for status %d; counted as a success",
                client.name,
                status,
            )
            return response
        if not failed:
            return response
        wait = None
        value = None if retry_after is None else retry_after(response)
        if value is not None:
            try:
                wait = parse_retry_after(value, client.wall())
            except Exception:
                logger.exception("%s: the wall clock failed; Retry-After ignored", client.name)
            if wait is not None:
                wait = min(wait, client.max_retry_after)
        failure = HTTPStatusFailure(response, status, wait)
        failure.exchange = self
        self.held.append(response)
        raise failure

    def outcome(self, failure: HTTPStatusFailure) -> Any:
        """The response the caller gets when the last attempt's failure came out."""
        if failure.exchange is not self:
            raise failure  # another request's (a nested transport's): not ours to unwrap
        return failure.response

    def leftovers(self, keep: Any = None) -> list[Any]:
        """The held responses to close at the end: all but ``keep`` (the caller's)."""
        held, self.held = self.held, []
        return [response for response in held if response is not keep]


def deadline(name: str | None) -> tuple[float | None, str | None]:
    """What is left of the caller's deadline, and the header value that says so.

    Raises ``TimeoutExceededError`` when it has already passed: a request sent now
    would outlive its caller.
    """
    left = remaining()
    if left is None:
        return None, None
    if left <= 0.0:
        raise TimeoutExceededError(
            "the caller's deadline passed before the request was sent", seconds=0.0
        )
    return left, None if name is None else header(name, left)


def clamp(value: float | None, left: float | None) -> float | None:
    """A timeout (``None``: none) bounded by the deadline's ``left`` seconds."""
    if left is None:
        return value
    return left if value is None or value > left else value


def close_quietly(close: Callable[[], object], name: str) -> None:
    """Close a response we hold; its failure is logged, never the caller's."""
    try:
        close()
    except Exception:
        logger.exception("%s: closing a failed response that was not kept failed", name)


async def aclose_quietly(close: Callable[[], Awaitable[object]], name: str) -> None:
    """The async twin of :func:`close_quietly`."""
    try:
        await close()
    except Exception:
        logger.exception("%s: closing a failed response that was not kept failed", name)


def _drop(exchange: Exchange, close: Callable[[Any], object], keep: Any = None) -> None:
    if not exchange.held:
        return
    for response in exchange.leftovers(keep):
        close_quietly(functools.partial(close, response), exchange.client.name)


def run_sync(
    guard: Callable[..., Any], exchange: Exchange, request: Any, close: Callable[[Any], object]
) -> Any:
    """Send ``request`` through ``guard``; the caller's response, failed ones closed.

    When the last attempt failed by status, its response is the caller's (see
    ``HTTPStatusFailure``); every other response held is closed.
    """
    try:
        response = guard(exchange, request)
    except HTTPStatusFailure as failure:
        try:
            response = exchange.outcome(failure)
        except BaseException:
            _drop(exchange, close)
            raise
        finally:
            del failure  # no frame <-> traceback cycle holding the response
    except BaseException:
        _drop(exchange, close)
        raise
    _drop(exchange, close, response)
    return response


async def run_async(
    guard: Callable[..., Awaitable[Any]],
    exchange: Exchange,
    request: Any,
    aclose: Callable[[Any], Awaitable[object]],
) -> Any:
    """The async twin of :func:`run_sync`."""
    try:
        response = await guard(exchange, request)
    except HTTPStatusFailure as failure:
        try:
            response = exchange.outcome(failure)
        except BaseException:
            await _adrop(exchange, aclose)
            raise
        finally:
            del failure
    except BaseException:
        await _adrop(exchange, aclose)
        raise
    await _adrop(exchange, aclose, response)
    return response


async def _adrop(
    exchange: Exchange, aclose: Callable[[Any], Awaitable[object]], keep: Any = None
) -> None:
    if not exchange.held:
        return
    for response in exchange.leftovers(keep):
        await aclose_quietly(functools.partial(aclose, response), exchange.client.name)
