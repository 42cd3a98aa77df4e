"""One HTTP request as the middleware's policies see it: outcome, response, request body.

An :class:`Exchange` sits between the app and the server for one request. Its ``send``
watches the response start: the status decides whether the attempt failed (5xx by
default), and a failed response is held back (up to a size limit) while a retry or a
fallback could still replace it. Its ``receive`` records the request body (up to the
same limit) so that a retried attempt can read it again. ``repeatable`` says whether
another attempt is still possible: nothing of the response has gone out, and the body
read so far can be replayed.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Final

from resilient._policies._timeout import Armed
from resilient._waiting._deadline import DEADLINE, Deadline
from resilient.asgi._types import Message, Receive, Scope, Send

__all__ = ["START_TIMERS", "Exchange", "FailureStatusError", "Replay"]

START_TIMERS: Final[contextvars.ContextVar[list[Armed] | None]] = contextvars.ContextVar(
    "resilient_asgi_start_timers", default=None
)
"""The armed deadlines of the timeouts that end at this request's response start."""


class FailureStatusError(Exception):
    """The app answered with a status the middleware counts as a failure (5xx by default).

    Raised inside the guarded call, where breakers record it as a failure and retries and
    fallbacks may act on it (``Retry(on=FailureStatusError)``); the middleware catches it
    outside and delivers the app's own response, unless a retry or fallback replaced it.

    Attributes:
        status: The HTTP status of the app's response.
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"the app answered with status {status}")
        self.status = status


class Replay:
    """The request body read so far, kept for the next attempt while it fits ``limit``."""

    __slots__ = ("_position", "_receive", "_size", "limit", "messages")

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.messages: list[Message] | None = []  # None: too large to replay
        self._position = 0
        self._size = 0

    async def receive(self) -> Message:
        """The next request event: from the record first, then from the server."""
        messages = self.messages
        if messages is not None and self._position < len(messages):
            self._position += 1
            return messages[self._position - 1]
        message = await self._receive()
        if messages is not None and message["type"] == "http.request":
            self._size += len(message.get("body", b""))
            if self._size > self.limit:
                self.messages = None  # cannot be replayed; this attempt still goes on
            else:
                messages.append(message)
                self._position += 1
        return message

    def rewind(self) -> None:
        """Make the next ``receive()`` start again from the first body event."""
        self._position = 0


class Exchange:
    """The state of one request across its attempts (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_buffered",
        "_send",
        "attempts",
        "buffering",
        "failed",
        "failure",
        "limit",
        "outer_deadline",
        "replay",
        "scope",
        "started",
        "status",
        "timers",
    )

    def __init__(
        self,
        send: Send,
        scope: Scope,
        failure: Callable[[int], bool] | None,
        buffering: bool,
        limit: int,
    ) -> None:
        self._send = send
        self.scope = scope
        #: Whether a status is a failure; ``None``: the default, ``status >= 500``.
        self.failure = failure
        #: Whether a failed response is held back for a retry or fallback to replace.
        self.buffering = buffering
        self.limit = limit
        self.started = False  # a response start went out to the server
        self.failed = False
        self.status = 0
        self.attempts = 0
        self.replay: Replay | None = None
        self.timers: list[Armed] | None = None
        self.outer_deadline: Deadline | None = None
        self._buffer: list[Message] | None = None
        self._buffered = 0

    def repeatable(self) -> bool:
        """Whether another attempt is possible: no response out, the body replayable."""
        return not self.started and (self.replay is None or self.replay.messages is not None)

    def retry_scope(self) -> Scope:
        """Reset for another attempt; return the scope it runs with.

        The first attempt runs with the server's scope; each retry with a fresh copy of
        ``self.scope``, the copy taken before the first (the app may have written into
        the scope, as routers do).
        """
        self._buffer = None
        self._buffered = 0
        self.failed = False
        self.status = 0
        if self.replay is not None:
            self.replay.rewind()
        return dict(self.scope)

    def send(self, message: Message) -> Awaitable[None]:
        """The app's ``send``: classify the response, hold back a failed one."""
        # Not a coroutine function: on its common paths (the body of a response that is
        # out, a response start that is not held back) it hands back the server's own
        # awaitable, which saves a coroutine per message.
        if self.started:
            return self._send(message)
        if self._buffer is None and message["type"] == "http.response.start":
            status = self.status = message["status"]
            failure = self.failure
            # The default predicate (``is_server_error``) inlined: a call per request.
            if status >= 500 if failure is None else failure(status):  # noqa: PLR2004
                return self._send_failed_start(message)
            if self.timers:
                self._end_start_timeouts()
            self.started = True
        elif self._buffer is not None:
            return self._send_held(message)
        return self._send(message)

    async def _send_failed_start(self, message: Message) -> None:
        self.failed = True
        if self.buffering:
            # Held back, not sent: the start timeouts keep counting, since a retry or
            # fallback may still answer within them.
            self._buffer = [message]
            return
        if self.timers:
            self._end_start_timeouts()
        self.started = True
        await self._send(message)

    async def _send_held(self, message: Message) -> None:
        buffer = self._buffer
        assert buffer is not None  # noqa: S101 -- only called while holding back
        buffer.append(message)
        self._buffered += len(message.get("body", b""))
        if self._buffered > self.limit:
            await self.flush()  # too large to hold: it goes out, and stays

    def _end_start_timeouts(self) -> None:
        # The timeouts that cover the time to the response start stop counting: they
        # stay armed (they close in the task that opened them) but will not fire.
        # Code that runs from here on (a streamed body) sees the deadline from outside
        # them again; this context is the one the body is produced in.
        for armed in self.timers or ():
            armed.stop()
        DEADLINE.set(self.outer_deadline)

    async def flush(self) -> None:
        """Send the held-back response, if any: it becomes the request's response."""
        buffer = self._buffer
        if buffer is None:
            return
        self._buffer = None
        if self.timers:
            self._end_start_timeouts()  # the held-back start goes out now
        self.started = True
        for message in buffer:
            await self._send(message)

    def discard(self) -> None:
        """Drop the held-back response: something else answers instead."""
        self._buffer = None
