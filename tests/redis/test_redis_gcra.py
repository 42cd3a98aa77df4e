"""The shared GCRA on a real redis-server: decisions, retry_after, reservations, expiry."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

import redis
from resilient import RateLimitedError
from resilient._core._gcra import RateLimiterCore
from resilient._policies._ratelimit import gcra_options
from resilient.redis import RedisStore
from resilient.redis._gcra import SharedKeyedRateLimiterCore, SharedRateLimiterCore
from resilient.redis._scripts import GCRA, GIVE_BACK
from resilient.testing import capture_events

if TYPE_CHECKING:
    from redis_servers import Server

NS = 1_000_000_000


def pair(ns: int) -> tuple[str, str]:
    """Nanoseconds as the scripts take them: (whole seconds, nanoseconds)."""
    return str(ns // NS), str(ns % NS)


def shared(
    store: RedisStore,
    rate: float = 10,
    *,
    per: float = 1.0,
    burst: int | None = None,
    max_wait: float = 0.0,
    name: str = "api",
) -> SharedRateLimiterCore:
    return SharedRateLimiterCore(*gcra_options(rate, per, burst, max_wait, name, None), store=store)


@pytest.fixture
def store(redis_server: Server, namespace: str) -> Iterator[RedisStore]:
    # A roomy op_timeout: these tests are about decisions, not a slow Redis.
    store = RedisStore(redis_server.client(), namespace=namespace, op_timeout=5)
    yield store
    store.close()


def test_burst_then_refusal_with_a_retry_after_within_one_interval(
    store: RedisStore, client: redis.Redis
) -> None:
    core = shared(store, 10, burst=3)
    for _ in range(3):
        assert core.reserve()[0] == 0
    with capture_events() as events, pytest.raises(RateLimitedError) as caught:
        core.reserve()
    # Three calls at t1..t3 within microseconds: the fourth is due at t1 + 100 ms.
    assert 0 < caught.value.retry_after <= 0.1
    assert caught.value.policy == "api"
    assert [type(e).__name__ for e in events] == ["CallRejected"]
    assert core.metrics().admitted == 3
    assert core.metrics().rejected == 1


def test_the_script_is_exact_to_the_nanosecond(store: RedisStore) -> None:
    # 3 per second is one call per 333,333,334 ns (rounded up, as the local core does).
    key = store.key("exact")
    args = (*pair(333_333_334), *pair(333_333_334), *pair(0))
    first = store._run(GCRA, key, (*args, *pair(10 * NS)))
    assert [int(first[0]), int(first[1]), int(first[2])] == [1, 0, 0]
    second = store._run(GCRA, key, (*args, *pair(10 * NS + 200_000_000)))
    assert [int(second[0]), int(second[1]), int(second[2])] == [0, 0, 133_333_334]
    assert int(second[3]) == 10 * NS + 333_333_334  # the TAT, unchanged by a refusal


def test_retry_after_is_the_delay_rounded_up_to_a_float(store: RedisStore) -> None:
    core = shared(store, 3, burst=1)
    with pytest.raises(RateLimitedError) as caught:
        core._decided([0, 0, 133_333_334, b"1", b"1"], None, 0)
    assert caught.value.retry_after * NS >= 133_333_334
    assert caught.value.retry_after == pytest.approx(0.133333334)


def test_a_reservation_waits_for_its_slot_and_can_be_given_back(
    store: RedisStore, client: redis.Redis
) -> None:
    core = shared(store, 10, burst=1, max_wait=1.0)
    assert core.reserve()[0] == 0
    delay, token = core.reserve()
    assert 0 < delay <= NS // 10
    assert isinstance(token, str)
    assert client.get(store.key("api")) == token
    core.give_back(token)
    assert int(client.get(store.key("api"))) == int(token) - NS // 10
    assert core.metrics().admitted == 1
    assert core.metrics().waited == 0
    # The slot given back is taken again by the next caller.
    assert 0 < core.reserve()[0] <= NS // 10


def test_a_slot_is_not_given_back_when_someone_reserved_after_it(
    store: RedisStore, client: redis.Redis
) -> None:
    core = shared(store, 10, burst=1, max_wait=1.0)
    core.reserve()
    _, first = core.reserve()
    _, second = core.reserve()
    core.give_back(first)
    assert client.get(store.key("api")) == second
    assert core.metrics().admitted == 3


def test_the_key_expires_once_its_tat_has_passed(store: RedisStore, client: redis.Redis) -> None:
    core = shared(store, 10, burst=5)
    core.reserve()
    # TAT = now + 100 ms: the key lives at most that long, rounded up to a millisecond.
    assert 0 < client.pttl(store.key("api")) <= 100
    core2 = shared(store, 1, per=60.0, burst=1, name="slow")
    core2.reserve()
    assert 59_000 < client.pttl(store.key("slow")) <= 60_000


def test_a_given_back_slot_in_the_past_deletes_the_key(store: RedisStore) -> None:
    key = store.key("gone")
    args = (*pair(NS), *pair(NS), *pair(NS))
    reply = store._run(GCRA, key, (*args, *pair(5 * NS)))
    assert store._run(GIVE_BACK, key, (reply[3].decode(), *pair(NS), *pair(5 * NS))) == 1
    assert store._run(GCRA, key, (*args, *pair(5 * NS)))[0] == 1


def test_noscript_after_a_flush_reloads_the_script(store: RedisStore, client: redis.Redis) -> None:
    core = shared(store, 100)
    core.reserve()
    client.script_flush()
    assert client.script_exists(GCRA.sha) == [False]
    core.reserve()
    assert client.script_exists(GCRA.sha) == [True]
    assert store.metrics().errors == 0


def test_keyed_limits_use_one_redis_key_per_client_key(
    store: RedisStore, client: redis.Redis
) -> None:
    core = SharedKeyedRateLimiterCore(
        *gcra_options(1, 1.0, 1, 0.0, "per-user", None), store=store, max_keys=10
    )
    assert core.reserve("alice")[0] == 0
    assert core.reserve(42)[0] == 0
    with pytest.raises(RateLimitedError, match="for key 'alice'"):
        core.reserve("alice")
    keys = sorted(client.keys(f"*{store.namespace}*"))
    assert keys == sorted([store.key("per-user", "alice"), store.key("per-user", 42)])
    assert all(0 < client.pttl(k) <= 1000 for k in keys)
    assert core.metrics().admitted == 2
    assert core.metrics().rejected == 1


def test_keyed_reservations_are_given_back_per_key(store: RedisStore, client: redis.Redis) -> None:
    core = SharedKeyedRateLimiterCore(
        *gcra_options(10, 1.0, 1, 1.0, "per-user", None), store=store, max_keys=10
    )
    core.reserve("bob")
    _, token = core.reserve("bob")
    core.give_back("bob", token)
    assert int(client.get(store.key("per-user", "bob"))) == int(token) - NS // 10


def test_the_shared_core_has_no_local_fast_path(store: RedisStore) -> None:
    # admit() says "ask reserve()": the adapter's over-the-rate path is the only path.
    assert shared(store).admit() is False


def test_a_limiter_with_a_store_needs_a_name(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        SharedRateLimiterCore(*gcra_options(10, 1.0, None, 0.0, None, None), store=store)
    with pytest.raises(TypeError, match="store must be a RedisStore"):
        SharedRateLimiterCore(*gcra_options(10, 1.0, None, 0.0, "x", None), store=object())  # type: ignore[arg-type]


def test_local_core_and_script_agree_on_interval_and_tolerance(store: RedisStore) -> None:
    local = RateLimiterCore(*gcra_options(7, 1.0, 3, 0.0, "x", None))
    core = shared(store, 7, burst=3)
    assert core._args == (*pair(local.interval), *pair(local.tolerance))
    assert local.interval == math.ceil(NS / 7)
