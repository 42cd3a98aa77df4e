"""RedisStore: what it accepts, how it names keys, and its own bounded connections."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio
from breaker_fleet import check_unlock_in_child

import redis
import resilient.redis
from resilient.redis import RedisStore, StoreMetrics, StoreRecovered, StoreUnavailable
from resilient.redis._clients import unlock_in_child

if TYPE_CHECKING:
    from redis_servers import Server


def test_public_surface() -> None:
    assert resilient.redis.__all__ == sorted(resilient.redis.__all__)
    for name in resilient.redis.__all__:
        assert getattr(resilient.redis, name).__module__ == "resilient.redis"


@pytest.mark.parametrize("client", [None, "redis://localhost", object()])
def test_the_client_must_be_a_redis_client(client: object) -> None:
    with pytest.raises(TypeError, match=r"client must be a redis\.Redis, redis\.asyncio\.Redis"):
        RedisStore(client)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"namespace": ""}, ValueError, "namespace must be a non-empty str"),
        ({"namespace": 3}, TypeError, "namespace must be a non-empty str, not int"),
        ({"op_timeout": 0}, ValueError, "op_timeout must be"),
        ({"op_timeout": 61}, ValueError, "op_timeout must be"),
        ({"op_timeout": -1}, ValueError, "op_timeout must be"),
        ({"retry_interval": 0}, ValueError, "retry_interval must be"),
        ({"local_share": 0}, ValueError, "local_share must be an int >= 1"),
        ({"local_share": 1.5}, TypeError, "local_share must be an int"),
        ({"on_unavailable": "raise"}, ValueError, "on_unavailable must be 'local' or 'reject'"),
    ],
)
def test_bad_options_are_refused_naming_the_option(
    options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RedisStore(redis.Redis(), **options)  # type: ignore[arg-type]


def test_durations_may_be_timedeltas() -> None:
    store = RedisStore(redis.Redis(), op_timeout=datetime.timedelta(milliseconds=20))  # type: ignore[arg-type]
    assert store.op_timeout == pytest.approx(0.02)


def test_keys_are_hash_tagged_and_unambiguous() -> None:
    store = RedisStore(redis.Redis(), namespace="app")
    assert store.key("api") == "{app:api}:gcra"
    assert store.key("per-user", "alice") == "{app:per-user:alice}:gcra"
    # Separators and braces inside names and keys are escaped: no two pairs collide.
    assert store.key("a:b", "c") != store.key("a", "b:c")
    assert store.key("a}{", "x") == "{app:a%7D%7B:x}:gcra"
    # A key that is not a str is told apart from its text.
    assert store.key("n", 5) != store.key("n", "5")
    assert store.key("n", "~5") != store.key("n", 5)


def test_the_store_uses_its_own_bounded_connections() -> None:
    given = redis.Redis(host="example.invalid", port=6390, db=3, socket_timeout=None)
    store = RedisStore(given, op_timeout=0.02)
    kwargs = store._client.connection_pool.connection_kwargs
    assert store._client is not given
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("example.invalid", 6390, 3)
    assert kwargs["socket_timeout"] == 0.02
    assert kwargs["socket_connect_timeout"] == 0.02
    assert kwargs["retry"].get_retries() == 0
    assert "redis example.invalid:6390/3" in repr(store)


def test_an_async_client_gets_its_own_bounded_connections() -> None:
    given = redis.asyncio.Redis(port=6390)
    store = RedisStore(given, op_timeout=0.03)
    assert store.is_async
    assert store._client.connection_pool.connection_kwargs["socket_timeout"] == 0.03


def test_a_client_on_another_kind_of_pool_is_used_as_given() -> None:
    class OwnPool(redis.ConnectionPool):
        pass

    given = redis.Redis(connection_pool=OwnPool(port=6390))
    assert RedisStore(given)._client is given


def test_metrics_start_healthy(redis_server: Server) -> None:
    store = RedisStore(redis_server.client())
    assert store.metrics() == StoreMetrics(available=True, errors=0, outages=0, fallbacks=0)
    store.close()


def test_event_records_are_frozen_with_policy_and_kind() -> None:
    down = StoreUnavailable("api", "rate_limiter", "redis x", None)
    up = StoreRecovered("api", "rate_limiter", "redis x", 1.5)
    assert (down.policy, down.kind, up.downtime) == ("api", "rate_limiter", 1.5)
    with pytest.raises(AttributeError):
        down.store = "y"  # type: ignore[misc]


def test_describe_names_a_unix_socket_and_scripts_have_a_repr() -> None:
    from resilient.redis._scripts import GCRA  # noqa: PLC0415

    store = RedisStore(redis.Redis(unix_socket_path="/run/redis.sock"))
    assert "redis unix:/run/redis.sock" in store.description
    assert repr(GCRA).startswith("<Script gcra ")


def test_an_async_client_on_another_kind_of_pool_is_used_as_given() -> None:
    class OwnPool(redis.asyncio.ConnectionPool):
        pass

    given = redis.asyncio.Redis(connection_pool=OwnPool(port=6390))
    assert RedisStore(given)._client is given


def test_unlock_in_child_frees_the_locks_a_parent_thread_held_in_the_client(
    redis_server: Server,
) -> None:
    store = RedisStore(redis.Redis(port=redis_server.port), namespace="unlock", op_timeout=1.0)
    client: Any = store._sync_client()
    pool = client.connection_pool
    # What a thread inside redis-py's get_connection() or release() holds.
    locks = [pool._lock, pool._fork_lock, pool._event_dispatcher._lock]
    check_unlock_in_child(client, locks)
    store.close()


def test_unlock_in_child_leaves_an_async_client_and_none_alone() -> None:
    client = redis.asyncio.Redis(port=1)
    unlock_in_child(client)  # asyncio locks belong to no thread
    unlock_in_child(None)
