"""The keyed rate limiter: one GCRA theoretical arrival time per key, in bounded memory.

:class:`KeyedRateLimiter` keeps one TAT per key (per user, per tenant) in LRU order. A
key whose TAT has passed is indistinguishable from a new key, so it can be dropped with
no change in behaviour; at most ``max_keys`` are kept. The arithmetic, counts and errors
are :class:`~resilient._core._gcra.GcraCore`'s, shared with the plain limiter.

With ``store=`` each key's TAT lives in the store under its own key, bounded by the
store's expiry rather than by ``max_keys`` (which then bounds only the local fallback's
keys); async callers await the store's decision (:meth:`KeyedRateLimiter._acquire_shared_async`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

from resilient._core._clock import Clock
from resilient._core._gcra import KIND, NS, KeyedRateLimiterCore, RateLimiterMetrics
from resilient._core._validate import Duration
from resilient._policies._policy import CorePolicy, SharedStore, bind_store
from resilient._policies._ratelimit import gcra_options

__all__ = ["KeyedRateLimiter"]


class KeyedRateLimiter(CorePolicy[KeyedRateLimiterCore]):
    """A [`RateLimiter`][resilient.RateLimiter] per key (per user, per tenant), in bounded memory.

    ``key`` maps a call's arguments to its key: ``key=lambda user_id, *a, **k: user_id``.
    Guarding requests in the ASGI middleware, ``key`` is called with the request's ASGI
    scope alone (``resilient.asgi.client_ip`` and ``header_key(...)`` fit).
    Keys that have been idle long enough to be fully replenished are dropped (they
    behave exactly like new keys); beyond ``max_keys`` the least recently used key is
    dropped even if not idle, which can only make that key's limit more permissive.

    Args:
        rate: Calls per period, per key.
        per: The period in seconds (default 1).
        key: A function of the call's ``(*args, **kwargs)`` returning a hashable key.
        burst: Calls admitted at once per key after an idle period.
        max_wait: Seconds a call may wait for its slot (default 0).
        max_keys: The most keys kept (default 10,000; with ``store``, the most kept
            locally while the store is unavailable).
        name: A name for errors, events and metrics (required with ``store``).
        clock: Where time comes from and how waits happen (default: monotonic).
        store: Shared state (``resilient.redis.RedisStore``): one limit per key for
            every process. See the "Scale-out" page.
    """

    __slots__ = ("_key", "_shared")
    kind = KIND

    def __init__(
        self,
        rate: float,
        per: Duration = 1.0,
        *,
        key: Callable[..., Hashable],
        burst: int | None = None,
        max_wait: Duration = 0.0,
        max_keys: int = 10_000,
        name: str | None = None,
        clock: Clock | None = None,
        store: SharedStore | None = None,
    ) -> None:
        if not callable(key):
            raise TypeError(
                f"key must be a function of the call's arguments, not {type(key).__name__}"
            )
        self._key = key
        options = gcra_options(rate, per, burst, max_wait, name, clock)
        self._shared = store is not None
        if store is None:
            self._core = KeyedRateLimiterCore(*options, max_keys=max_keys)
            # What reconfigure() changes (not with a store, whose state is shared).
            self._config = {
                "rate": rate,
                "per": per,
                "key": key,
                "burst": burst,
                "max_wait": max_wait,
                "max_keys": max_keys,
            }
        else:
            self._core = bind_store(store, "keyed_rate_limiter")(options, max_keys)

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # Checked as construction checks them; each key keeps its tokens.
        key = merged["key"]
        if not callable(key):
            raise TypeError(
                f"key must be a function of the call's arguments, not {type(key).__name__}"
            )
        core: KeyedRateLimiterCore = self._core
        rate, per, burst, max_wait = (merged[k] for k in ("rate", "per", "burst", "max_wait"))
        options = gcra_options(rate, per, burst, max_wait, None, core.clock)
        fresh = KeyedRateLimiterCore(*options, max_keys=merged["max_keys"])

        def commit() -> None:
            core.retune(fresh)
            self._key = key  # read by the guards at each call

        return commit

    # acquire/acquire_async and the two wraps are twins, the same code apart from
    # async/await and the async side's hand-over to a shared store's awaited round trip
    # (a sync caller's store answers inside reserve()): tests/test_twins.py checks it.

    def acquire(self, key: Hashable) -> None:
        """Take a slot for ``key``, waiting up to ``max_wait``; raise if refused."""
        delay, tat = self._core.reserve(key)
        if delay > 0:
            try:
                self._core.clock.sleep(delay / NS)
            except BaseException:
                self._core.give_back(key, tat)
                raise

    async def acquire_async(self, key: Hashable) -> None:
        """Take a slot for ``key`` (async), waiting up to ``max_wait``; raise if refused."""
        if self._shared:
            await self._acquire_shared_async(key)
            return
        delay, tat = self._core.reserve(key)
        if delay > 0:
            try:
                await self._core.clock.asleep(delay / NS)
            except BaseException:
                self._core.give_back(key, tat)
                raise

    async def _acquire_shared_async(self, key: Hashable) -> None:
        core: Any = self._core
        delay, token = await core.reserve_async(key)
        if delay > 0:
            try:
                await core.clock.asleep(delay / NS)
            except BaseException:
                await core.give_back_async(key, token)
                raise

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        policy = self  # the key is read at each call: reconfigure() may change it
        acquire = self.acquire

        def guarded(*args: Any, **kwargs: Any) -> Any:
            acquire(policy._key(*args, **kwargs))
            return fn(*args, **kwargs)

        return guarded

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        policy = self  # the key is read at each call: reconfigure() may change it
        acquire = self._acquire_shared_async if self._shared else self.acquire_async

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            await acquire(policy._key(*args, **kwargs))
            return await fn(*args, **kwargs)

        return guarded

    def __enter__(self) -> None:
        raise TypeError("a keyed limiter needs a key: use acquire(key) / acquire_async(key)")

    async def __aenter__(self) -> None:
        raise TypeError("a keyed limiter needs a key: use acquire(key) / acquire_async(key)")

    def metrics(self) -> RateLimiterMetrics:
        """Admitted, waited and rejected calls, and keys tracked, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        c = self._core
        return f"<KeyedRateLimiter {c.name!r} {c.rate:g}/{c.per:g}s per key>"
