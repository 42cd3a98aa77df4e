"""OpenTelemetry metrics and span events from a breaker, a retry and a bulkhead.

Run it with ``python examples/otel_metrics.py``. It needs the ``otel`` extra
(``pip install 'resilient-kit[otel]'``) and ``opentelemetry-sdk``; the ``test`` extra
has both. Traffic goes through a composition guarding a flaky dependency:
retries recover its occasional failures until it goes down and the breaker opens.
Then the in-memory reader collects once, as an exporter would on its interval, and
the script prints every data point, and the span events of the last request.
"""

from __future__ import annotations

import contextlib
import random

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import resilient
from resilient import Bulkhead, CircuitBreaker, CountWindow, ResilienceError, Retry, compose
from resilient.testing import instant_retries

reader = InMemoryMetricReader()
meter_provider = MeterProvider(metric_readers=[reader])
spans = InMemorySpanExporter()
tracer_provider = TracerProvider()
tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
tracer = tracer_provider.get_tracer("example")

# One call turns it on, for policies created before and after it.
resilient.instrument(meter_provider)

rng = random.Random(42)


def inventory(item: int) -> str:
    """A dependency that fails 20% of the time, and goes down from item 40."""
    if item >= 40 or rng.random() < 0.2:
        raise ConnectionError(f"inventory timed out on item {item}")
    return f"item-{item}"


guarded = compose(
    Retry(3, wait=0.05, on=ConnectionError, name="inventory-retry"),
    CircuitBreaker("inventory", window=CountWindow(20), minimum_calls=10, open_duration=30),
    Bulkhead(8, name="inventory-pool"),
)(inventory)

served = failed = 0
with instant_retries():  # the demo does not wait out the backoff
    for item in range(60):
        with tracer.start_as_current_span(f"GET /items/{item}"):
            try:
                guarded(item)
                served += 1
            except (ConnectionError, ResilienceError):
                failed += 1
print(f"served {served}, failed {failed}\n")

data = reader.get_metrics_data()
for resource_metrics in data.resource_metrics if data is not None else ():
    for scope_metrics in resource_metrics.scope_metrics:
        for metric in scope_metrics.metrics:
            for point in metric.data.data_points:
                attrs = dict(point.attributes or {})
                policy = attrs.pop("resilient.policy", "")
                attrs.pop("resilient.kind", None)
                extra = ", ".join(f"{k.removeprefix('resilient.')}={v}" for k, v in attrs.items())
                value = getattr(point, "value", None)
                print(f"{metric.name:40} {policy:16} {extra:38} {value}")

last = spans.get_finished_spans()[-1]
print(f"\nspan {last.name!r} events:")
for event in last.events:
    print(f"  {event.name} {dict(event.attributes or {})}")

with contextlib.suppress(Exception):
    meter_provider.shutdown()
    tracer_provider.shutdown()
