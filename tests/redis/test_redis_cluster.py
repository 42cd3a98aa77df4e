"""The limiter's scripts on a local 3-node Redis Cluster: one slot per decision."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

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
    store = RedisStore(cluster_client, namespace="cluster")
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
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.05, 0.05)
    assert store._client.retry.get_retries() == 0
    store.close()


def test_keyed_limits_spread_over_the_nodes_and_reload_scripts(
    cluster_client: redis.cluster.RedisCluster, redis_cluster: list[Server]
) -> None:
    store = RedisStore(cluster_client, namespace="cluster")
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
