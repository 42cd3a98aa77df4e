"""`RedisStore`: where shared policies keep their state, and how its failures are survived.

The store owns three things: the connection (its own, bounded by ``op_timeout``, see
``_clients.py``), the naming of keys (hash-tagged, so each decision touches one Cluster
slot), and the store's health. A failed operation marks the store unavailable: the
policies then decide on their local state, and only one operation per
``retry_interval`` tries Redis again, so an outage costs callers at most one
``op_timeout`` per interval, not one per call. The outage is logged once when it starts
and once when it ends; every failed operation is counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import redis.asyncio
import redis.cluster
from redis.exceptions import NoScriptError

import redis
from resilient._core._fork import new_lock
from resilient._core._validate import check_duration, check_int
from resilient.redis._clients import (
    SUPPORTED,
    bounded_async,
    bounded_cluster,
    bounded_sync,
    describe,
    unlock_in_child,
)
from resilient.redis._scripts import Script
from resilient.redis._wire import AsyncWire, Wire, as_eval, pack

__all__ = ["RedisStore", "StoreMetrics"]

logger = logging.getLogger("resilient")

_MAX_OP_TIMEOUT: Final = 60.0
_ON_UNAVAILABLE: Final = ("local", "reject")
OnUnavailable = Literal["local", "reject"]


def _check_on_unavailable(value: object) -> OnUnavailable:
    if value not in _ON_UNAVAILABLE:
        raise ValueError(f"on_unavailable must be 'local' or 'reject', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class StoreMetrics:
    """A store's health and counts since it was created.

    Attributes:
        available: Whether the last operation succeeded (``True`` before the first).
        errors: Operations that failed (raised, timed out, or answered an error).
        outages: Times the store went from available to unavailable.
        fallbacks: Decisions made on local state because the store was unavailable.
    """

    available: bool
    errors: int
    outages: int
    fallbacks: int


def _escape(text: str) -> str:
    # The separator and the hash-tag braces may not appear inside a part, so that two
    # different (name, key) pairs can never make the same Redis key.
    return (
        text.replace("%", "%25")
        .replace(":", "%3A")
        .replace("{", "%7B")
        .replace("}", "%7D")
        .replace("~", "%7E")
    )


class RedisStore:
    """Shared state for policies, in Redis: pass it as ``store=`` to a policy.

    Each decision is one Lua script run atomically on the server and timed by the
    server's clock (``TIME``), never by a client's, so processes on hosts with skewed
    clocks agree. Keys are hash-tagged (``{namespace:name}``) and expire once idle.

    When Redis fails (down, slow past ``op_timeout``, or answering errors) the policies
    go on with their local state, emit [`StoreUnavailable`][resilient.redis.StoreUnavailable]
    and [`StoreRecovered`][resilient.redis.StoreRecovered] events, and the outage is
    logged once; a caller's call never fails because Redis did, unless
    ``on_unavailable="reject"``.

    Args:
        client: A ``redis.Redis``, ``redis.asyncio.Redis`` or ``redis.cluster.RedisCluster``.
            The store opens connections of its own with the same settings (address,
            credentials, TLS), bounded by ``op_timeout`` and without retries.
        namespace: Prefix of every key (a non-empty str), to share one Redis between
            applications.
        op_timeout: Seconds one round trip to Redis may take (> 0 and <= 60) before the
            decision is made locally.
        local_share: How many instances share each limit (>= 1): while Redis is
            unavailable each decides alone with ``rate / local_share`` (and
            ``burst / local_share``, at least 1), so the fleet together stays near the
            limit. Per policy: [`with_options`][resilient.redis.RedisStore.with_options].
        on_unavailable: ``"local"`` (the default) decides on local state while Redis is
            unavailable; ``"reject"`` refuses instead: a rate limiter's calls
            (``RateLimitedError``), a breaker's half-open trials (``CircuitOpenError``;
            its closed path never asks Redis, so it goes on). Per policy:
            [`with_options`][resilient.redis.RedisStore.with_options].
        retry_interval: Seconds between attempts to reach Redis again during an outage
            (> 0); meanwhile decisions are local and cost no round trip.
        flush_interval: Shared breakers: seconds between the background flushes of
            each process's outcomes (> 0); also how soon a process hears of a
            transition announced on pub/sub.
        flush_batch: Shared breakers: the most breakers whose outcomes one pipelined
            round trip sends (>= 1; on a Cluster, one pipeline per node).
        poll_interval: Shared breakers: seconds between reads of each breaker's record
            (> 0), in case a pub/sub notification was lost.
        lease_ttl: Shared breakers: seconds a half-open trial lease lives (> 0): a
            trial never reported (its process died) is offered again after it.
        breaker_window: Shared breakers with a ``CountWindow``: seconds of outcomes
            the shared aggregate covers (> 0); a ``TimeWindow`` brings its own.
        breaker_buckets: Shared breakers: buckets the shared window is cut into (>= 1).
        idle_ttl: Seconds an untouched CLOSED breaker record lives (> 0); a missing
            record reads CLOSED.
    """

    __slots__ = (
        "__weakref__",
        "_breakers",
        "_client",
        "_down_since",
        "_given",
        "_lock",
        "_retry_at",
        "_wire",
        "breaker_buckets",
        "breaker_window",
        "description",
        "errors",
        "fallbacks",
        "flush_batch",
        "flush_interval",
        "generation",
        "idle_ttl",
        "is_async",
        "last_error",
        "lease_ttl",
        "local_share",
        "namespace",
        "on_unavailable",
        "op_timeout",
        "outages",
        "poll_interval",
        "retry_interval",
    )

    def __init__(
        self,
        client: redis.Redis | redis.asyncio.Redis | redis.cluster.RedisCluster,
        *,
        namespace: str = "resilient",
        op_timeout: float = 0.05,
        local_share: int = 1,
        on_unavailable: Literal["local", "reject"] = "local",
        retry_interval: float = 1.0,
        flush_interval: float = 0.1,
        flush_batch: int = 64,
        poll_interval: float = 1.0,
        lease_ttl: float = 10.0,
        breaker_window: float = 10.0,
        breaker_buckets: int = 10,
        idle_ttl: float = 86400.0,
    ) -> None:
        if not isinstance(client, SUPPORTED):
            raise TypeError(
                "client must be a redis.Redis, redis.asyncio.Redis or "
                f"redis.cluster.RedisCluster, not {type(client).__name__}"
            )
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be a non-empty str, not {type(namespace).__name__}")
        if not namespace:
            raise ValueError("namespace must be a non-empty str, got ''")
        _check_on_unavailable(on_unavailable)
        self.op_timeout = check_duration(
            "op_timeout", op_timeout, allow_zero=False, maximum=_MAX_OP_TIMEOUT
        )
        self.retry_interval = check_duration("retry_interval", retry_interval, allow_zero=False)
        self.local_share = check_int("local_share", local_share)
        self.flush_interval = check_duration("flush_interval", flush_interval, allow_zero=False)
        self.flush_batch = check_int("flush_batch", flush_batch)
        self.poll_interval = check_duration("poll_interval", poll_interval, allow_zero=False)
        self.lease_ttl = check_duration("lease_ttl", lease_ttl, allow_zero=False)
        self.breaker_window = check_duration("breaker_window", breaker_window, allow_zero=False)
        self.breaker_buckets = check_int("breaker_buckets", breaker_buckets)
        self.idle_ttl = check_duration("idle_ttl", idle_ttl, allow_zero=False)
        self._breakers: Any = None
        self.namespace = namespace
        self.on_unavailable = on_unavailable
        self.is_async = isinstance(client, redis.asyncio.Redis)
        self._given = client
        self._client: Any = None
        # Scripts go on the wire directly over connections of the store's own pool
        # (``_wire.py``); a Cluster, or a pool of another kind, goes through redis-py.
        self._wire: Any = None
        if isinstance(client, redis.asyncio.Redis):
            self._client = bounded_async(client, self.op_timeout)
            if self._client is not client:
                self._wire = AsyncWire(self._client.connection_pool)
        elif isinstance(client, redis.Redis):
            self._client = bounded_sync(client, self.op_timeout)
            if self._client is not client:
                self._wire = Wire(self._client.connection_pool)
        # A Cluster client is rebuilt at its first use: building one talks to the
        # cluster, and a store must be creatable while Redis is down.
        self.description = f"{describe(client)} namespace {namespace!r}"
        self._lock = new_lock(self)
        self._down_since: float | None = None
        self._retry_at = 0.0
        # Counts the changes between available and unavailable: an operation begun
        # before the last change that ends late (its answer or its failure is old news)
        # neither ends an outage nor starts one.
        self.generation = 0
        self.errors = 0
        self.outages = 0
        self.fallbacks = 0
        self.last_error: BaseException | None = None

    # -- keys ---------------------------------------------------------------------------

    def key(self, name: str, *client_key: object) -> str:
        """The Redis key of a policy's state (``client_key``: a keyed limiter's key).

        The hash tag is the whole identity, ``{namespace:name}`` or
        ``{namespace:name:key}``, so one decision touches one Cluster slot and the keys
        of a keyed limiter spread over the cluster.
        """
        parts = [_escape(self.namespace), _escape(name)]
        parts.extend(
            _escape(item) if isinstance(item, str) else "~" + _escape(repr(item))
            for item in client_key
        )
        return "{" + ":".join(parts) + "}:gcra"

    # -- what the policies ask for --------------------------------------------------------

    def _bind_rate_limiter(self, options: tuple[Any, ...]) -> Any:
        """The core of a ``RateLimiter(..., store=self)``: ``options`` are its local core's."""
        from resilient.redis._gcra import SharedRateLimiterCore  # noqa: PLC0415 -- a cycle

        return SharedRateLimiterCore(*options, store=self)

    def _bind_keyed_rate_limiter(self, options: tuple[Any, ...], max_keys: object) -> Any:
        """The core of a ``KeyedRateLimiter(..., store=self)``."""
        from resilient.redis._gcra import SharedKeyedRateLimiterCore  # noqa: PLC0415

        return SharedKeyedRateLimiterCore(*options, store=self, max_keys=max_keys)

    def _bind_circuit_breaker(self, name: str | None, *, clock: Any, **options: object) -> Any:
        """The core of a ``CircuitBreaker(..., store=self)``: the local core's options."""
        from resilient.redis._breaker import SharedBreakerCore  # noqa: PLC0415 -- a cycle

        return SharedBreakerCore(name, clock=clock, store=self, **options)

    def _after_fork_in_child(self) -> None:  # pragma: no cover - runs in a forked child
        # Before the breakers' thread starts again: its first command must not meet a
        # pool lock that a thread of the parent held at the fork.
        unlock_in_child(self._client)
        if self._breakers is not None:
            self._breakers._restart_in_child()

    def _breaker_sync(self) -> Any:
        """The store's background thread for its breakers, made at the first one."""
        from resilient.redis._breaker_sync import BreakerSync  # noqa: PLC0415

        with self._lock:
            if self._breakers is None:
                self._breakers = BreakerSync(self)
            return self._breakers

    # -- health -------------------------------------------------------------------------

    def _should_try(self) -> bool:
        """Whether to ask Redis now: it is available, or its next retry is due."""
        return self._down_since is None or time.monotonic() >= self._retry_at

    def _failed(self, error: BaseException, generation: int) -> None:
        """Count a failed operation begun in ``generation``; the first of an outage is logged.

        An operation begun before the last change (an outage began or ended meanwhile)
        is counted but changes nothing: its failure is old news.
        """
        now = time.monotonic()
        with self._lock:
            self.errors += 1
            self.last_error = error
            starts = self._down_since is None and generation == self.generation
            if starts:
                self._down_since = now
                self.outages += 1
                self.generation += 1
            if self._down_since is not None:
                self._retry_at = now + self.retry_interval
        if starts:
            logger.warning(
                "%s is unavailable (%s: %s); policies decide on local state until it is back",
                self.description,
                type(error).__name__,
                error,
            )

    @property
    def available(self) -> bool:
        """Whether the store is taken to be reachable (no outage under way)."""
        return self._down_since is None

    def _succeeded(self, generation: int) -> None:
        """An operation begun in ``generation`` succeeded: end the outage it outlived."""
        if self._down_since is None:
            return
        since = self._end_outage(generation)
        if since is not None:
            logger.info(
                "%s is available again after %.1fs; decisions are shared again",
                self.description,
                time.monotonic() - since,
            )

    def _end_outage(self, generation: int) -> float | None:
        with self._lock:
            since = self._down_since
            if since is None or generation != self.generation:
                return None  # ended by another thread, or begun before this outage
            self._down_since = None
            self.generation += 1
            return since

    def _fell_back(self) -> None:
        """Count a decision made on local state."""
        with self._lock:
            self.fallbacks += 1

    def metrics(self) -> StoreMetrics:
        """The store's health and counts, as a frozen snapshot."""
        with self._lock:
            return StoreMetrics(self._down_since is None, self.errors, self.outages, self.fallbacks)

    # -- running scripts ----------------------------------------------------------------

    def _sync_client(self) -> Any:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    self._client = bounded_cluster(self._given, self.op_timeout)  # type: ignore[arg-type]
                client = self._client
        return client

    def _run(self, script: Script, key: str, args: Sequence[str]) -> Any:
        """Run ``script`` on ``key`` (``EVALSHA``; ``EVAL`` if the server lost it)."""
        if self._wire is not None:
            return self._send(pack("EVALSHA", script.sha, "1", key, *args), script)
        client = self._sync_client()
        try:
            return client.evalsha(script.sha, 1, key, *args)
        except NoScriptError:
            # A restarted server or SCRIPT FLUSH: EVAL runs and caches it again.
            return client.eval(script.source, 1, key, *args)

    def _send(self, packed: bytes, script: Script) -> Any:
        """Run ``script`` as ``packed``: its ``EVALSHA``, packed by the caller.

        Only for a store with a wire (``self._wire``): the limiters pack their command
        once and send the same bytes on every decision.
        """
        try:
            return self._wire.call(packed)
        except NoScriptError:
            # A restarted server or SCRIPT FLUSH: EVAL runs and caches it again.
            return self._wire.call(as_eval(packed, script.sha, script.source))

    async def _run_async(self, script: Script, key: str, args: Sequence[str]) -> Any:
        """As `_run()`, awaited: on a ``redis.asyncio`` client, or in a worker thread."""
        if not self.is_async:
            import anyio.to_thread  # noqa: PLC0415

            return await anyio.to_thread.run_sync(self._run, script, key, args)
        if self._wire is not None:
            packed = pack("EVALSHA", script.sha, "1", key, *args)
            return await self._send_async(packed, script)
        client = self._client
        try:
            return await client.evalsha(script.sha, 1, key, *args)
        except NoScriptError:
            return await client.eval(script.source, 1, key, *args)

    async def _send_async(self, packed: bytes, script: Script) -> Any:
        """As `_send()`, awaited: on a ``redis.asyncio`` client, or in a worker thread."""
        if not self.is_async:
            import anyio.to_thread  # noqa: PLC0415

            return await anyio.to_thread.run_sync(self._send, packed, script)
        try:
            return await self._wire.call(packed)
        except NoScriptError:
            return await self._wire.call(as_eval(packed, script.sha, script.source))

    def close(self) -> None:
        """Close the store's own connections (sync clients; async ones: `aclose()`)."""
        if self._breakers is not None:
            self._breakers.close_all()
        client = self._client
        if client is None or self.is_async or client is self._given:
            return
        if self._wire is not None:
            self._wire.close()
        if isinstance(client, redis.cluster.RedisCluster):
            client.close()
        else:
            client.connection_pool.disconnect()

    async def aclose(self) -> None:
        """Close the store's own connections."""
        if self.is_async and self._client is not self._given:
            if self._breakers is not None:
                self._breakers.close_all()
            if self._wire is not None:
                await self._wire.close()
            await self._client.connection_pool.disconnect()
        else:
            self.close()

    def __repr__(self) -> str:
        return f"<RedisStore {self.description} op_timeout={self.op_timeout:g}s>"

    # -- per-policy options -------------------------------------------------------------

    def with_options(
        self,
        *,
        local_share: int | None = None,
        on_unavailable: OnUnavailable | None = None,
    ) -> RedisStore:
        """This store, with other ``local_share`` / ``on_unavailable`` for the policies given it.

        The view shares this store's connections, health (an outage seen by one is seen
        by all, counted once) and breakers' thread; only the two options are its own.
        Options left out keep this store's. ``store.with_options(local_share=4)`` is
        how a limiter is told that 4 instances share it.

        Raises:
            ValueError: ``local_share`` below 1, or ``on_unavailable`` neither
                ``"local"`` nor ``"reject"``.
            TypeError: ``local_share`` not an int.
        """
        from resilient.redis._store_view import StoreView  # noqa: PLC0415 -- a cycle

        share = self.local_share if local_share is None else check_int("local_share", local_share)
        mode = self.on_unavailable if on_unavailable is None else on_unavailable
        base = getattr(self, "_base", self)
        return StoreView(base, share, _check_on_unavailable(mode))
