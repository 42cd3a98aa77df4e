"""Redis down, slow, killed and restarted: callers see limits, never Redis's failures."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import TYPE_CHECKING

import pytest
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis_servers import free_port

import redis
from resilient import RateLimitedError
from resilient._policies._ratelimit import gcra_options
from resilient.redis import RedisStore, StoreRecovered, StoreUnavailable
from resilient.redis._gcra import SharedKeyedRateLimiterCore, SharedRateLimiterCore
from resilient.redis._scripts import GCRA
from resilient.testing import ManualClock, capture_events

if TYPE_CHECKING:
    from redis_servers import Server


def shared(
    store: RedisStore, rate: float = 10, clock: object = None, **options: object
) -> SharedRateLimiterCore:
    burst = options.pop("burst", None)
    max_wait = options.pop("max_wait", 0.0)
    return SharedRateLimiterCore(
        *gcra_options(rate, 1.0, burst, max_wait, "api", clock), store=store
    )


def dead_store(**options: object) -> RedisStore:
    # A port nobody listens on: every connection is refused at once.
    return RedisStore(redis.Redis(port=free_port()), **options)  # type: ignore[arg-type]


def test_redis_down_falls_back_to_local_state_with_one_event_and_one_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = dead_store(retry_interval=60)
    # Local decisions on a clock that stands still: the burst is exact however slow
    # the refused connect is.
    core = shared(store, 10, clock=ManualClock(), burst=4)
    with capture_events() as events, caplog.at_level(logging.WARNING, "resilient"):
        admitted = 0
        for _ in range(6):
            try:
                core.reserve()
                admitted += 1
            except RateLimitedError:
                pass
    assert admitted == 4  # the local GCRA: the same burst, decided in this process
    unavailable = [e for e in events if isinstance(e, StoreUnavailable)]
    assert len(unavailable) == 1
    assert unavailable[0].policy == "api"
    assert isinstance(unavailable[0].error, redis.ConnectionError)
    assert len([r for r in caplog.records if "is unavailable" in r.getMessage()]) == 1
    # One failed attempt, then no round trips until retry_interval has passed.
    metrics = store.metrics()
    assert (metrics.available, metrics.errors, metrics.outages, metrics.fallbacks) == (
        False,
        1,
        1,
        6,
    )
    assert core.metrics().admitted == 4
    assert core.metrics().rejected == 2


def test_local_share_divides_the_limit_while_redis_is_down() -> None:
    core = shared(dead_store(local_share=4), 40, clock=ManualClock(), burst=40)
    admitted = 0
    for _ in range(20):
        try:
            core.reserve()
            admitted += 1
        except RateLimitedError:
            pass
    assert admitted == 10


def test_on_unavailable_reject_refuses_while_redis_is_down() -> None:
    store = dead_store(on_unavailable="reject", retry_interval=5)
    core = shared(store)
    with capture_events() as events, pytest.raises(RateLimitedError, match="unavailable") as e:
        core.reserve()
    assert e.value.retry_after == 5
    assert [type(x).__name__ for x in events] == ["StoreUnavailable", "CallRejected"]
    assert core.metrics().rejected == 1


def test_a_keyed_limiter_falls_back_per_key() -> None:
    core = SharedKeyedRateLimiterCore(
        *gcra_options(1, 1.0, 1, 0.0, "k", None), store=dead_store(), max_keys=10
    )
    assert core.reserve("a")[0] == 0
    assert core.reserve("b")[0] == 0
    with pytest.raises(RateLimitedError):
        core.reserve("a")
    assert core.metrics().keys == 2


def test_a_local_reservation_is_given_back_locally() -> None:
    core = shared(dead_store(), 10, burst=1, max_wait=1.0)
    core.reserve()
    _, token = core.reserve()
    assert isinstance(token, int)
    core.give_back(token)
    assert core.metrics().admitted == 1
    keyed = SharedKeyedRateLimiterCore(
        *gcra_options(10, 1.0, 1, 1.0, "k", None), store=dead_store(), max_keys=10
    )
    keyed.reserve("a")
    _, token = keyed.reserve("a")
    keyed.give_back("a", token)
    assert keyed.metrics().admitted == 1


def test_a_give_back_that_fails_keeps_the_slot_taken(own_server: Server) -> None:
    store = RedisStore(own_server.client(), namespace="gb")
    core = shared(store, 10, burst=1, max_wait=1.0)
    core.reserve()
    _, token = core.reserve()
    own_server.kill()
    core.give_back(token)  # no exception: the slot stays taken, the failure is counted
    assert store.metrics().errors == 1
    core.give_back(token)  # during the outage: no round trip at all
    assert store.metrics().errors == 1
    assert core.metrics().admitted == 2


def asleep(server: Server, seconds: float) -> socket.socket:
    """Send DEBUG SLEEP on a raw connection; return once the server is sleeping."""
    raw = socket.create_connection(("127.0.0.1", server.port))
    raw.sendall(f"DEBUG SLEEP {seconds}\r\n".encode())
    probe = server.client(socket_timeout=0.02, retry=Retry(NoBackoff(), 0))
    try:
        for _ in range(100):
            try:
                probe.ping()  # answered: the sleep has not begun yet
            except redis.TimeoutError:
                return raw
        raise AssertionError("DEBUG SLEEP never began")
    finally:
        probe.close()


def test_a_slow_server_costs_a_caller_about_op_timeout_not_its_slowness(
    own_server: Server,
) -> None:
    store = RedisStore(own_server.client(), namespace="slow", op_timeout=0.05)
    core = shared(store, 1000)
    core.reserve()  # connected, script loaded
    raw = asleep(own_server, 0.5)
    try:
        with capture_events() as events:
            started = time.monotonic()
            delay, token = core.reserve()
            took = time.monotonic() - started
    finally:
        raw.close()
    assert (delay, isinstance(token, int)) == (0, True)  # decided locally
    assert store.metrics().errors == 1
    assert store.metrics().fallbacks == 1
    assert isinstance(events[0], StoreUnavailable)
    assert isinstance(events[0].error, redis.TimeoutError)
    assert took < 0.4  # op_timeout is 0.05 s; DEBUG SLEEP is 0.5 s


def test_server_killed_and_restarted_mid_run_callers_see_no_redis_error(
    own_server: Server,
) -> None:
    # Killed, not slow: refused at once. A roomy op_timeout keeps a slow reply of the
    # restarted server, on a loaded machine, from counting as a second outage.
    store = RedisStore(own_server.client(), namespace="crash", retry_interval=0.05, op_timeout=1.0)
    core = shared(store, 100_000, burst=100_000)
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller() -> None:
        while not stop.is_set():
            try:
                core.reserve()
            except RateLimitedError:
                pass
            except BaseException as exc:  # anything else is the bug this test looks for
                errors.append(exc)

    with capture_events() as events:
        threads = [threading.Thread(target=caller) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 10
            while core.metrics().admitted < 200 and time.monotonic() < deadline:
                time.sleep(0.005)
            own_server.kill()
            while store.metrics().fallbacks < 200 and time.monotonic() < deadline:
                time.sleep(0.005)
            own_server.start()
            while store.metrics().available is False and time.monotonic() < deadline:
                time.sleep(0.005)
            shared_before = core.admitted
            while core.admitted < shared_before + 200 and time.monotonic() < deadline:
                time.sleep(0.005)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert errors == []
    kinds = [type(e) for e in events if isinstance(e, (StoreUnavailable, StoreRecovered))]
    assert kinds == [StoreUnavailable, StoreRecovered]
    assert store.metrics().outages == 1
    assert store.metrics().available
    # Resynchronised: decisions are shared again, in the restarted server, which was
    # given the script again after NOSCRIPT.
    assert core.admitted >= shared_before + 200
    probe = own_server.client()
    assert probe.script_exists(GCRA.sha) == [True]
    probe.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_client_decides_and_gives_back(own_server: Server) -> None:
    import redis.asyncio  # noqa: PLC0415

    store = RedisStore(redis.asyncio.Redis(port=own_server.port), namespace="aio")
    core = shared(store, 10, burst=1, max_wait=1.0)
    assert (await core.reserve_async())[0] == 0
    delay, token = await core.reserve_async()
    assert delay > 0
    await core.give_back_async(token)
    assert core.metrics().admitted == 1
    # NOSCRIPT on the asyncio client: reloaded, not a failure.
    plain = own_server.client()
    plain.script_flush()
    plain.close()
    assert (await core.reserve_async())[0] > 0
    assert store.metrics().errors == 0
    with pytest.raises(TypeError, match="serves async calls only"):
        core.reserve()
    with pytest.raises(TypeError, match="serves async calls only"):
        core.give_back("1")
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_sync_client_serves_async_callers_from_a_worker_thread(
    own_server: Server,
) -> None:
    store = RedisStore(own_server.client(), namespace="thread")
    core = SharedKeyedRateLimiterCore(
        *gcra_options(10, 1.0, 1, 1.0, "k", None), store=store, max_keys=10
    )
    assert (await core.reserve_async("a"))[0] == 0
    _, token = await core.reserve_async("a")
    await core.give_back_async("a", token)
    assert core.metrics().admitted == 1
    down = SharedKeyedRateLimiterCore(
        *gcra_options(10, 1.0, 1, 1.0, "k", None), store=dead_store(), max_keys=10
    )
    await down.reserve_async("a")
    _, local_token = await down.reserve_async("a")
    await down.give_back_async("a", local_token)
    assert down.metrics().admitted == 1
    local = SharedRateLimiterCore(*gcra_options(10, 1.0, 1, 1.0, "x", None), store=dead_store())
    await local.reserve_async()
    _, token = await local.reserve_async()
    await local.give_back_async(token)
    assert local.metrics().admitted == 1
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_async_redis_down_falls_back(own_server: Server) -> None:
    import redis.asyncio  # noqa: PLC0415

    store = RedisStore(redis.asyncio.Redis(port=own_server.port), retry_interval=60)
    core = shared(store, 10, burst=1, max_wait=1.0)
    await core.reserve_async()
    own_server.kill()
    with capture_events() as events:
        _, token = await core.reserve_async()
        assert isinstance(token, int)
        # Within retry_interval: decided locally with no round trip at all.
        await core.give_back_async(token)
        _, again = await core.reserve_async()
        assert isinstance(again, int)
    assert [type(e) for e in events] == [StoreUnavailable]
    await core.give_back_async("999")  # a shared token during the outage: kept, no trip
    assert store.metrics().errors == 1
    await store.aclose()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_slow_server_costs_an_async_caller_about_op_timeout(own_server: Server) -> None:
    import redis.asyncio  # noqa: PLC0415

    store = RedisStore(redis.asyncio.Redis(port=own_server.port), namespace="aslow")
    core = shared(store, 1000)
    await core.reserve_async()  # connected, script loaded
    raw = asleep(own_server, 0.5)
    try:
        started = time.monotonic()
        delay, token = await core.reserve_async()
        took = time.monotonic() - started
    finally:
        raw.close()
    assert (delay, isinstance(token, int)) == (0, True)  # decided locally
    assert store.metrics().errors == 1
    assert isinstance(store.last_error, redis.TimeoutError)
    assert took < 0.4  # op_timeout is 0.05 s; DEBUG SLEEP is 0.5 s
    await store.aclose()
