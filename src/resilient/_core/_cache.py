"""A result cache with a time to live, bounded memory, and stale answers on failure.

Entries are kept per key in least-recently-used order (an ``OrderedDict``): a hit moves
its entry to the end, a store past ``max_entries`` drops the oldest. An entry is
*fresh* while ``now - stored < ttl``; after that, for ``stale_if_error`` more seconds
(``now - stored <= ttl + stale_if_error``) it is *stale*: not served to a call, which
runs the function again, but served in its place if that call fails with an exception
matched by ``stale_on`` (RFC 5861's ``stale-if-error``). Past that it is dropped.
Exceptions are never cached.

This module decides and counts; the adapter (``_policies._cache``) runs the call. Time
comes from the injected clock; no user code runs under the lock (the ``stale_on``
predicate, a key's equality excepted: a key is hashed before it gets here).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from resilient._core import _events
from resilient._core._clock import TimeSource
from resilient._core._events import EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import (
    MAX_KEYS,
    check_duration,
    check_int,
    check_name,
    check_result_predicate,
    compile_matcher,
    matches,
)

__all__ = ["KIND", "CacheCore", "CacheMetrics", "CacheStatus", "Entry"]

KIND: Final = "cache"


@dataclass(frozen=True, slots=True)
class CacheMetrics:
    """A cache's counts since it was created, and its size now.

    Attributes:
        hits: Calls answered with a fresh entry (the function did not run).
        misses: Calls that ran the function: no entry, or only a stale one.
        stale_served: Failed calls answered with a stale entry instead.
        stores: Results stored.
        evictions: Entries dropped to stay within ``max_entries``.
        entries: Entries held now (fresh or stale, until the next look drops them).
        max_entries: The bound on ``entries``.
    """

    hits: int
    misses: int
    stale_served: int
    stores: int
    evictions: int
    entries: int
    max_entries: int


@dataclass(frozen=True, slots=True)
class CacheStatus:
    """What a cache did for the last call it served in this context (thread or task).

    Read it with [`resilient.cache_status()`][resilient.cache_status] right after the
    call. ``outcome`` is one of:

    * ``"hit"``: a fresh entry answered; the function did not run.
    * ``"miss"``: the function ran and its result was returned (and stored, unless
      ``cache_result`` refused it).
    * ``"stale"``: the function failed, and a stale entry answered in its place
      (``error`` is the failure, ``age`` the entry's age).

    Attributes:
        policy: The cache's name.
        outcome: ``"hit"``, ``"miss"`` or ``"stale"``.
        key: The key of the call.
        age: Seconds since the value returned was stored (``0.0`` for a miss).
        error: For ``"stale"``: the exception the stale value stands in for.
    """

    policy: str | None
    outcome: Literal["hit", "miss", "stale"]
    key: Any = field(repr=False)
    age: float = 0.0
    error: BaseException | None = None

    @property
    def stale(self) -> bool:
        """Whether the value is a stale one served because the call failed."""
        return self.outcome == "stale"

    @property
    def from_cache(self) -> bool:
        """Whether the value came from the cache (a hit, or a stale value), not the call."""
        return self.outcome != "miss"


class Entry:
    """A stored result and when it was stored (clock seconds)."""

    __slots__ = ("stored", "value")

    def __init__(self, value: Any, stored: float) -> None:
        self.value = value
        self.stored = stored


class CacheCore(EventSource):
    """The entries, their ages, and the counts."""

    __slots__ = (
        "_cache_result",
        "_clock",
        "_entries",
        "_lock",
        "_stale_on",
        "evictions",
        "hits",
        "max_entries",
        "misses",
        "name",
        "stale_if_error",
        "stale_served",
        "stores",
        "ttl",
    )

    def __init__(
        self,
        name: object,
        *,
        ttl: object,
        stale_if_error: object,
        max_entries: object,
        stale_on: object,
        cache_result: object,
        clock: TimeSource,
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.ttl = check_duration("ttl", ttl, allow_zero=False)
        self.stale_if_error = check_duration("stale_if_error", stale_if_error)
        self.max_entries = check_int("max_entries", max_entries, maximum=MAX_KEYS)
        stale_matcher = compile_matcher("stale_on", stale_on)
        self._stale_on: Callable[[BaseException], bool] | None = stale_matcher
        self._cache_result = check_result_predicate("cache_result", cache_result)
        self._clock = clock
        self._entries: collections.OrderedDict[Hashable, Entry] = collections.OrderedDict()
        self._lock = new_lock(self)
        self.hits = self.misses = self.stale_served = self.stores = self.evictions = 0

    def adopt_options(self, other: CacheCore) -> None:
        """Take ``other``'s checked options (``reconfigure()``), keeping the entries.

        A smaller ``max_entries`` evicts the least recently used entries at once; a
        shorter ``ttl`` or ``stale_if_error`` applies to the entries already held.
        """
        with self._lock:
            self.ttl = other.ttl
            self.stale_if_error = other.stale_if_error
            self.max_entries = other.max_entries
            self._stale_on = other._stale_on
            self._cache_result = other._cache_result
            entries = self._entries
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
                self.evictions += 1

    def lookup(self, key: Hashable) -> tuple[Entry | None, bool, float]:
        """The entry of ``key`` if any, whether it is fresh, and the time now.

        A fresh entry is a hit (the call is answered with it); anything else is a miss,
        and the entry returned, if any, is a stale one kept for ``on_error``.
        """
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                age = now - entry.stored
                if age < self.ttl:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return entry, True, now
                if age > self.ttl + self.stale_if_error:
                    del self._entries[key]  # too old even to stand in for a failure
                    entry = None
            self.misses += 1
            return entry, False, now

    def store(self, key: Hashable, value: Any) -> None:
        """Keep ``value`` for ``key`` (unless ``cache_result`` refuses it), as the newest."""
        if self._cache_result is not None and not matches(
            self._cache_result, value, "cache_result", self.name
        ):
            return
        entry = Entry(value, self._clock.monotonic())
        with self._lock:
            entries = self._entries
            entries[key] = entry
            entries.move_to_end(key)
            self.stores += 1
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
                self.evictions += 1

    def on_error(self, key: Hashable, entry: Entry | None, error: Exception) -> Entry | None:
        """The stale entry to answer a failed call with, or ``None`` (the error stands)."""
        if entry is None or not self.stale_if_error:
            return None
        stale_on = self._stale_on
        if stale_on is None or not matches(stale_on, error, "stale_on", self.name):
            return None
        age = self._clock.monotonic() - entry.stored
        if age > self.ttl + self.stale_if_error:
            return None  # the call took long enough for the stale value to expire too
        with self._lock:
            self.stale_served += 1
        if self.observed():
            self.emit(_events.StaleValueServed(self.name, KIND, key, age, error))
        return entry

    def invalidate(self, key: Hashable) -> bool:
        """Drop the entry of ``key``; whether there was one."""
        with self._lock:
            return self._entries.pop(key, None) is not None

    def clear(self) -> None:
        """Drop every entry (the counts are kept)."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def metrics(self) -> CacheMetrics:
        """The counts and the size, frozen."""
        with self._lock:
            return CacheMetrics(
                hits=self.hits,
                misses=self.misses,
                stale_served=self.stale_served,
                stores=self.stores,
                evictions=self.evictions,
                entries=len(self._entries),
                max_entries=self.max_entries,
            )
