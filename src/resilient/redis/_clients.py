"""The store's own connections: the user's client settings, with a time budget per operation.

A policy's decision must never wait on Redis longer than ``op_timeout``, whatever the
user's client says (redis-py defaults to no socket timeout, and from version 6 to three
retries with backoff). So the store does not use the client's connections: it builds a
pool of its own from the same connection settings (address, database, credentials,
TLS), with ``op_timeout`` as its connect and read timeouts and no retries. A Cluster
client is rebuilt the same way, lazily, since building one talks to the cluster.

A client whose pool is of another kind (Sentinel's) is used as given: its timeouts and
retries are then the user's to set (see ``docs/scale-out.md``).
"""

from __future__ import annotations

import _thread
from typing import Any

import redis.asyncio
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import redis
from resilient._core._fork import reinit_lock

__all__ = [
    "SUPPORTED",
    "bounded_async",
    "bounded_cluster",
    "bounded_sync",
    "describe",
    "unlock_in_child",
]

SUPPORTED = (redis.Redis, redis.asyncio.Redis, redis.cluster.RedisCluster)


def _budget(kwargs: dict[str, Any], op_timeout: float) -> dict[str, Any]:
    budget = dict(kwargs)
    budget["socket_timeout"] = op_timeout
    budget["socket_connect_timeout"] = op_timeout
    budget.pop("retry_on_timeout", None)
    budget.pop("retry_on_error", None)
    return budget


def bounded_sync(client: redis.Redis, op_timeout: float) -> redis.Redis:
    """A ``redis.Redis`` on a new pool: the client's settings, ``op_timeout``, no retries."""
    pool = client.connection_pool
    if type(pool) not in (redis.ConnectionPool, redis.BlockingConnectionPool):
        return client
    kwargs = _budget(pool.connection_kwargs, op_timeout)
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def bounded_async(client: redis.asyncio.Redis, op_timeout: float) -> redis.asyncio.Redis:
    """As :func:`bounded_sync`, for a ``redis.asyncio.Redis``."""
    pool = client.connection_pool
    if type(pool) not in (redis.asyncio.ConnectionPool, redis.asyncio.BlockingConnectionPool):
        return client
    kwargs = _budget(pool.connection_kwargs, op_timeout)
    kwargs["retry"] = AsyncRetry(NoBackoff(), 0)
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.ConnectionPool(
            connection_class=pool.connection_class, **kwargs
        )
    )


def bounded_cluster(
    client: redis.cluster.RedisCluster, op_timeout: float
) -> redis.cluster.RedisCluster:
    """A ``RedisCluster`` on the same nodes: the client's settings, ``op_timeout``, no retries.

    Building it reads the cluster's slots from a node, so it may raise like any operation.
    """
    given: Any = client  # parts of redis.cluster are untyped
    manager = given.nodes_manager
    kwargs = _budget(manager.connection_kwargs, op_timeout)
    for own in ("host", "port", "retry", "redis_connect_func"):
        kwargs.pop(own, None)
    node_type: Any = redis.cluster.ClusterNode
    nodes = [node_type(node.host, node.port) for node in given.get_nodes()]
    return redis.cluster.RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **kwargs)


def describe(client: object) -> str:
    """Where a client points, for logs and events: ``redis 127.0.0.1:6379/0``."""
    if isinstance(client, redis.cluster.RedisCluster):
        cluster: Any = client
        nodes = ",".join(f"{n.host}:{n.port}" for n in cluster.get_nodes()[:3])
        return f"redis cluster {nodes}"
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"redis unix:{kwargs['path']}"
    return f"redis {kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


# The classes of the locks that the threading module makes (plain and reentrant).
_LOCK_TYPES = (_thread.LockType, _thread.RLock)


def unlock_in_child(client: Any) -> None:
    """In a forked child, unlock what a sync client's other threads held at the fork.

    redis-py resets a pool in a child under the pool's own lock: a fork that landed
    while another thread (the store's, polling) held it left the child's first command
    waiting for ever. Only the forking thread runs when this is called, so no lock here
    can be legitimately held. The locks are found by type, not by name: which objects
    hold one differs between redis-py versions. An async client has no thread locks.
    """
    if not isinstance(client, (redis.Redis, redis.cluster.RedisCluster)):
        return
    owners: list[Any] = [client]
    given: Any = client  # parts of redis.cluster are untyped
    if isinstance(client, redis.cluster.RedisCluster):
        manager = given.nodes_manager
        owners.append(manager)
        owners.append(getattr(manager, "read_load_balancer", None))
        nodes = given.get_nodes()
        pools = [n.redis_connection.connection_pool for n in nodes if n.redis_connection]
    else:
        pools = [given.connection_pool]
    for pool in pools:
        owners.append(pool)
        owners.append(getattr(pool, "_event_dispatcher", None))
    for owner in owners:
        for value in list(getattr(owner, "__dict__", {}).values()):
            if isinstance(value, _LOCK_TYPES):
                reinit_lock(value)
