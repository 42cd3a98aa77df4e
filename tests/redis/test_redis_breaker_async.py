"""Async callers of a shared breaker: its round trips never block the event loop.

A half-open trial asks the store for a lease, and reports its outcome to it. On the
async path both happen off the loop: the lease is awaited (a ``redis.asyncio`` client)
or asked for in a worker thread (a sync client), and the report is sent by the store's
thread. The probe here is a task that ticks while the server is held still with
``CLIENT PAUSE``: a blocked loop lets it tick not once.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import redis.asyncio
from breaker_fleet import fail, wait_server_ms

import redis
from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow, compose
from resilient.redis import RedisStore
from resilient.redis._breaker_sync import BreakerSync
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server

PAUSE_MS = 300


class Probe:
    """A task that counts its ticks: the loop ran whenever the count moved."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            await anyio.sleep(0.001)
            self.ticks += 1


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    ticking = Probe()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticking.run)
        await anyio.sleep(0.01)
        yield ticking
        tg.cancel_scope.cancel()


@pytest.fixture(params=["asyncio-sync", "trio-sync", "asyncio-async", "trio-async"])
def setup(request: pytest.FixtureRequest) -> list[str]:
    """The backend and the store's client (under trio, a redis.asyncio client's sync twin)."""
    return str(request.param).split("-")


@pytest.fixture
def anyio_backend(setup: list[str]) -> str:
    return setup[0]


@pytest.fixture
def client_kind(setup: list[str]) -> str:
    return setup[1]


@pytest.fixture
async def store(
    redis_server: Server, namespace: str, client_kind: str, anyio_backend: str
) -> AsyncIterator[RedisStore]:
    given: Any = (
        redis.Redis(port=redis_server.port)
        if client_kind == "sync"
        else redis.asyncio.Redis(port=redis_server.port)
    )
    # op_timeout outlasts the pause: the round trip waits for the server, not for a
    # timeout (which would be an outage, decided locally).
    made = RedisStore(given, namespace=namespace, op_timeout=5.0)
    made._breakers = BreakerSync(made)
    made._breakers.manual = True
    yield made
    sync = made._breakers
    sync._cores.clear()  # the thread, if one was started, stops at its next turn
    sync.wake()
    if sync._thread is not None:
        await anyio.to_thread.run_sync(sync._thread.join, 10.0)
    if anyio_backend == "asyncio":
        await made.aclose()
    else:
        made.close()  # the redis.asyncio connections were never opened: trio has none


def half_open_due(store: RedisStore, **options: Any) -> CircuitBreaker:
    """A shared breaker opened in the record, its open duration over (a trial is due)."""
    breaker = CircuitBreaker(
        "dep",
        window=CountWindow(10),
        minimum_calls=5,
        open_duration=0.2,
        half_open_calls=1,
        clock=ManualClock(),
        store=store,
        **options,
    )
    fail(breaker, 5)
    store._breakers.round()  # the local trip, sent
    assert breaker.state is CircuitState.OPEN
    breaker._core._clock.advance(1)  # type: ignore[attr-defined]
    wait_server_ms(250)  # the shared open_duration, on the server's clock
    return breaker


async def test_the_loop_runs_while_a_trial_waits_for_its_lease(
    store: RedisStore, client: redis.Redis, probe: Probe
) -> None:
    breaker = half_open_due(store)
    seen: list[int] = []

    async def trial() -> str:
        seen.append(probe.ticks)
        return "ok"

    before = probe.ticks
    client.client_pause(PAUSE_MS)  # the lease's round trip waits for the server
    assert await breaker.call_async(trial) == "ok"
    # The probe ticked between the call's start and the trial's: the loop ran while
    # the lease was asked for (before the fix: 0 ticks, the loop blocked ~300 ms).
    assert seen[0] > before
    assert breaker.state in (CircuitState.HALF_OPEN, CircuitState.CLOSED)


async def test_the_loop_runs_while_a_trial_is_reported(
    store: RedisStore, client: redis.Redis, probe: Probe
) -> None:
    breaker = half_open_due(store)
    store._breakers.manual = False  # the store's thread sends the report
    closed = threading.Event()
    at_close: list[int] = []

    def listener(event: Any) -> None:
        if getattr(event, "to_state", None) is CircuitState.CLOSED:
            at_close.append(probe.ticks)
            closed.set()

    breaker.add_listener(listener)
    ended: list[int] = []

    async def trial() -> str:
        client.client_pause(PAUSE_MS)  # the report's round trip waits for the server
        ended.append(probe.ticks)
        return "ok"

    assert await breaker.call_async(trial) == "ok"
    assert await anyio.to_thread.run_sync(closed.wait, 10.0)
    # The record closed the breaker after the loop ran on (before the fix: the report
    # was sent on the loop, which closed it with the probe frozen at its count).
    assert at_close[0] > ended[0]
    assert breaker.state is CircuitState.CLOSED


async def test_a_composed_async_trial_awaits_its_lease(
    store: RedisStore, client: redis.Redis, probe: Probe
) -> None:
    breaker = half_open_due(store, slow_call_duration=10.0)  # timed: the step measures
    guarded = compose(breaker)
    seen: list[int] = []

    async def trial() -> str:
        seen.append(probe.ticks)
        return "ok"

    before = probe.ticks
    client.client_pause(PAUSE_MS)
    assert await guarded.call_async(trial) == "ok"
    assert seen[0] > before
    # Every trial is taken: the next caller is refused, after asking the record.
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(trial)


async def test_an_async_trial_during_an_outage_is_decided_locally(
    store: RedisStore, redis_server: Server, probe: Probe
) -> None:
    breaker = half_open_due(store)
    store._failed(ConnectionError("down"), store.generation)  # an outage under way

    async def trial() -> str:
        return "ok"

    assert await breaker.call_async(trial) == "ok"
    # The one local trial passed: the local round closes it.
    assert breaker.state is CircuitState.CLOSED
    assert store.metrics().fallbacks >= 1


async def test_a_cancelled_async_trial_gives_its_lease_back_through_the_store(
    store: RedisStore, client: redis.Redis, namespace: str
) -> None:
    breaker = half_open_due(store)
    started = anyio.Event()

    async def trial() -> None:
        started.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, trial)
        await started.wait()
        assert client.zcard(f"{{{namespace}:dep}}:leases") == 1
        tg.cancel_scope.cancel()
    # The give-back waits for the store's thread (here, the round the test drives).
    assert client.zcard(f"{{{namespace}:dep}}:leases") == 1
    await anyio.to_thread.run_sync(store._breakers.round)
    assert client.zcard(f"{{{namespace}:dep}}:leases") == 0


async def test_a_failed_async_trial_reopens_the_fleet(
    store: RedisStore, client: redis.Redis, namespace: str
) -> None:
    breaker = half_open_due(store)

    async def trial() -> None:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await breaker.call_async(trial)
    await anyio.to_thread.run_sync(store._breakers.round)
    assert client.hget(f"{{{namespace}:dep}}:breaker", "s") == "open"
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        await breaker.call_async(trial)
