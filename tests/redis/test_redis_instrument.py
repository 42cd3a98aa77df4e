"""OpenTelemetry readings of a shared store's health, read back through the SDK's reader."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis_servers import free_port

import redis
import resilient
from resilient import CircuitBreaker, RateLimitedError, RateLimiter
from resilient.redis import RedisStore
from resilient.redis._breaker_sync import BreakerSync

if TYPE_CHECKING:
    from redis_servers import Server

_ids = itertools.count()


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reading = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reading])
    handle = resilient.instrument(provider)
    yield reading
    handle.uninstrument()
    provider.shutdown()


def store_points(reader: InMemoryMetricReader, store: RedisStore) -> dict[str, Any]:
    """Each ``resilient.store.*`` metric's value for ``store`` (by its description)."""
    data = reader.get_metrics_data()
    found: dict[str, Any] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if not metric.name.startswith("resilient.store."):
                    continue
                for point in metric.data.data_points:
                    if dict(point.attributes or {}).get("resilient.store") == store.description:
                        found[metric.name.removeprefix("resilient.store.")] = point.value
    return found


def test_a_healthy_store_reads_available_with_no_errors(
    reader: InMemoryMetricReader, redis_server: Server, namespace: str
) -> None:
    store = RedisStore(redis.Redis(port=redis_server.port), namespace=namespace, op_timeout=1.0)
    limiter = RateLimiter(100, name=f"ok{next(_ids)}", store=store)
    assert limiter.call(int) == 0
    assert store_points(reader, store) == {
        "available": 1,
        "errors": 0,
        "outages": 0,
        "fallbacks": 0,
    }
    store.close()


def test_an_outage_reads_as_errors_outages_fallbacks_and_unavailable(
    reader: InMemoryMetricReader, namespace: str
) -> None:
    # A port nobody listens on: every connection is refused at once.
    store = RedisStore(redis.Redis(port=free_port()), namespace=namespace, retry_interval=60)
    limiter = RateLimiter(2, name=f"down{next(_ids)}", store=store)
    outcomes = []
    for _ in range(3):
        try:
            outcomes.append(limiter.call(lambda: "ok"))
        except RateLimitedError:
            outcomes.append("limited")
    assert outcomes == ["ok", "ok", "limited"]  # the local limit: no Redis error seen
    # One operation failed (then none tried for retry_interval); three local decisions.
    assert store_points(reader, store) == {
        "available": 0,
        "errors": 1,
        "outages": 1,
        "fallbacks": 3,
    }


def test_stores_of_one_view_and_breakers_read_once(
    reader: InMemoryMetricReader, namespace: str
) -> None:
    store = RedisStore(redis.Redis(port=free_port()), namespace=namespace, retry_interval=60)
    store._breakers = BreakerSync(store)
    store._breakers.manual = True  # no thread racing the limiters to the first failure
    strict = store.with_options(local_share=2)
    limiters = [RateLimiter(2, name=f"v{next(_ids)}", store=s) for s in (store, strict)]
    breaker = CircuitBreaker(f"b{next(_ids)}", store=strict)
    for limiter in limiters:
        limiter.call(int)
    # The view shares the store's health: one point, counted once.
    assert store_points(reader, store) == {
        "available": 0,
        "errors": 1,
        "outages": 1,
        "fallbacks": 2,
    }
    assert breaker.call(int) == 0
    store.close()


def test_a_store_that_fails_to_report_is_counted_and_calls_go_on(namespace: str) -> None:
    reading = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reading])
    handle = resilient.instrument(provider)

    class Broken(RedisStore):
        __slots__ = ()

        def metrics(self) -> Any:
            raise RuntimeError("metrics are down")

    store = Broken(redis.Redis(port=free_port()), namespace=namespace, retry_interval=60)
    limiter = RateLimiter(10, name=f"broken{next(_ids)}", store=store)
    try:
        assert limiter.call(lambda: "ok") == "ok"
        assert store_points(reading, store) == {}
        assert handle.callback_errors >= 1
        assert limiter.call(lambda: "ok") == "ok"  # the user's calls are unaffected
    finally:
        handle.uninstrument()
        provider.shutdown()
