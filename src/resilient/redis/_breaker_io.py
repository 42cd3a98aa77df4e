"""How a shared breaker talks to its store: one step of the script, sync or awaited.

The base of :class:`~resilient.redis._breaker.SharedBreakerCore`: every round trip of
a breaker goes through :meth:`StoreSteps._step` (on the caller's thread or the
store's) or :meth:`StoreSteps._step_async` (an async caller's), which share the store's
health bookkeeping (:meth:`~StoreSteps._begin`, :meth:`~StoreSteps._ended`) and the
breaker's outage events (``StoreUnavailable`` once per outage, ``StoreRecovered``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from resilient._core._breaker import KIND, BreakerCore
from resilient.redis._breaker_script import BREAKER
from resilient.redis._events import StoreRecovered, StoreUnavailable

if TYPE_CHECKING:
    from resilient.redis._breaker_sync import BreakerSync
    from resilient.redis._store import RedisStore

__all__ = ["LeaseAsk", "StoreSteps"]


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LeaseAsk:
    """What admission needs from the record: a trial lease (``args``: its id and TTL).

    Returned by :meth:`SharedBreakerCore.admit_plan`: a sync caller asks for it inline,
    an async caller's step awaits it, and both read the answer the same way.
    """

    __slots__ = ("args",)

    def __init__(self, args: tuple[str, str]) -> None:
        self.args = args


class StoreSteps(BreakerCore):
    """The round trips of a shared breaker (see the module docstring).

    Its slots are set by :class:`~resilient.redis._breaker.SharedBreakerCore`.
    """

    __slots__ = ("_down_at", "_keys", "_next_poll", "_settings", "_store", "_sync")

    if TYPE_CHECKING:
        _store: RedisStore
        _sync: BreakerSync
        _keys: tuple[str, str, str]
        _settings: tuple[str, ...]
        _down_at: float | None
        _next_poll: float

    def _argv(self, op: str, args: Sequence[str]) -> tuple[str, ...]:
        return (*self._keys, op, self._sync.channel, self.name or "", *self._settings, *args)

    def _step(self, op: str, args: Sequence[str]) -> Sequence[Any] | None:
        """Run one step of the script; ``None`` if the store failed (counted, reported)."""
        generation = self._begin()
        if generation is None:
            return None
        try:
            client = self._sync.client()
            argv = self._argv(op, args)
            try:
                reply = client.evalsha(BREAKER.sha, 3, *argv)
            except NoScriptError:
                reply = client.eval(BREAKER.source, 3, *argv)
        except Exception as error:
            return self._ended(generation, None, error)
        return self._ended(generation, reply, None)

    async def _step_async(self, op: str, args: Sequence[str]) -> Sequence[Any] | None:
        """As :meth:`_step`, awaited: on a ``redis.asyncio`` client, or in a worker thread.

        Shielded from the caller's cancellation, and bounded by ``op_timeout``: a lease
        the record granted is then always known here, and given back if the caller is
        gone (its cancellation lands at its next await, inside the guard).
        """
        import anyio  # noqa: PLC0415 -- only async callers need it

        store = self._store
        if not (store.is_async and _on_asyncio()):
            # A sync client, or a redis.asyncio one under trio (where it cannot run):
            # the sync step, with the store's client or its sync twin, in a thread.
            return await anyio.to_thread.run_sync(self._step, op, args)
        generation = self._begin()
        if generation is None:
            return None
        with anyio.CancelScope(shield=True):
            try:
                client = store._client
                argv = self._argv(op, args)
                try:
                    reply = await client.evalsha(BREAKER.sha, 3, *argv)
                except NoScriptError:
                    reply = await client.eval(BREAKER.source, 3, *argv)
            except Exception as error:
                return self._ended(generation, None, error)
        return self._ended(generation, reply, None)

    def _begin(self) -> int | None:
        """The store's generation to send in, or ``None`` while it is not to be tried."""
        store = self._store
        if not store._should_try():
            self._down()
            return None
        return store.generation

    def _ended(
        self, generation: int, reply: Sequence[Any] | None, error: Exception | None
    ) -> Sequence[Any] | None:
        store = self._store
        if error is not None:
            store._failed(error, generation)
            self._down()
            return None
        store._succeeded(generation)
        self._up()
        return reply

    def _down(self) -> bool:
        """Whether the store is unavailable; the first sight of an outage is an event."""
        store = self._store
        if store.available:
            return False
        if self._down_at is None:
            with self._lock:
                starts, self._down_at = self._down_at is None, time.monotonic()
            if starts and self.observed():
                self.emit(StoreUnavailable(self.name, KIND, store.description, store.last_error))
        return True

    def _up(self) -> None:
        if self._down_at is None:
            return
        with self._lock:
            since, self._down_at = self._down_at, None
            self._next_poll = 0.0  # resynchronise at once
        if since is not None and self.observed():  # type: ignore[redundant-expr]
            downtime = time.monotonic() - since
            self.emit(StoreRecovered(self.name, KIND, self._store.description, downtime))
