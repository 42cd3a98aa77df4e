"""The limiter's scripts on a local 3-node Redis Cluster: one slot per decision."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis.cluster

from resilient import RateLimitedError
from resilient._policies._ratelimit import gcra_options
from resilient.redis import RedisStore
from resilient.redis._gcra import SharedKeyedRateLimiterCore, SharedRateLimiterCore
from resilient.redis._scripts import GCRA

if TYPE_CHECKING:
    from redis_servers import Server


@pytest.fixture
def cluster_client(redis_cluster: list[Server]) -> Iterator[redis.cluster.RedisCluster]:
    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
    yield client
    client.close()


def test_the_limiter_runs_on_a_cluster(cluster_client: redis.cluster.RedisCluster) -> None:
    # A roomy op_timeout: a cluster just formed may answer its first commands slowly.
    store = RedisStore(cluster_client, namespace="cluster", op_timeout=1.0)
    assert "redis cluster" in store.description
    core = SharedRateLimiterCore(*gcra_options(10, 1.0, 2, 0.0, "api", None), store=store)
    assert core.reserve()[0] == 0
    assert core.reserve()[0] == 0
    with pytest.raises(RateLimitedError):
        core.reserve()
    assert 0 < cluster_client.pttl(store.key("api")) <= 200
    assert store.metrics().errors == 0
    # The store's own Cluster client, built at first use: bounded, no retries.
    kwargs = store._client.nodes_manager.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (1.0, 1.0)
    assert store._client.retry.get_retries() == 0
    store.close()


def test_keyed_limits_spread_over_the_nodes_and_reload_scripts(
    cluster_client: redis.cluster.RedisCluster, redis_cluster: list[Server]
) -> None:
    store = RedisStore(cluster_client, namespace="cluster", op_timeout=1.0)
    core = SharedKeyedRateLimiterCore(
        *gcra_options(1, 1.0, 1, 0.0, "per-user", None), store=store, max_keys=100
    )
    users = [f"user{i}" for i in range(30)]
    for user in users:
        assert core.reserve(user)[0] == 0
    # Each client key is its own hash tag: the keys land on every node.
    nodes = {cluster_client.get_node_from_key(store.key("per-user", u)).port for u in users}
    assert nodes == {node.port for node in redis_cluster}
    # A node that lost its scripts (SCRIPT FLUSH, a restart) is given them again.
    for node in redis_cluster:
        plain = node.client()
        plain.script_flush()
        plain.close()
    for user in users:
        with pytest.raises(RateLimitedError):
            core.reserve(user)
    for node in redis_cluster:
        plain = node.client()
        assert plain.script_exists(GCRA.sha) == [True]
        plain.close()
    assert store.metrics().errors == 0
    store.close()


def test_the_breaker_script_runs_on_a_cluster(
    cluster_client: redis.cluster.RedisCluster, redis_cluster: list[Server]
) -> None:
    from resilient import CircuitBreaker, CircuitState, CountWindow  # noqa: PLC0415
    from resilient.redis._breaker_sync import BreakerSync  # noqa: PLC0415
    from resilient.testing import ManualClock  # noqa: PLC0415

    breakers = []
    stores = []
    for _ in range(2):
        client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
        store = RedisStore(client, namespace="cluster-breaker", op_timeout=1.0)
        store._breakers = BreakerSync(store)
        store._breakers.manual = True  # rounds driven here
        stores.append(store)
        breakers.append(
            CircuitBreaker(
                "payments",
                window=CountWindow(10),
                minimum_calls=4,
                open_duration=0.05,
                half_open_calls=1,
                clock=ManualClock(),
                store=store,
            )
        )
    a, b = breakers
    for _ in range(4):
        with pytest.raises(ZeroDivisionError):
            a.call(lambda: 1 / 0)
    for breaker in breakers:
        breaker._core._next_poll = 0.0  # type: ignore[attr-defined]
        breaker._core._sync.round()  # type: ignore[attr-defined]
    assert (a.state, b.state) == (CircuitState.OPEN, CircuitState.OPEN)
    # The record, its buckets and its leases share one hash tag: one slot, one node.
    slots = {
        cluster_client.keyslot(f"{{cluster-breaker:payments}}:{k}") for k in ("breaker", "leases")
    }
    assert len(slots) == 1
    assert cluster_client.hget("{cluster-breaker:payments}:breaker", "s") == b"open"
    # A node that lost its scripts gets the breaker's again; the lease comes from it.
    for node in redis_cluster:
        plain = node.client()
        plain.script_flush()
        plain.close()
    b._core._clock.advance(1)  # type: ignore[attr-defined]
    time.sleep(0.06)  # the shared open_duration, on the server's clock
    assert b.call(int) == 0  # the one trial, leased by the script: it closes the breaker
    assert isinstance(b._core.admit_checked(), type(b._core._epoch))  # type: ignore[attr-defined]
    a._core._next_poll = 0.0  # type: ignore[attr-defined]
    a._core._sync.round()  # type: ignore[attr-defined]
    assert a.state is CircuitState.CLOSED
    with pytest.raises(ZeroDivisionError):
        a.call(lambda: 1 / 0)
    assert [s.metrics().errors for s in stores] == [0, 0]
    for store in stores:
        store.close()


def test_the_flushes_of_many_breakers_go_in_one_round_trip_per_node(
    cluster_client: redis.cluster.RedisCluster, redis_cluster: list[Server]
) -> None:
    from resilient import CircuitBreaker, CountWindow  # noqa: PLC0415
    from resilient.redis._breaker_sync import BreakerSync  # noqa: PLC0415
    from resilient.testing import ManualClock  # noqa: PLC0415

    client = redis.cluster.RedisCluster(host="127.0.0.1", port=redis_cluster[0].port)
    store = RedisStore(client, namespace="cluster-flush", op_timeout=1.0)
    store._breakers = BreakerSync(store)
    store._breakers.manual = True
    names = [f"dep{i}" for i in range(9)]  # 9 breakers on 3 nodes: some share a node
    breakers = [
        CircuitBreaker(
            n, window=CountWindow(20), minimum_calls=10, clock=ManualClock(), store=store
        )
        for n in names
    ]
    store._breakers.round()  # each record read once (none exists)
    for breaker in breakers:
        breaker.call(int)
    plain = [node.client() for node in redis_cluster]

    def reads() -> list[int]:
        return [int(p.info("stats")["total_reads_processed"]) for p in plain]

    per_node = {n.port: 0 for n in redis_cluster}
    for name in names:
        per_node[cluster_client.get_node_from_key(f"{{cluster-flush:{name}}}:buckets").port] += 1
    assert max(per_node.values()) >= 2
    before = reads()
    store._breakers.round()
    after = reads()
    # Per node: the pipeline of its breakers' flushes, then the INFO reading it (one
    # round trip per breaker before: as many reads as the node has breakers).
    assert [b - a for a, b in zip(before, after, strict=True)] == [
        2 if per_node[n.port] else 1 for n in redis_cluster
    ]
    for name in names:
        buckets = cluster_client.hgetall(f"{{cluster-flush:{name}}}:buckets")
        assert sum(int(v) for k, v in buckets.items() if k.endswith(b":c")) == 1
    # Nodes that lost their scripts: each flush is run again, loading the script.
    for p in plain:
        p.script_flush()
    for breaker in breakers:
        breaker.call(int)
    store._breakers.round()
    for name in names:
        buckets = cluster_client.hgetall(f"{{cluster-flush:{name}}}:buckets")
        assert sum(int(v) for k, v in buckets.items() if k.endswith(b":c")) == 2
    assert store.metrics().errors == 0
    for p in plain:
        p.close()
    store.close()


def test_a_transition_reaches_another_process_through_pub_sub_on_a_cluster(
    redis_cluster: list[Server],
) -> None:
    from resilient import CircuitBreaker, CircuitState, CountWindow  # noqa: PLC0415

    # Real sync threads, and a poll far beyond the wait: only the notification can tell.
    def make(port: int) -> tuple[RedisStore, CircuitBreaker]:
        store = RedisStore(
            redis.cluster.RedisCluster(host="127.0.0.1", port=port),
            namespace="cluster-pubsub",
            op_timeout=1.0,
            flush_interval=0.02,
            poll_interval=3600,
        )
        return store, CircuitBreaker("dep", window=CountWindow(10), minimum_calls=5, store=store)

    # Each "process" starts from another node of the cluster.
    (store_a, a), (store_b, b) = make(redis_cluster[0].port), make(redis_cluster[2].port)
    deadline = time.monotonic() + 10
    while store_b._breakers._pubsub is None and time.monotonic() < deadline:
        time.sleep(0.01)  # b's thread subscribing
    assert store_b._breakers._pubsub is not None
    rounds = store_b._breakers.rounds
    for _ in range(5):
        with pytest.raises(ZeroDivisionError):
            a.call(lambda: 1 / 0)  # a trips on its own; its thread sends the trip
    while b.state is not CircuitState.OPEN and time.monotonic() < deadline:
        time.sleep(0.01)  # b's thread hearing of it
    assert b.state is CircuitState.OPEN
    assert store_b._breakers.rounds > rounds
    assert (store_a.metrics().errors, store_b.metrics().errors) == (0, 0)
    store_a.close()
    store_b.close()


def test_unlock_in_child_frees_the_locks_of_a_cluster_client_and_its_nodes(
    cluster_client: redis.cluster.RedisCluster,
) -> None:
    from breaker_fleet import check_unlock_in_child  # noqa: PLC0415

    store = RedisStore(cluster_client, namespace="cluster-unlock", op_timeout=1.0)
    client: Any = store._sync_client()
    assert client.ping()  # every node's connection made
    pools = [n.redis_connection.connection_pool for n in client.get_nodes() if n.redis_connection]
    assert pools
    locks = [client.nodes_manager._lock, *(pool._lock for pool in pools)]
    check_unlock_in_child(client, locks)
    store.close()
