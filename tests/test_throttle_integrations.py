"""The adaptive throttle through OpenTelemetry and the ASGI middleware."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import resilient
from resilient import AdaptiveThrottle, ThrottledError
from resilient.asgi import ResilienceMiddleware
from resilient.testing import ManualClock
from throttle_helpers import Draws, Refused, accepted, refused


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    yield reader
    handle.uninstrument()
    provider.shutdown()


Point = tuple[dict[str, Any], Any]


def points(reader: InMemoryMetricReader, name: str, policy: str) -> list[Point]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(point.attributes or {}), getattr(point, "value", point))
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
        if (point.attributes or {}).get("resilient.policy") == policy
    ]


def test_calls_by_outcome_and_the_rejection_probability(reader: InMemoryMetricReader) -> None:
    throttle = AdaptiveThrottle(
        "otel-throttle", clock=ManualClock(), random=Draws([0.9, 0.1], default=0.9)
    )
    throttle.call(accepted)
    for _ in range(3):
        with pytest.raises(Refused):
            throttle.call(refused)
    with pytest.raises(ThrottledError):
        throttle.call(accepted)  # 4 requests, 1 accept: p = 2/5, draw 0.1
    calls = {
        attrs["resilient.outcome"]: value
        for attrs, value in points(reader, "resilient.calls", "otel-throttle")
    }
    assert calls == {"success": 1, "failure": 3, "ignored": 0, "rejected": 1}
    [(attrs, p)] = points(
        reader, "resilient.adaptive_throttle.rejection_probability", "otel-throttle"
    )
    assert attrs["resilient.kind"] == "adaptive_throttle"
    assert p == pytest.approx((5 - 2) / 6)


# -- ASGI: a service that sheds while its app keeps failing ----------------------------


def _request(app: Any) -> tuple[int, dict[str, Any] | None]:
    import anyio  # noqa: PLC0415

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    anyio.run(app, scope, receive, send)
    status = int(sent[0]["status"])
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body) if status == 503 and body.startswith(b"{") else None


def test_the_middleware_sheds_with_503_while_the_app_fails() -> None:
    calls = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(1)
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"down"})

    throttle = AdaptiveThrottle(clock=ManualClock(), random=Draws(default=0.0))
    middleware = ResilienceMiddleware(app, throttle)
    first = _request(middleware)
    assert first == (500, None)  # the app's own answer, counted as not accepted
    status, problem = _request(middleware)
    assert status == 503
    assert problem is not None
    assert problem["title"] == "Service Unavailable"
    assert len(calls) == 1  # the shed request never reached the app
    m = throttle.metrics()
    assert (m.failed, m.rejected) == (1, 1)
