"""The public cache: its options, read-outs, the two thin drivers, and ``cache_status()``.

Every decision is :class:`~resilient._core._cache.CacheCore`'s (fresh, stale or gone;
what to store; whether a failure is answered with a stale value); the drivers only
compute the key, call or await the function, and record what happened in a context
variable the caller reads with :func:`cache_status`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import TYPE_CHECKING, Any

from resilient._core._cache import KIND, CacheCore, CacheMetrics, CacheStatus, Entry
from resilient._core._coalesce import check_key
from resilient._policies._coalesce import call_key
from resilient._policies._policy import CorePolicy
from resilient._waiting._clock import resolve_clock

if TYPE_CHECKING:
    from resilient._core._clock import Clock
    from resilient._core._validate import Duration, ExceptionMatcher

__all__ = ["Cache", "CacheMetrics", "CacheStatus", "cache_status"]

_STATUS: contextvars.ContextVar[CacheStatus | None] = contextvars.ContextVar(
    "resilient_cache_status", default=None
)


def cache_status() -> CacheStatus | None:
    """What the last cache to serve a call in this thread or task did, or ``None``.

    A [`CacheStatus`][resilient.CacheStatus]: ``outcome`` is ``"hit"``, ``"miss"`` or
    ``"stale"`` (a stale value answered a failed call), with the value's ``age``. It is
    kept in a context variable, so each thread and each task sees its own calls only;
    read it right after the call. With caches nested, the outermost (the last to
    finish) is what it shows.
    """
    return _STATUS.get()


def _served(core: CacheCore, key: Hashable, entry: Entry, now: float) -> Any:
    _STATUS.set(CacheStatus(core.name, "hit", key, now - entry.stored))
    return entry.value


def _stale(core: CacheCore, key: Hashable, entry: Entry, error: Exception) -> Any:
    age = core._clock.monotonic() - entry.stored
    _STATUS.set(CacheStatus(core.name, "stale", key, age, error))
    return entry.value


def _stored(core: CacheCore, key: Hashable, result: Any) -> Any:
    core.store(key, result)
    _STATUS.set(CacheStatus(core.name, "miss", key))
    return result


class Cache(CorePolicy[CacheCore]):
    """Keep results per key for ``ttl`` seconds; answer failures with stale ones.

    A call whose key has a fresh entry (stored less than ``ttl`` seconds ago) returns
    it without running the function. Otherwise the function runs; its result is stored
    (the oldest entry is dropped beyond ``max_entries``) and returned. Exceptions are
    never stored: the next call runs the function again.

    If the function fails with an exception matched by ``stale_on`` while an entry of
    the key is at most ``ttl + stale_if_error`` seconds old, that stale value is
    returned instead of the exception (RFC 5861's ``stale-if-error``): a
    [`StaleValueServed`][resilient.StaleValueServed] event is emitted, and
    [`resilient.cache_status()`][resilient.cache_status] says ``"stale"``.

    A cache does not stop a herd of concurrent misses of one key from all running the
    function: put a [`Coalesce`][resilient.Coalesce] behind it for that
    (``compose(Cache(ttl=30), Coalesce(), ...)``).

    Args:
        ttl: Seconds an entry is fresh (> 0, up to 1e9); a number or a timedelta.
        stale_if_error: Seconds past ``ttl`` during which an entry may still answer a
            failed call (>= 0, default 0: never).
        max_entries: Entries kept at most, least recently used dropped first (1 to
            10,000,000, default 1,024).
        key: A function of the call's arguments returning a hashable key. Default:
            the function called and its arguments, which must then be hashable (else
            the call raises ``TypeError`` without running). With a ``key``, calls of
            different functions through one cache share entries when their keys are
            equal.
        stale_on: Exception types, or a predicate, of failures a stale value may
            answer (default: every ``Exception``, rejections such as an open circuit
            included).
        cache_result: A predicate over results: only those it accepts are stored
            (default: every result).
        name: A name for events and metrics.
        clock: Where entry ages are read from (default: monotonic).
    """

    __slots__ = ("_key",)
    kind = KIND
    _wants_target = True

    def __init__(
        self,
        ttl: Duration,
        *,
        stale_if_error: Duration = 0.0,
        max_entries: int = 1024,
        key: Callable[..., Hashable] | None = None,
        stale_on: ExceptionMatcher = Exception,
        cache_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._core = CacheCore(
            name,
            ttl=ttl,
            stale_if_error=stale_if_error,
            max_entries=max_entries,
            stale_on=stale_on,
            cache_result=cache_result,
            clock=resolve_clock(clock),
        )
        self._key = check_key(key)
        self._config = {
            "ttl": ttl,
            "stale_if_error": stale_if_error,
            "max_entries": max_entries,
            "stale_on": stale_on,
            "cache_result": cache_result,
        }

    # The key function is read by the wrappers made at decoration time.
    _fixed_options = ("name", "clock", "key")

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # A throwaway core checks every value as construction does; the entries stay.
        checked = CacheCore(
            self._core.name,
            ttl=merged["ttl"],
            stale_if_error=merged["stale_if_error"],
            max_entries=merged["max_entries"],
            stale_on=merged["stale_on"],
            cache_result=merged["cache_result"],
            clock=self._core._clock,
        )
        return partial(self._core.adopt_options, checked)

    def _sync_wrap(self, fn: Callable[..., Any], target: object = None) -> Callable[..., Any]:
        core = self._core
        key_of = self._key
        scope = fn if target is None else target

        def guarded(*args: Any, **kwargs: Any) -> Any:
            key = call_key(KIND, key_of, scope, args, kwargs)
            entry, fresh, now = core.lookup(key)
            if fresh:
                return _served(core, key, entry, now)  # type: ignore[arg-type]
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                stale = core.on_error(key, entry, exc)
                if stale is None:
                    raise
                return _stale(core, key, stale, exc)
            return _stored(core, key, result)

        return guarded

    def _async_wrap(
        self, fn: Callable[..., Awaitable[Any]], target: object = None
    ) -> Callable[..., Awaitable[Any]]:
        core = self._core
        key_of = self._key
        scope = fn if target is None else target

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            key = call_key(KIND, key_of, scope, args, kwargs)
            entry, fresh, now = core.lookup(key)
            if fresh:
                return _served(core, key, entry, now)  # type: ignore[arg-type]
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                stale = core.on_error(key, entry, exc)
                if stale is None:
                    raise
                return _stale(core, key, stale, exc)
            return _stored(core, key, result)

        return guarded

    # -- read-outs and controls --------------------------------------------------------

    @property
    def ttl(self) -> float:
        """Seconds an entry is fresh."""
        return self._core.ttl

    @property
    def stale_if_error(self) -> float:
        """Seconds past ``ttl`` during which an entry may answer a failed call."""
        return self._core.stale_if_error

    @property
    def max_entries(self) -> int:
        """Entries kept at most."""
        return self._core.max_entries

    def metrics(self) -> CacheMetrics:
        """Hits, misses, stale answers, stores, evictions and the entries held, frozen."""
        return self._core.metrics()

    def invalidate(self, key: Hashable) -> bool:
        """Drop the entry of ``key`` (as ``key=`` makes it); whether there was one."""
        return self._core.invalidate(key)

    def clear(self) -> None:
        """Drop every entry (the counts are kept)."""
        self._core.clear()

    def __enter__(self) -> None:
        raise TypeError("a cache needs the call's arguments: decorate, or use call()")

    async def __aenter__(self) -> None:
        raise TypeError("a cache needs the call's arguments: decorate, or use call_async()")

    def __repr__(self) -> str:
        core = self._core
        return (
            f"<Cache {self.name!r} ttl={core.ttl:g} stale_if_error={core.stale_if_error:g}"
            f" entries={len(core)}/{core.max_entries}>"
        )
