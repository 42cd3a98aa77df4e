"""Helpers of the shared-breaker tests: fleets of breakers, with sync rounds the test drives.

Each "process" is a breaker with a store of its own (its own connections and its own
background sync), all on one server; the sync rounds are driven by the test
(``manual``), so every step is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

import redis
from resilient import CircuitBreaker, CircuitOpenError, CountWindow
from resilient.redis import RedisStore
from resilient.redis._breaker import SharedBreakerCore
from resilient.redis._breaker_sync import BreakerSync
from resilient.testing import ManualClock

if TYPE_CHECKING:
    from redis_servers import Server


class BoomError(Exception):
    pass


def boom() -> None:
    raise BoomError


Maker = Callable[..., CircuitBreaker]


def manual_store(server: Server, namespace: str, **options: Any) -> RedisStore:
    """A store whose breaker sync rounds the test drives (no thread)."""
    options.setdefault("op_timeout", 1.0)
    store = RedisStore(redis.Redis(port=server.port), namespace=namespace, **options)
    store._breakers = BreakerSync(store)
    store._breakers.manual = True
    return store


def fleet_on(server: Server, namespace: str) -> Iterator[Maker]:
    stores: list[RedisStore] = []

    def make(
        name: str = "dep", clock: Any = None, store_options: Any = None, **options: Any
    ) -> CircuitBreaker:
        store = manual_store(server, namespace, **(store_options or {}))
        stores.append(store)
        options.setdefault("window", CountWindow(20))
        options.setdefault("minimum_calls", 10)
        options.setdefault("open_duration", 0.2)
        options.setdefault("half_open_calls", 2)
        return CircuitBreaker(name, clock=clock or ManualClock(), store=store, **options)

    try:
        yield make
    finally:
        for store in stores:
            store.close()


def sync(*breakers: CircuitBreaker) -> None:
    """One sync round of each breaker's store (what its thread does every interval).

    With its poll due: a pub/sub notification reaches the other connections a moment
    after the write that sent it, so a round right after may not see it yet.
    """
    for breaker in breakers:
        core = breaker._core
        assert isinstance(core, SharedBreakerCore)
        core._next_poll = 0.0
        core._sync.round()


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        with pytest.raises((BoomError, CircuitOpenError)):
            breaker.call(boom)


def record(client: redis.Redis, namespace: str, name: str = "dep") -> dict[str, str]:
    return client.hgetall(f"{{{namespace}:{name}}}:breaker")  # type: ignore[return-value]


def wait_server_ms(ms: float) -> None:
    """Let the server's clock pass ``ms`` (the shared open_duration is timed by it)."""
    time.sleep(ms / 1000)
