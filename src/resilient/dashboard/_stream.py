"""The ``/stream`` endpoint: Server-Sent Events of the registry's policies.

A stream opens with a ``snapshot`` event, sends ``metrics`` every ``interval`` (read by
its own :class:`~resilient.dashboard._readout.Sampler`, so its rates are its own), a
``transition`` event as soon as a named breaker changes state, and an SSE comment when
nothing was written for ``heartbeat`` seconds, so that proxies keep the connection.

Transitions are heard on the process-wide channel of notable events
(``NOTABLE_LISTENERS``), not with a listener on each policy: a listener on a breaker
makes every successful call build an event record, the notable channel does not. The
channel is joined by the first open stream of an app and left by its last (:class:`Hub`),
so a dashboard nobody watches costs the policies nothing. The listener runs in the
thread of the call that changed the state; it appends to each stream's queue and wakes
the stream's event loop without waiting for it (``call_soon_threadsafe`` on asyncio,
``run_sync_soon`` on trio), and whatever goes wrong in it is logged and counted, never
raised into the call.

Each stream runs in one task group with its ticker and a task watching for the client's
disconnect: a disconnect (or a failed send) cancels the group, and the stream leaves the
hub on the way out, so no task and no listener outlives it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import anyio
import sniffio

from resilient._core._events import NOTABLE_LISTENERS, Event, StateTransition
from resilient._core._fork import new_lock

if TYPE_CHECKING:
    from resilient._core._clock import Clock
    from resilient._policies._registry import Registry
    from resilient.asgi._types import Receive, Send
    from resilient.dashboard._readout import Sampler

__all__ = ["Hub", "Subscriber", "sse", "stream"]

logger = logging.getLogger("resilient")

_TICK: Final = "tick"
_WAKE: Final = "wake"
# Transitions kept for a slow stream; older ones are dropped (its next metrics event
# shows the states anyway).
_PENDING: Final = 256

SSE_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on, do not buffer the stream
]


def sse(event: str | None, data: Any) -> bytes:
    """One Server-Sent Event: ``event: <name>`` and ``data`` as one line of JSON."""
    body = json.dumps(data, separators=(",", ":"), default=str)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {body}\n\n".encode()


def _waker(nudge: Callable[[], None]) -> Callable[[], None]:
    """A function any thread may call to run ``nudge`` soon in the current event loop."""
    if sniffio.current_async_library() == "trio":
        import trio  # noqa: PLC0415 -- only under trio

        token = trio.lowlevel.current_trio_token()
        return lambda: token.run_sync_soon(nudge)
    import asyncio  # noqa: PLC0415

    loop = asyncio.get_running_loop()

    def wake() -> None:
        loop.call_soon_threadsafe(nudge)

    return wake


class Subscriber:
    """One open stream as the hub sees it: a queue of transitions and a way to wake it."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.pending: collections.deque[StateTransition] = collections.deque(maxlen=_PENDING)
        self._wake = wake

    def push(self, event: StateTransition) -> None:
        """Queue ``event`` and wake the stream (any thread; never waits)."""
        self.pending.append(event)  # deque.append is atomic
        self._wake()


class Hub:
    """An app's open streams, and its one listener on the notable events while any is open.

    Attributes:
        errors: How many times the listener failed (logged; the call is unaffected).
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        # Replaced, never changed in place (under the lock): the listener reads it from
        # any thread without the lock.
        self._subscribers: frozenset[Subscriber] = frozenset()
        self._lock = new_lock()
        self._listener = self._hear  # one bound method, so that remove() finds it
        self.errors = 0

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)

    @property
    def listening(self) -> bool:
        """Whether the hub's listener is registered."""
        return self._listener in NOTABLE_LISTENERS

    def join(self, subscriber: Subscriber) -> None:
        """Deliver transitions to ``subscriber`` from now on."""
        with self._lock:
            if not self._subscribers:
                NOTABLE_LISTENERS.append(self._listener)
            self._subscribers = self._subscribers | {subscriber}

    def leave(self, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber``; the last one out removes the listener."""
        with self._lock:
            self._subscribers = self._subscribers - {subscriber}
            if not self._subscribers and self._listener in NOTABLE_LISTENERS:
                NOTABLE_LISTENERS.remove(self._listener)

    def _hear(self, event: Event) -> None:
        # Called in the thread of the user's call, for every notable event of every
        # policy in the process: filter first, cheaply, and never raise.
        if type(event) is not StateTransition:
            return
        try:
            if event.policy not in self._registry:
                return
            for subscriber in self._subscribers:
                subscriber.push(event)
        except Exception:
            self.errors += 1
            logger.exception("the dashboard failed to forward %r; the call is unaffected", event)


def _transition(event: StateTransition, sampler: Sampler) -> dict[str, Any]:
    return {
        "policy": event.policy,
        "kind": event.kind,
        "from_state": getattr(event.from_state, "value", event.from_state),
        "to_state": getattr(event.to_state, "value", event.to_state),
        "failure_rate": event.failure_rate,
        "slow_call_rate": event.slow_call_rate,
        "calls": event.calls,
        "entry": sampler.entry(event.policy) if event.policy is not None else None,
    }


class _Closed(Exception):  # noqa: N818 -- a signal inside this module, never raised out
    """The client is gone: a send failed."""


class _Stream:
    """One SSE response: its inbox, its ticker, its watcher of the client."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        sampler: Sampler,
        clock: Clock,
        interval: float,
        heartbeat: float,
        tick: Callable[[Sampler], bytes] | None,
    ) -> None:
        self._receive = receive
        self._send = send
        self._sampler = sampler
        self._clock = clock
        self._interval = interval
        self._heartbeat = heartbeat
        self._tick = tick
        # Ticks and wakes; transitions themselves wait in the subscriber's queue.
        self._inbox_in, self._inbox = anyio.create_memory_object_stream[str](4)
        self.subscriber = Subscriber(_waker(self._nudge))
        self._done = anyio.Event()

    def _nudge(self) -> None:  # in the event loop
        with contextlib.suppress(
            anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError
        ):
            self._inbox_in.send_nowait(_WAKE)  # if full, a wake is already queued

    async def _write(self, body: bytes) -> None:
        try:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})
        except OSError as exc:  # the server says the client is gone
            raise _Closed from exc

    async def _ticker(self) -> None:
        while True:
            # The next interval starts once the previous reading is written: a slow
            # client gets no backlog of ticks, and a manual clock moves one interval per
            # reading.
            await self._done.wait()
            await self._clock.asleep(self._interval)
            self._done = anyio.Event()
            await self._inbox_in.send(_TICK)

    async def _watch(self, scope: anyio.CancelScope) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    def _periodic(self) -> bytes:
        if self._tick is not None:
            return self._tick(self._sampler)
        return sse("metrics", self._sampler.read())

    async def _serve(self) -> None:
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        first = sse("snapshot", self._sampler.read()) if self._tick is None else self._periodic()
        await self._write(b"retry: 2000\n\n" + first)
        self._done.set()
        pending = self.subscriber.pending
        while True:
            item = None
            with anyio.move_on_after(self._heartbeat):
                item = await self._inbox.receive()
            if item is None:
                await self._write(b": heartbeat\n\n")
                continue
            chunks = []
            while pending:
                chunks.append(sse("transition", _transition(pending.popleft(), self._sampler)))
            if item == _TICK:
                chunks.append(self._periodic())
            if chunks:
                await self._write(b"".join(chunks))
            if item == _TICK:
                self._done.set()

    async def run(self) -> None:
        async with anyio.create_task_group() as group, self._inbox_in, self._inbox:
            group.start_soon(self._watch, group.cancel_scope)
            group.start_soon(self._ticker)
            try:
                await self._serve()
            except _Closed:
                pass  # the client is gone: end the stream
            finally:
                group.cancel_scope.cancel()  # the ticker and the watcher end with it


async def stream(
    receive: Receive,
    send: Send,
    *,
    hub: Hub,
    sampler: Sampler,
    clock: Clock,
    interval: float,
    heartbeat: float,
    tick: Callable[[Sampler], bytes] | None = None,
) -> None:
    """Serve one SSE response until the client disconnects.

    ``tick`` makes the periodic event (the metrics event by default; the Hystrix stream
    gives its own); with a ``tick``, transitions are not sent.
    """
    one = _Stream(receive, send, sampler, clock, interval, heartbeat, tick)
    if tick is None:
        hub.join(one.subscriber)
    try:
        await one.run()
    finally:
        hub.leave(one.subscriber)
