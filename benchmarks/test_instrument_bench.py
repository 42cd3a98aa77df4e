"""Per-call cost of a closed breaker with OpenTelemetry metrics on, next to one without.

Instrumentation reads counts at collection time, so the instrumented groups should match
the plain one; ``otel_overhead.py`` in this directory measures all cases alternating in
one process, which is the figure ``docs/observability.md`` reports. The opt-in duration
histogram is here too, to show what it costs with the SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilient

WARMUP = 200


def noop() -> None:
    return None


@pytest.fixture(params=["bare", "plain", "no-sdk", "sdk", "sdk-histogram"])
def guarded(request: pytest.FixtureRequest) -> Iterator[Callable[[], None]]:
    case = request.param
    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    handle: Any = None
    if case == "no-sdk":
        handle = resilient.instrument()
    elif case == "sdk":
        handle = resilient.instrument(provider)
    elif case == "sdk-histogram":
        handle = resilient.instrument(provider, call_duration=True)
    fn = noop if case == "bare" else resilient.CircuitBreaker(f"bench-{case}")(noop)
    for _ in range(WARMUP):
        fn()
    yield fn
    if handle is not None:
        handle.uninstrument()
    provider.shutdown()


@pytest.mark.benchmark(group="breaker CLOSED, sync, instrumented")
def test_instrumented_closed_call(benchmark: Any, guarded: Callable[[], None]) -> None:
    benchmark(guarded)
