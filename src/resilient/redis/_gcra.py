"""Rate-limiter cores whose GCRA state lives in Redis, with local state as the fallback.

They offer an adapter what the local cores offer (``admit``, ``reserve``,
``give_back``, ``metrics``, ``clock``) so a limiter picks local or shared state once, at
construction. There is no local fast path: ``admit()`` always answers "ask
``reserve()``", and ``reserve()`` is one round trip that admits, reserves a slot up to
the caller's allowed wait, or refuses with the exact ``retry_after``, all decided by the
script (``_scripts.py``) on the server's clock. The caller then waits for its slot
locally, with its own clock: only the duration crosses the wire, never a time.

A reservation made in Redis is its TAT as the script wrote it (a ``str``); one made
locally during an outage is the local core's ``int``. ``give_back`` tells them apart, so
a slot is returned where it was taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final

from resilient._core._errors import RateLimitedError
from resilient._core._events import CallRejected
from resilient._core._gcra import (
    KIND,
    NS,
    GcraCore,
    KeyedRateLimiterCore,
    RateLimiterCore,
    RateLimiterMetrics,
)
from resilient.redis._events import StoreRecovered, StoreUnavailable
from resilient.redis._scripts import GCRA, GIVE_BACK
from resilient.redis._store import RedisStore
from resilient.redis._wire import pack

__all__ = ["SharedKeyedRateLimiterCore", "SharedRateLimiterCore"]

# Lua's doubles hold whole seconds exactly up to 2**53; a tolerance beyond this many
# nanoseconds (about 31,700 years) decides exactly as this one does.
_MAX_TOLERANCE: Final = 10**21

Reservation = tuple[int, "int | str"]
"""(nanoseconds to wait, the token ``give_back`` needs)."""


def _pair(ns: int) -> tuple[str, str]:
    seconds, rest = divmod(ns, NS)
    return str(seconds), str(rest)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _SharedGcra(GcraCore):
    """The round trip, its outcome, and the fallback, for one limiter or one key."""

    __slots__ = ("_args", "_down_at", "_id", "_local", "_packed", "_store")

    _local: Any

    def __init__(self, *options: Any, store: RedisStore) -> None:
        # `options` are the local core's (``gcra_options``): the same validation, the
        # same interval and tolerance, to the nanosecond.
        super().__init__(*options)
        if not isinstance(store, RedisStore):
            raise TypeError(f"store must be a RedisStore, not {type(store).__name__}")
        if self.name is None:
            raise ValueError(
                "a rate limiter with a store needs a name: it is the limiter's key in Redis,"
                " the same in every process (name='...')"
            )
        self._id: str = self.name
        self._store = store
        # The script's arguments as (seconds, nanoseconds) pairs, split once here.
        self._args = (
            *_pair(self.interval),
            *_pair(min(self.tolerance, _MAX_TOLERANCE)),
        )
        self._down_at: float | None = None
        # The last decision's command as sent: (key, allowed wait, its bytes). A
        # limiter without a deadline in play sends the same bytes every time.
        self._packed: tuple[str, int, bytes] = ("", -1, b"")

    def _local_args(self) -> tuple[object, ...]:
        """The local core's arguments: this limiter's ``1 / local_share``."""
        share = self._store.local_share
        now_ns = None if self.float_clock is not None else self.now
        return (
            self.rate / share,
            self.per,
            max(1, self.burst // share),
            self.max_wait,
            self.name,
            self.clock,
            now_ns,
            self._time_left,
        )

    def _adopt(self, local: GcraCore) -> None:
        # The fallback reports to this limiter's listeners (one list, shared).
        local._listeners = self._listeners
        self._local = local

    def admit(self) -> bool:
        """No local fast path: every decision is the script's (see :meth:`reserve`)."""
        return False

    # -- the parts shared by the sync and async paths -------------------------------------

    def _script_args(self, wait: int | None = None) -> tuple[str, ...]:
        return (*self._args, *_pair(self.allowed_wait() if wait is None else wait))

    def _command(self, redis_key: str) -> bytes:
        """The decision's ``EVALSHA`` on ``redis_key``, packed (the last one, if unchanged)."""
        wait = self.allowed_wait()
        last_key, last_wait, packed = self._packed
        if wait != last_wait or redis_key != last_key:
            args = self._script_args(wait)
            packed = pack("EVALSHA", GCRA.sha, "1", redis_key, *args)
            # One tuple, so that a thread never reads one decision's key with another's bytes.
            self._packed = (redis_key, wait, packed)
        return packed

    def _decide(self, redis_key: str) -> Any:
        store = self._store
        if store._wire is None:
            return store._run(GCRA, redis_key, self._script_args())
        return store._send(self._command(redis_key), GCRA)

    async def _decide_async(self, redis_key: str) -> Any:
        store = self._store
        if store._wire is None:
            return await store._run_async(GCRA, redis_key, self._script_args())
        return await store._send_async(self._command(redis_key), GCRA)

    def _decided(self, reply: Sequence[Any], key: object, generation: int) -> Reservation:
        """The script's answer: a reservation, or the refusal raised."""
        self._reachable(generation)
        delay = int(reply[1]) * NS + int(reply[2])
        if int(reply[0]):
            with self._lock:
                self.admitted += 1
                if delay > 0:
                    self.waited += 1
            return (delay if delay > 0 else 0), _text(reply[3])
        with self._lock:
            self.rejected += 1
        raise self.rejection(self.retry_after(delay, 0, None), key)

    def _unreachable(self, error: BaseException | None, generation: int) -> None:
        store = self._store
        if error is not None:
            store._failed(error, generation)
        if self._down_at is None and not store.available:
            with self._lock:
                starts, self._down_at = self._down_at is None, time.monotonic()
            if starts and self.observed():
                self.emit(StoreUnavailable(self.name, KIND, store.description, store.last_error))

    def _reachable(self, generation: int) -> None:
        store = self._store
        store._succeeded(generation)
        if self._down_at is not None and store.available:
            with self._lock:
                since, self._down_at = self._down_at, None
            if since is not None and self.observed():  # type: ignore[redundant-expr]
                downtime = time.monotonic() - since
                self.emit(StoreRecovered(self.name, KIND, self._store.description, downtime))

    def _fallback(self, local_reserve: Callable[[], Reservation], key: object) -> Reservation:
        """Decide on local state (or refuse, as ``on_unavailable="reject"`` asks)."""
        store = self._store
        store._fell_back()
        if store.on_unavailable == "reject":
            with self._lock:
                self.rejected += 1
            who = f"rate limiter {self.name!r}" + (f" for key {key!r}" if key is not None else "")
            error = RateLimitedError(
                f"{who}: the shared store is unavailable ({store.description}); "
                "refused, as on_unavailable='reject' asks",
                policy=self.name,
                retry_after=store.retry_interval,
            )
            if self.observed():
                self.emit(CallRejected(self.name, KIND, error))
            raise error
        return local_reserve()

    def _given_back(self, reply: object, generation: int) -> None:
        self._reachable(generation)
        if int(reply):  # type: ignore[call-overload]
            with self._lock:
                self.admitted -= 1
                self.waited -= 1

    def _refuse_async_client(self) -> None:
        raise TypeError(
            f"rate limiter {self.name!r}: its store has a redis.asyncio client, which serves"
            " async calls only; give sync callers a store on a redis.Redis client"
        )

    # -- one decision, sync and async ---------------------------------------------------

    def _reserve(
        self, redis_key: str, local_reserve: Callable[[], Reservation], key: object
    ) -> Reservation:
        store = self._store
        if store.is_async:
            self._refuse_async_client()
        if store._should_try():
            generation = store.generation
            try:
                reply = self._decide(redis_key)
            except Exception as error:
                self._unreachable(error, generation)
            else:
                return self._decided(reply, key, generation)
        else:
            self._unreachable(None, 0)
        return self._fallback(local_reserve, key)

    async def _reserve_async(
        self, redis_key: str, local_reserve: Callable[[], Reservation], key: object
    ) -> Reservation:
        store = self._store
        if store._should_try():
            generation = store.generation
            try:
                reply = await self._decide_async(redis_key)
            except Exception as error:
                self._unreachable(error, generation)
            else:
                return self._decided(reply, key, generation)
        else:
            self._unreachable(None, 0)
        return self._fallback(local_reserve, key)

    def _give_back(self, redis_key: str, token: str) -> None:
        store = self._store
        if store.is_async:
            self._refuse_async_client()
        if not store._should_try():
            return  # during an outage the slot stays taken: the limit errs on the strict side
        generation = store.generation
        try:
            reply = store._run(GIVE_BACK, redis_key, (token, *self._args[:2]))
        except Exception as error:
            # The slot stays taken: the limit errs on the strict side.
            self._unreachable(error, generation)
        else:
            self._given_back(reply, generation)

    async def _give_back_async(self, redis_key: str, token: str) -> None:
        import anyio  # noqa: PLC0415

        if not self._store._should_try():
            return
        # Called while the caller is being cancelled: shielded, and bounded by op_timeout.
        generation = self._store.generation
        with anyio.CancelScope(shield=True):
            try:
                reply = await self._store._run_async(GIVE_BACK, redis_key, (token, *self._args[:2]))
            except Exception as error:
                self._unreachable(error, generation)
            else:
                self._given_back(reply, generation)


class SharedRateLimiterCore(_SharedGcra):
    """One limiter's TAT in Redis, under ``{namespace:name}``."""

    __slots__ = ("_key",)

    def __init__(self, *args: Any, store: RedisStore) -> None:
        super().__init__(*args, store=store)
        self._key = store.key(self._id)
        self._adopt(RateLimiterCore(*self._local_args()))

    def reserve(self) -> Reservation:
        """Admit or reserve a slot: (nanoseconds to wait, a token); raise if refused."""
        return self._reserve(self._key, self._local.reserve, None)

    async def reserve_async(self) -> Reservation:
        """As :meth:`reserve`, awaited."""
        return await self._reserve_async(self._key, self._local.reserve, None)

    def give_back(self, token: int | str) -> None:
        """A reserved caller gave up: return its slot if nobody reserved after it."""
        if isinstance(token, str):
            self._give_back(self._key, token)
        else:
            self._local.give_back(token)

    async def give_back_async(self, token: int | str) -> None:
        """As :meth:`give_back`, awaited (and shielded from the caller's cancellation)."""
        if isinstance(token, str):
            await self._give_back_async(self._key, token)
        else:
            self._local.give_back(token)

    def metrics(self) -> RateLimiterMetrics:
        """This process's counts: shared decisions plus local ones made during outages."""
        local = self._local.metrics()
        with self._lock:
            return RateLimiterMetrics(
                self.admitted + local.admitted,
                self.waited + local.waited,
                self.rejected + local.rejected,
                1,
            )


class SharedKeyedRateLimiterCore(_SharedGcra):
    """One TAT per key in Redis, each under its own ``{namespace:name:key}``, bounded by TTL."""

    __slots__ = ("max_keys",)

    def __init__(self, *args: Any, store: RedisStore, max_keys: object) -> None:
        super().__init__(*args, store=store)
        self._adopt(KeyedRateLimiterCore(*self._local_args(), max_keys=max_keys))
        self.max_keys = self._local.max_keys

    def reserve(self, key: Hashable) -> Reservation:
        """As :meth:`SharedRateLimiterCore.reserve`, for ``key``."""
        local = self._local
        return self._reserve(
            self._store.key(self._id, key),
            lambda: local.reserve(key),
            key,
        )

    async def reserve_async(self, key: Hashable) -> Reservation:
        """As :meth:`reserve`, awaited."""
        local = self._local
        return await self._reserve_async(
            self._store.key(self._id, key),
            lambda: local.reserve(key),
            key,
        )

    def give_back(self, key: Hashable, token: int | str) -> None:
        """A reserved caller gave up: return its slot if nobody reserved after it."""
        if isinstance(token, str):
            self._give_back(self._store.key(self._id, key), token)
        else:
            self._local.give_back(key, token)

    async def give_back_async(self, key: Hashable, token: int | str) -> None:
        """As :meth:`give_back`, awaited (and shielded from the caller's cancellation)."""
        if isinstance(token, str):
            await self._give_back_async(self._store.key(self._id, key), token)
        else:
            self._local.give_back(key, token)

    def metrics(self) -> RateLimiterMetrics:
        """This process's counts; ``keys`` counts the keys held locally during outages."""
        local = self._local.metrics()
        with self._lock:
            return RateLimiterMetrics(
                self.admitted + local.admitted,
                self.waited + local.waited,
                self.rejected + local.rejected,
                local.keys,
            )
