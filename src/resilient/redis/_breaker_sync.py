"""The background side of shared breakers: one daemon thread per store.

A shared breaker's closed path never waits on Redis. Its outcomes are already counted
by the local core (the totals that ``metrics()`` reports); this thread reads them every
``flush_interval``, and sends what is new (calls, failures) into the shared buckets,
where the script decides the fleet's OPEN transition. The same thread sends the local
decisions (a local trip, a trial round decided locally during an outage) as
compare-and-sets, reports the trials of async callers (whose event loop must not
wait on a round trip), listens for transitions announced on pub/sub, and polls each
breaker's record every ``poll_interval`` in case a notification was lost. So every
process hears of a transition within ``flush_interval`` when pub/sub works, within
``poll_interval`` when it does not.

The thread is started by the first breaker bound to the store, and again in a forked
child (by the store's ``_after_fork_in_child``, once its client's locks are free): a
child inherits no threads.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import redis.asyncio
import redis.cluster
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException
from redis.retry import Retry

import redis
from resilient._core._fork import new_lock
from resilient.redis._breaker_script import BREAKER
from resilient.redis._clients import unlock_in_child

if TYPE_CHECKING:
    from resilient.redis._breaker import SharedBreakerCore
    from resilient.redis._store import RedisStore

__all__ = ["BreakerSync", "Flush", "sync_twin"]

# What a sync connection may take from a redis.asyncio pool's settings: the address,
# the credentials, TLS, the encoding (the rest is the async machinery's own).
_TWIN_KEYS = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "username",
        "password",
        "credential_provider",
        "encoding",
        "encoding_errors",
        "decode_responses",
        "client_name",
        "protocol",
        "socket_keepalive",
        "socket_read_size",
    }
)


def sync_twin(client: redis.asyncio.Redis, op_timeout: float) -> redis.Redis:
    """A sync ``redis.Redis`` to where ``client`` points: the breakers' thread is sync.

    Raises ``TypeError`` for a pool that is not the plain one (Sentinel's).
    """
    import redis.asyncio.connection as aconn  # noqa: PLC0415

    pool = client.connection_pool
    classes: dict[type[Any], type[Any]] = {
        aconn.Connection: redis.connection.Connection,
        aconn.SSLConnection: redis.connection.SSLConnection,
        aconn.UnixDomainSocketConnection: redis.connection.UnixDomainSocketConnection,
    }
    connection_class = classes.get(pool.connection_class)
    if connection_class is None or type(pool) not in (
        redis.asyncio.ConnectionPool,
        redis.asyncio.BlockingConnectionPool,
    ):
        raise TypeError(
            "a shared circuit breaker on a redis.asyncio client needs a plain connection"
            " pool (TCP, TLS or unix socket); give the store a redis.Redis instead"
        )
    kwargs = {
        key: value
        for key, value in pool.connection_kwargs.items()
        if key in _TWIN_KEYS or key.startswith("ssl_")
    }
    kwargs.update(socket_timeout=op_timeout, socket_connect_timeout=op_timeout)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs)
    )


logger = logging.getLogger("resilient")


class BreakerSync:
    """The store's daemon thread for its breakers (see the module docstring)."""

    __slots__ = (
        "__weakref__",
        "_cores",
        "_dirty",
        "_lock",
        "_pubsub",
        "_reports",
        "_store",
        "_thread",
        "_twin",
        "_wake",
        "channel",
        "manual",
        "rounds",
    )

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._cores: weakref.WeakSet[SharedBreakerCore] = weakref.WeakSet()
        self._lock = new_lock(self)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._twin: redis.Redis | None = None
        if store.is_async:
            self._twin = sync_twin(store._given, store.op_timeout)  # type: ignore[arg-type]
        self._dirty: set[str] = set()
        # Trial outcomes of async callers, whose loop must not wait on a round trip.
        self._reports: collections.deque[tuple[SharedBreakerCore, str, int, int]] = (
            collections.deque()
        )
        self.channel = store.key("breakers").rsplit(":", 1)[0] + ":transitions"
        self.rounds = 0
        # Tests drive round() themselves, deterministically: then no thread runs.
        self.manual = False

    def client(self) -> Any:
        """The sync client the breakers use: the store's own, or its sync twin."""
        twin = self._twin
        return twin if twin is not None else self._store._sync_client()

    def bind(self, core: SharedBreakerCore) -> None:
        """Keep ``core`` in step with its record (started at once: it may be open)."""
        with self._lock:
            self._cores.add(core)
            self._dirty.add(core.name or "")
            self._start()
        self._wake.set()

    def wake(self) -> None:
        """A local decision waits to be sent: do not wait for the next tick."""
        self._wake.set()

    def report_later(self, core: SharedBreakerCore, lease: str, version: int, outcome: int) -> None:
        """Send a trial's outcome from this thread, at once (for an async caller)."""
        self._reports.append((core, lease, version, outcome))  # one C call: atomic
        with self._lock:
            self._start()
        self._wake.set()

    def _send_reports(self) -> None:
        reports = self._reports
        while reports:
            core, lease, version, outcome = reports.popleft()
            try:
                core.report(lease, version, outcome)
            except Exception:  # one breaker's failure must not stop the others'
                logger.exception("reporting a trial of breaker %r failed", core.name)

    def _start(self) -> None:
        if self.manual:
            return
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=_loop,
                args=(weakref.ref(self),),
                name=f"resilient-breakers {self._store.description}",
                daemon=True,
            )
            self._thread.start()

    def _restart_in_child(self) -> None:
        # The parent's thread and pub/sub connection are not the child's (dropped, not
        # closed: closing would shut the parent's socket). Called by the store, after
        # its own client's locks; not named _after_fork_in_child, which new_lock()
        # would call too, in no set order.
        unlock_in_child(self._twin)
        self._thread = None
        self._pubsub = None
        # The parent's thread may have been inside the event's lock (waiting, or being
        # set) at the fork: in the child nobody would ever release it.
        self._wake = threading.Event()
        if self._cores:
            self._everyone()
            self._start()

    # -- one round -------------------------------------------------------------------

    def _listen(self) -> None:
        """Mark the breakers that pub/sub says changed (never blocks)."""
        store = self._store
        if not store.available:
            self.close()  # its connection died with the outage
            return
        try:
            if self._pubsub is None:
                pubsub = self.client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self._pubsub = pubsub
                self._everyone()  # what was announced while nobody listened: read it
            while True:
                message = self._pubsub.get_message(timeout=0.0)
                if message is None:
                    return
                data = message.get("data")
                name = data.decode() if isinstance(data, bytes) else str(data)
                self._dirty.add(name)
        except Exception:  # polling covers what pub/sub misses
            logger.debug("pub/sub on %s failed; polling", store.description, exc_info=True)
            self.close()

    def close(self) -> None:
        """Drop the pub/sub connection (made again by the next round that can)."""
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            # A dead connection has nothing left to close.
            with contextlib.suppress(Exception):
                pubsub.close()

    def close_all(self) -> None:
        """Close the pub/sub connection and the sync twin's connections (``store.close()``)."""
        self.close()
        if self._twin is not None:
            self._twin.connection_pool.disconnect()

    def _everyone(self) -> None:
        with self._lock:
            self._dirty.update(core.name or "" for core in self._cores)

    def round(self) -> None:
        """Send what is due for every bound breaker, and hear what changed."""
        self.rounds += 1
        self._listen()
        self._send_reports()
        now = time.monotonic()
        store = self._store
        with self._lock:
            cores = list(self._cores)
            dirty, self._dirty = self._dirty, set()
        flushes = []
        for core in cores:
            try:
                flush = core._sync_round(now, core.name in dirty)
            except Exception:  # one breaker's failure must not stop the others'
                logger.exception("syncing breaker %r with its store failed", core.name)
                continue
            if flush is not None:
                flushes.append(flush)
        # On a Cluster too: redis-py's ClusterPipeline routes each EVALSHA by its keys
        # (one hash tag, one slot) and sends each node its share in one round trip.
        batch = store.flush_batch
        for start in range(0, len(flushes), batch):
            self._flush(flushes[start : start + batch], now)

    def _flush(self, flushes: list[Flush], now: float) -> None:
        """Send the new outcomes of several breakers in one pipelined round trip."""
        store = self._store
        if not store._should_try():
            return
        generation = store.generation
        try:
            if len(flushes) == 1:
                # Alone: the breaker's own step, with its NOSCRIPT reload.
                one = flushes[0]
                reply = one.core._step("flush", one.args)
                if reply is not None:
                    one.core._flushed_with(one, reply, now)
                return
            client = self.client()
            pipe = client.pipeline(transaction=False)
            try:
                _queue(pipe, client, flushes)
            except RedisClusterException:  # pragma: no cover - no redis-py we test does
                # Refused by the client itself, before any I/O (a redis-py that blocks
                # EVALSHA in cluster pipelines altogether): each breaker alone.
                for flush in flushes:
                    self._flush([flush], now)
                return
            replies = pipe.execute(raise_on_error=False)
        except Exception as error:
            store._failed(error, generation)
            for flush in flushes:
                flush.core._down()
            return
        store._succeeded(generation)
        for flush, answer in zip(flushes, replies, strict=True):
            core = flush.core
            core._up()
            # A server that lost its scripts answers NOSCRIPT: the step reloads it.
            reply = core._step("flush", flush.args) if isinstance(answer, Exception) else answer
            if reply is not None:
                core._flushed_with(flush, reply, now)


def _queue(pipe: Any, client: Any, flushes: list[Flush]) -> None:
    """Queue each flush's EVALSHA in ``pipe``, a pipeline of ``client``."""
    if not isinstance(client, redis.cluster.RedisCluster):
        for flush in flushes:
            pipe.evalsha(BREAKER.sha, 3, *flush.argv())
        return
    cluster: Any = client  # parts of redis.cluster are untyped
    for flush in flushes:
        # redis-py's ClusterPipeline refuses evalsha() (a script's keys may span
        # slots; ours share one hash tag) and, for a command it has no routing flag
        # for, asks a node for its keys (COMMAND GETKEYS, a round trip each). Named
        # here from the slot table: each node gets its share in one round trip.
        node = cluster.get_node_from_key(flush.core._keys[0])
        pipe.execute_command("EVALSHA", BREAKER.sha, 3, *flush.argv(), target_nodes=node)


def _loop(ref: weakref.ReferenceType[BreakerSync]) -> None:
    # Holds the sync weakly between rounds, so a store nobody uses can be collected.
    while True:
        sync = ref()
        if sync is None or not (sync._cores or sync._reports):
            return
        wake, interval = sync._wake, sync._store.flush_interval
        sync.round()
        del sync
        wake.wait(interval)
        wake.clear()


class Flush:
    """New outcomes of one breaker, to send into its shared buckets."""

    __slots__ = ("args", "core", "totals")

    def __init__(
        self, core: SharedBreakerCore, args: tuple[str, ...], totals: tuple[int, int, int]
    ) -> None:
        self.core = core
        self.args = args
        self.totals = totals

    def argv(self) -> tuple[str, ...]:
        """The script's keys and arguments (``EVALSHA sha 3 *argv``)."""
        return self.core._argv("flush", self.args)
