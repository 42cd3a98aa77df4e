"""Which policies guard a request: routes by path and method, and per-key instances.

A :class:`Route` maps a path pattern (and optionally methods) to a policy; the first
route that matches a request wins. Patterns are literal paths, with ``{name}`` for one
path segment and a trailing ``*`` for any rest (``/users/{id}``, ``/static/*``).

:class:`KeyedGuards` holds one guard per key (per client address, per API key) built
from a factory on first use, in bounded memory as ``KeyedRateLimiter`` does: LRU order,
keys idle for ``ttl`` dropped a few at a time, and at most ``max_keys`` kept. A key with
a request in flight is never dropped, so a per-key bulkhead never has two instances at
once; the memory bound is ``max_keys`` plus the keys of the requests in flight.
"""

from __future__ import annotations

import collections
import itertools
import re
from collections.abc import Callable, Collection, Hashable
from typing import Any

from resilient._core._clock import Clock
from resilient._core._fork import new_lock
from resilient._core._validate import check_names
from resilient._policies._policy import Policy
from resilient.asgi._types import Scope

__all__ = ["KeyedGuards", "Route", "client_ip", "header_key"]

_PARAM = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _compile(pattern: str) -> re.Pattern[str] | None:
    """A regex for ``pattern``, or ``None`` when it is a literal path (compared as is)."""
    if not pattern.startswith("/"):
        raise ValueError(f"pattern must be a path starting with '/', not {pattern!r}")
    rest = pattern.endswith("*")
    body = pattern[:-1] if rest else pattern
    if "*" in body:
        raise ValueError(f"pattern may have '*' only at its end: {pattern!r}")
    if not rest and _PARAM.search(body) is None:
        return None
    parts: list[str] = []
    last = 0
    for match in _PARAM.finditer(body):
        parts += (re.escape(body[last : match.start()]), "[^/]+")
        last = match.end()
    parts.append(re.escape(body[last:]))
    if rest:
        parts.append(".*")
    return re.compile("".join(parts))


class Route:
    """Requests whose path matches ``pattern`` (and method, if given) get ``policy``.

    Args:
        pattern: ``/exact``, ``/users/{id}`` (``{name}`` is one path segment),
            ``/static/*`` (a trailing ``*`` matches any rest, ``/`` included).
        policy: The policy for these requests, instead of the middleware's default one;
            ``None`` exempts them (a health check that must never be shed).
        methods: HTTP methods this route applies to (default: all).
    """

    __slots__ = ("_regex", "methods", "pattern", "policy")

    def __init__(
        self, pattern: str, policy: Policy | None, *, methods: Collection[str] | None = None
    ) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError(f"policy must be a policy or None, not {type(policy).__name__}")
        names = None if methods is None else check_names("methods", methods, "method names")
        self._regex = _compile(pattern)
        self.pattern = pattern
        self.policy = policy
        self.methods = None if names is None else frozenset(m.upper() for m in names)

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with ``method`` and ``path`` falls under this route."""
        if self.methods is not None and method not in self.methods:
            return False
        regex = self._regex
        return path == self.pattern if regex is None else regex.fullmatch(path) is not None

    def __repr__(self) -> str:
        methods = "" if self.methods is None else f", methods={sorted(self.methods)!r}"
        return f"Route({self.pattern!r}, {self.policy!r}{methods})"


def client_ip(scope: Scope) -> str | None:
    """The client's address from the ASGI scope (``None`` if the server gives none).

    Behind a proxy this is the proxy's address unless the server rewrites it from
    ``X-Forwarded-For`` (``uvicorn --proxy-headers``, hypercorn's ``ProxyFixMiddleware``).
    """
    client = scope.get("client")
    return None if not client else str(client[0])


def header_key(name: str) -> Callable[[Scope], str | None]:
    """A ``key`` function reading the header ``name`` (an API key, a tenant id)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a header name (a str), not {type(name).__name__}")
    wanted = name.lower().encode("latin-1")

    def key(scope: Scope) -> str | None:
        for header, value in scope.get("headers", ()):
            if header == wanted:
                return bytes(value).decode("latin-1")
        return None

    key.__qualname__ = f"header_key({name!r})"
    return key


class _Entry:
    __slots__ = ("guard", "in_flight", "last_used", "shape")

    def __init__(self, guard: Any, shape: Any, now: float) -> None:
        self.guard = guard
        self.shape = shape
        self.in_flight = 0
        self.last_used = now


class KeyedGuards:
    """One guard per key, built on first use, in bounded memory (see the module doc)."""

    __slots__ = ("__weakref__", "_build", "_clock", "_entries", "_lock", "max_keys", "ttl")

    def __init__(
        self, build: Callable[[Hashable], tuple[Any, Any]], max_keys: int, ttl: float, clock: Clock
    ) -> None:
        self._build = build
        self.max_keys = max_keys
        self.ttl = ttl
        self._clock = clock
        self._entries: collections.OrderedDict[Hashable, _Entry] = collections.OrderedDict()
        self._lock = new_lock(self)

    def __len__(self) -> int:
        return len(self._entries)

    def acquire(self, key: Hashable) -> _Entry:
        """The entry for ``key``, marked in use until :meth:`release`."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.in_flight += 1
                entry.last_used = now
                return entry
        # Built outside the lock: the factory is user code, and may be slow or raise.
        guard, shape = self._build(key)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:  # nobody built one meanwhile
                entry = self._entries[key] = _Entry(guard, shape, now)
                self._evict(now)
            else:
                self._entries.move_to_end(key)
            entry.in_flight += 1
            entry.last_used = now
            return entry

    def release(self, entry: _Entry) -> None:
        """The request that acquired ``entry`` is over."""
        now = self._clock.monotonic()
        with self._lock:
            entry.in_flight -= 1
            entry.last_used = now

    def _evict(self, now: float) -> None:
        entries = self._entries
        # Idle keys first, a couple per new key (amortised O(1)), oldest first.
        for _ in range(2):
            key, entry = next(iter(entries.items()))
            if entry.in_flight or now - entry.last_used < self.ttl:
                break
            del entries[key]
        # Then any excess, least recently used first, skipping keys in use (looking at a
        # few only: in-use keys are recent, so they are rarely at the old end).
        excess = len(entries) - self.max_keys
        if excess > 0:
            oldest = itertools.islice(entries.items(), excess + 8)
            doomed = [k for k, e in oldest if not e.in_flight]
            for key in doomed[:excess]:
                del entries[key]
