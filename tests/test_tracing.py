"""Span events: what a policy did to a call shows on the span current at the time."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilient
from resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    Retry,
    Timeout,
    TimeoutExceededError,
)
from resilient.testing import ManualClock, instant_retries


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


@pytest.fixture
def spans() -> Iterator[tuple[Any, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider()
    handle = resilient.instrument(meters)
    yield provider.get_tracer("test"), exporter
    handle.uninstrument()
    provider.shutdown()
    meters.shutdown()


def events(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    [span] = exporter.get_finished_spans()
    return [(e.name, dict(e.attributes or {})) for e in span.events]


def test_rejection_and_transition_events(spans: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    breaker = CircuitBreaker(
        "traced", window=CountWindow(2), minimum_calls=2, open_duration=30, clock=ManualClock()
    )
    with tracer.start_as_current_span("request"):
        for _ in range(2):
            with contextlib.suppress(Boom):
                breaker.call(boom)
        with pytest.raises(CircuitOpenError):
            breaker.call(boom)
    assert events(exporter) == [
        (
            "resilient.state_transition",
            {
                "resilient.kind": "circuit_breaker",
                "resilient.policy": "traced",
                "resilient.from_state": "closed",
                "resilient.state": "open",
            },
        ),
        (
            "resilient.rejected",
            {
                "resilient.kind": "circuit_breaker",
                "resilient.policy": "traced",
                "exception.type": "CircuitOpenError",
                "resilient.retry_after": 30.0,
            },
        ),
    ]


def test_retry_and_fallback_events(spans: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = spans
    guarded = resilient.compose(
        Fallback(lambda exc: "spare", name="spare"), Retry(3, wait=0, name="again")
    )
    with tracer.start_as_current_span("request"), instant_retries():
        assert guarded.call(boom) == "spare"
    names = [name for name, _ in events(exporter)]
    assert names == [
        "resilient.retry",
        "resilient.retry",
        "resilient.retries_exhausted",
        "resilient.fallback",
    ]
    _, first_retry = events(exporter)[0]
    assert first_retry["resilient.attempt"] == 1
    assert first_retry["exception.type"] == "Boom"
    _, exhausted = events(exporter)[2]
    assert exhausted["resilient.attempts"] == 3
    assert exhausted["resilient.reason"] == "attempts"


async def test_timeout_event(spans: tuple[Any, InMemorySpanExporter]) -> None:
    tracer, exporter = spans

    async def hang() -> None:
        await anyio.Event().wait()

    with tracer.start_as_current_span("request"), pytest.raises(TimeoutExceededError):
        await Timeout(0.01, name="slow").call_async(hang)
    [(name, attrs)] = events(exporter)
    assert name == "resilient.timeout"
    assert attrs["resilient.timeout"] == 0.01
    assert attrs["resilient.policy"] == "slow"


def test_no_span_no_error_and_no_events_after_uninstrument() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    handle = resilient.instrument(MeterProvider())
    breaker = CircuitBreaker("untraced", window=CountWindow(1), minimum_calls=1)
    with contextlib.suppress(Boom):
        breaker.call(boom)  # opens, outside any span
    with pytest.raises(CircuitOpenError):
        breaker.call(boom)
    handle.uninstrument()
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("request"), pytest.raises(CircuitOpenError):
        breaker.call(boom)
    assert events(exporter) == []
    provider.shutdown()
