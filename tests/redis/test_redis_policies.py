"""RateLimiter and KeyedRateLimiter with ``store=``: decorators, blocks, compose, async."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio
import pytest
import redis.asyncio

import redis
from resilient import CircuitBreaker, KeyedRateLimiter, RateLimitedError, RateLimiter, compose
from resilient.redis import RedisStore
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server

NS = 1_000_000_000


@pytest.fixture
def store(redis_server: Server, namespace: str) -> Iterator[RedisStore]:
    store = RedisStore(redis_server.client(), namespace=namespace, op_timeout=5)
    yield store
    store.close()


def test_a_limiter_with_a_store_shares_its_limit_between_instances(
    store: RedisStore, client: redis.Redis
) -> None:
    # Two limiters with one name are two processes' views of one limit.
    first = RateLimiter(10, burst=3, name="api", store=store)
    second = RateLimiter(10, burst=3, name="api", store=store)

    @first
    def one() -> int:
        return 1

    @second
    def two() -> int:
        return 2

    assert [one(), two(), one()] == [1, 2, 1]
    with pytest.raises(RateLimitedError) as caught:
        two()
    assert 0 < caught.value.retry_after <= 0.1
    assert client.exists(store.key("api")) == 1
    assert first.metrics().admitted == 2
    assert second.metrics().admitted == 1
    assert second.metrics().rejected == 1


def test_without_a_store_nothing_changes() -> None:
    limiter = RateLimiter(10, burst=1, name="local")
    assert limiter.call(len, "ab") == 2
    with pytest.raises(RateLimitedError):
        limiter.call(len, "ab")


def test_a_policy_with_a_store_needs_a_name(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        RateLimiter(10, store=store)
    with pytest.raises(ValueError, match="needs a name"):
        KeyedRateLimiter(10, key=lambda user: user, store=store)


def test_the_store_must_be_a_store() -> None:
    with pytest.raises(TypeError, match=r"store must be a shared store such as .*RedisStore"):
        RateLimiter(10, name="x", store="redis://localhost")
    with pytest.raises(TypeError, match="store must be a shared store"):
        KeyedRateLimiter(10, key=lambda user: user, name="x", store=object())


def test_a_reserved_wait_sleeps_for_its_slot(store: RedisStore) -> None:
    limiter = RateLimiter(20, burst=1, max_wait=1.0, name="wait", store=store)
    limiter.call(int)
    limiter.call(int)  # waits up to 50 ms for its reserved slot
    assert limiter.metrics().waited == 1


def test_blocks_and_compose_take_the_shared_limiter(store: RedisStore) -> None:
    limiter = RateLimiter(10, burst=2, name="block", store=store)
    with limiter:
        pass
    guarded = compose(CircuitBreaker("b"), limiter)
    assert guarded.call(len, "abc") == 3
    with pytest.raises(RateLimitedError), limiter:
        pass


def test_keyed_limiter_with_a_store(store: RedisStore, client: redis.Redis) -> None:
    limiter = KeyedRateLimiter(1, key=lambda user: user, name="per-user", store=store)

    @limiter
    def hello(user: str) -> str:
        return f"hi {user}"

    assert hello("alice") == "hi alice"
    assert hello("bob") == "hi bob"
    with pytest.raises(RateLimitedError, match="for key 'alice'"):
        hello("alice")
    assert client.exists(store.key("per-user", "alice"), store.key("per-user", "bob")) == 2
    limiter.acquire("carol")
    assert limiter.metrics().admitted == 3


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_callers_await_the_store(own_server: Server) -> None:
    store = RedisStore(redis.asyncio.Redis(port=own_server.port), namespace="async", op_timeout=5)
    limiter = RateLimiter(10, burst=2, name="api", store=store)

    @limiter
    async def ping() -> str:
        return "pong"

    assert await ping() == "pong"
    async with limiter:
        pass
    with pytest.raises(RateLimitedError):
        await ping()
    guarded = compose(CircuitBreaker("b2"), RateLimiter(10, burst=1, name="c", store=store))

    async def one() -> int:
        return 1

    assert await guarded.call_async(one) == 1
    # A sync caller cannot use a redis.asyncio client: said clearly, at the call.
    with pytest.raises(TypeError, match="serves async calls only"):
        limiter.call(int)
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cancelled_async_wait_gives_its_slot_back(own_server: Server) -> None:
    # A roomy op_timeout, and a cancellation well after the reservation's round trip:
    # it lands in the wait for the slot, the case under test.
    store = RedisStore(
        redis.asyncio.Redis(port=own_server.port), namespace="cancel", op_timeout=5.0
    )
    limiter = RateLimiter(1, burst=1, max_wait=5.0, name="api", store=store)
    await limiter.call_async(anyio.sleep, 0)
    with anyio.move_on_after(0.5):
        await limiter.call_async(anyio.sleep, 0)  # waits ~1 s for its slot: cancelled
    assert limiter.metrics().admitted == 1
    assert limiter.metrics().waited == 0
    # The slot given back is the next caller's, not one interval later.
    delay, _ = await limiter._core.reserve_async()
    assert delay <= NS
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_keyed_async_with_a_store(own_server: Server) -> None:
    store = RedisStore(redis.asyncio.Redis(port=own_server.port), namespace="kasync", op_timeout=5)
    limiter = KeyedRateLimiter(
        1, key=lambda user: user, max_wait=5.0, burst=1, name="per-user", store=store
    )

    @limiter
    async def hello(user: str) -> str:
        return user

    assert await hello("a") == "a"
    await limiter.acquire_async("b")
    with anyio.move_on_after(0.05):
        await limiter.acquire_async("a")  # waits ~1 s: cancelled, slot given back
    assert limiter.metrics().admitted == 2
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_sync_client_serves_async_callers_in_a_worker_thread(
    store: RedisStore,
) -> None:
    limiter = RateLimiter(10, burst=1, name="threaded", store=store)
    assert await limiter.call_async(anyio.sleep, 0) is None
    with pytest.raises(RateLimitedError):
        await limiter.call_async(anyio.sleep, 0)


class InterruptedSleep(ManualClock):
    """A clock whose sleeps are interrupted (Ctrl-C while waiting for a slot)."""

    def sleep(self, seconds: float) -> None:
        raise KeyboardInterrupt


def test_an_interrupted_sync_wait_gives_its_slot_back(
    store: RedisStore, client: redis.Redis
) -> None:
    limiter = RateLimiter(
        1, burst=1, max_wait=5.0, name="ctrl-c", clock=InterruptedSleep(), store=store
    )
    limiter.call(int)
    tat = client.get(store.key("ctrl-c"))
    with pytest.raises(KeyboardInterrupt):
        limiter.call(int)
    assert client.get(store.key("ctrl-c")) == tat
    assert limiter.metrics().admitted == 1
    keyed = KeyedRateLimiter(
        1, key=str, burst=1, max_wait=5.0, name="k", clock=InterruptedSleep(), store=store
    )
    keyed.acquire("a")
    with pytest.raises(KeyboardInterrupt):
        keyed.acquire("a")
    assert keyed.metrics().admitted == 1


def test_client_clocks_skewed_by_minutes_change_nothing(store: RedisStore) -> None:
    # Two hosts whose clocks disagree by ten minutes (and a third an hour behind): the
    # server's TIME decides, so they share one limit exactly as if their clocks agreed.
    ahead, behind = ManualClock(), ManualClock()
    ahead.advance(600.0)
    hosts = [
        RateLimiter(10, burst=2, name="skew", clock=clock, store=store)
        for clock in (ahead, behind, ManualClock())
    ]
    hosts[0].call(int)
    hosts[1].call(int)
    with pytest.raises(RateLimitedError) as caught:
        hosts[2].call(int)
    assert 0 < caught.value.retry_after <= 0.1
