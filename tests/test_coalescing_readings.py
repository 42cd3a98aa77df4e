"""What OpenTelemetry reports for Coalesce and Cache (issue 19): shared calls, hits, entries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilient
from resilient import Cache, CallCoalesced, Coalesce
from resilient.testing import ManualClock


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    yield reader
    handle.uninstrument()
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> dict[tuple[str, ...], Any]:
    """The points of metric ``name``, by (policy, kind[, outcome])."""
    found: dict[tuple[str, ...], Any] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    key = tuple(
                        str(attrs[a])
                        for a in ("resilient.policy", "resilient.kind", "resilient.outcome")
                        if a in attrs
                    )
                    found[key] = point.value
    return found


def test_leaders_followers_hits_misses_and_stale_answers_are_reported(
    reader: InMemoryMetricReader,
) -> None:
    coalesce = Coalesce(name="users-flights")
    joined = threading.Semaphore(0)
    coalesce.add_listener(lambda e: isinstance(e, CallCoalesced) and joined.release())
    release = threading.Event()
    in_flight: list[int] = []

    @coalesce
    def load(user: int) -> int:
        assert release.wait(30)
        return user

    threads = [threading.Thread(target=load, args=(1,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(2):
        assert joined.acquire(timeout=30)
    in_flight.append(points(reader, "resilient.coalesce.in_flight")[("users-flights", "coalesce")])
    release.set()
    for thread in threads:
        thread.join(30)

    clock = ManualClock()
    cache = Cache(ttl=1, stale_if_error=10, clock=clock, name="prices")
    failing = False

    @cache
    def price(symbol: str) -> float:
        if failing:
            raise ConnectionError
        return 1.0

    price("A")
    price("A")
    price("B")
    clock.advance(2)
    failing = True
    price("A")

    calls = points(reader, "resilient.calls")
    assert calls[("users-flights", "coalesce", "leader")] == 1
    assert calls[("users-flights", "coalesce", "follower")] == 2
    assert calls[("prices", "cache", "hit")] == 1
    assert calls[("prices", "cache", "miss")] == 2  # the stale answer is counted apart
    assert calls[("prices", "cache", "stale")] == 1
    assert in_flight == [1]
    assert points(reader, "resilient.coalesce.in_flight")[("users-flights", "coalesce")] == 0
    assert points(reader, "resilient.cache.entries")[("prices", "cache")] == 2
