"""OpenTelemetry metrics, read back through the SDK's in-memory reader after scripted traffic."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

import resilient
from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    Fallback,
    RateLimitedError,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    TimeoutExceededError,
)
from resilient._core import _events
from resilient._core._breaker_timing import DURATIONS
from resilient._core._events import GLOBAL_LISTENERS, NOTABLE_LISTENERS
from resilient.testing import ManualClock, capture_events, instant_retries

_ids = itertools.count()


class Boom(Exception):
    pass


class Skip(Exception):
    pass


def unique(prefix: str) -> str:
    """Policies of other tests may still be alive: every test names its own."""
    return f"{prefix}-{next(_ids)}"


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    return InMemoryMetricReader()


@pytest.fixture
def instrumented(reader: InMemoryMetricReader) -> Iterator[resilient.Instrumentation]:
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    yield handle
    handle.uninstrument()
    provider.shutdown()


def points(
    reader: InMemoryMetricReader, name: str, policy: str
) -> list[tuple[dict[str, Any], Any]]:
    """The data points of metric ``name`` for one policy: (attributes, value or point)."""
    data = reader.get_metrics_data()
    found: list[tuple[dict[str, Any], Any]] = []
    if data is None:
        return found
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attrs = dict(point.attributes or {})
                    if attrs.get("resilient.policy") == policy:
                        found.append((attrs, getattr(point, "value", point)))
    return found


def metric_units(reader: InMemoryMetricReader) -> dict[str, str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        m.name: m.unit
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }


def by(attr: str, found: list[tuple[dict[str, Any], Any]]) -> dict[Any, Any]:
    return {attrs[attr]: value for attrs, value in found}


def ok() -> str:
    return "ok"


def boom() -> str:
    raise Boom


def skip() -> str:
    raise Skip


def test_breaker_calls_state_transitions_and_rates(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    name = unique("payments")
    clock = ManualClock()
    breaker = CircuitBreaker(
        name, window=CountWindow(4), minimum_calls=4, open_duration=10, ignore=Skip, clock=clock
    )
    for fn in (ok, ok, ok, skip, boom):
        with contextlib.suppress(Boom, Skip):
            breaker.call(fn)

    calls = points(reader, "resilient.calls", name)
    assert by("resilient.outcome", calls) == {
        "success": 3,
        "failure": 1,
        "ignored": 1,
        "rejected": 0,
    }
    assert {attrs["resilient.kind"] for attrs, _ in calls} == {"circuit_breaker"}
    state = by("resilient.state", points(reader, "resilient.circuit_breaker.state", name))
    assert state == {
        "closed": 1,
        "open": 0,
        "half_open": 0,
        "forced_open": 0,
        "disabled": 0,
        "metrics_only": 0,
    }
    [(_, rate)] = points(reader, "resilient.circuit_breaker.failure_rate", name)
    assert rate == 0.25

    with pytest.raises(Boom):
        breaker.call(boom)  # 2 of 4 failed: opens
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            breaker.call(ok)

    calls = points(reader, "resilient.calls", name)
    assert by("resilient.outcome", calls) == {
        "success": 3,
        "failure": 2,
        "ignored": 1,
        "rejected": 3,
    }
    state = by("resilient.state", points(reader, "resilient.circuit_breaker.state", name))
    assert state["open"] == 1
    assert sum(state.values()) == 1
    transitions = points(reader, "resilient.circuit_breaker.transitions", name)
    assert [(a["resilient.from_state"], a["resilient.state"], v) for a, v in transitions] == [
        ("closed", "open", 1)
    ]
    clock.advance(10)
    breaker.call(ok)  # the first trial: HALF_OPEN
    state = by("resilient.state", points(reader, "resilient.circuit_breaker.state", name))
    assert state["half_open"] == 1

    units = metric_units(reader)
    assert units["resilient.calls"] == "{call}"
    assert units["resilient.circuit_breaker.state"] == "1"
    assert units["resilient.circuit_breaker.failure_rate"] == "1"


def test_bulkhead_rate_limiter_timeout_fallback_and_retry(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    bulkhead = Bulkhead(2, name=unique("pool"))
    with contextlib.ExitStack() as stack:
        stack.enter_context(bulkhead)
        stack.enter_context(bulkhead)
        with pytest.raises(BulkheadFullError):
            bulkhead.call(ok)
        assert points(reader, "resilient.bulkhead.in_flight", bulkhead.name or "") == [
            ({"resilient.policy": bulkhead.name, "resilient.kind": "bulkhead"}, 2)
        ]
    after = reader.get_metrics_data()
    assert after is not None
    assert by("resilient.outcome", points(reader, "resilient.calls", bulkhead.name or "")) == {
        "admitted": 2,
        "rejected": 1,
    }
    assert points(reader, "resilient.bulkhead.in_flight", bulkhead.name or "")[0][1] == 0
    assert points(reader, "resilient.bulkhead.limit", bulkhead.name or "")[0][1] == 2

    clock = ManualClock()
    limiter = RateLimiter(2, burst=2, max_wait=1.0, name=unique("api"), clock=clock)
    for _ in range(3):
        limiter.call(ok)  # the third waits 0.5 s for its slot
    limiter_b = RateLimiter(2, burst=1, name=limiter.name, clock=clock)  # same name: added up
    limiter_b.call(ok)
    with pytest.raises(RateLimitedError):
        limiter_b.call(ok)
    name = limiter.name or ""
    assert by("resilient.outcome", points(reader, "resilient.calls", name)) == {
        "admitted": 4,
        "rejected": 1,
    }
    assert points(reader, "resilient.rate_limiter.waited", name)[0][1] == 1

    fallback = Fallback(lambda exc: "spare", name=unique("spare"))
    assert fallback.call(boom) == "spare"
    assert by("resilient.outcome", points(reader, "resilient.calls", fallback.name or "")) == {
        "fallback": 1
    }

    budget = RetryBudget(ttl=10, min_retries_per_second=1, ratio=0.5, clock=ManualClock())
    retry = Retry(3, wait=0, on=Boom, budget=budget, name=unique("retry"))
    failures = iter([Boom(), Boom()])

    def flaky() -> str:
        exc = next(failures, None)
        if exc is not None:
            raise exc
        return "ok"

    with instant_retries():
        assert retry.call(flaky) == "ok"
        with pytest.raises(Boom):
            retry.call(boom)
    retries = by("resilient.outcome", points(reader, "resilient.calls", retry.name or ""))
    assert retries == {
        "retry": 4,
        "recovered": 1,
        "exhausted": 1,
        "deadline": 0,
        "budget_refused": 0,
        "stopped": 0,
        "first_attempt": 0,
    }
    [(_, balance)] = points(reader, "resilient.retry.budget.balance", retry.name or "")
    assert balance == budget.snapshot().balance


async def test_timeouts_are_counted(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    timeout = Timeout(0.01, name=unique("slow"))

    async def hang() -> None:
        await anyio.Event().wait()

    with pytest.raises(TimeoutExceededError):
        await timeout.call_async(hang)
    assert by("resilient.outcome", points(reader, "resilient.calls", timeout.name or "")) == {
        "admitted": 1,
        "timeout": 1,
        "rejected": 0,
    }


def test_unnamed_policies_are_not_reported_and_uninstrument_stops(
    reader: InMemoryMetricReader,
) -> None:
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    CircuitBreaker().call(ok)
    named = CircuitBreaker(unique("named"))
    named.call(ok)
    data = reader.get_metrics_data()
    assert data is not None
    policies = {
        dict(p.attributes or {}).get("resilient.policy")
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if not m.name.startswith("resilient.store.")  # a store's, not a policy's
        for p in m.data.data_points
    }
    assert None not in policies
    assert named.name in policies

    handle.uninstrument()
    assert not handle.active
    named.call(ok)
    assert points(reader, "resilient.calls", named.name or "") == []
    assert handle not in NOTABLE_LISTENERS
    provider.shutdown()


def test_a_failing_policy_read_is_counted_and_the_others_still_report(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    class Broken(CircuitBreaker):
        def metrics(self) -> Any:
            raise RuntimeError("metrics are down")

    broken = Broken(unique("broken"))
    healthy = CircuitBreaker(unique("healthy"))
    assert broken.call(ok) == "ok"  # the user's call is unaffected
    healthy.call(ok)
    assert (
        by("resilient.outcome", points(reader, "resilient.calls", healthy.name or ""))["success"]
        == 1
    )
    assert points(reader, "resilient.calls", broken.name or "") == []
    assert instrumented.callback_errors >= 1


def test_a_raising_listener_is_counted_and_the_result_unchanged(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    breaker = CircuitBreaker(unique("listened"))

    def bad_listener(event: object) -> None:
        raise RuntimeError("listener bug")

    breaker.add_listener(bad_listener)
    assert breaker.call(ok) == "ok"
    [(_, errors)] = points(reader, "resilient.listener.errors", breaker.name or "")
    assert errors == 1


def test_a_failing_exporter_does_not_touch_calls() -> None:
    class FailingExporter(MetricExporter):
        def __init__(self) -> None:
            super().__init__()
            self.exports = 0

        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            self.exports += 1
            raise RuntimeError("collector unreachable")

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    exporter = FailingExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider)
    breaker = CircuitBreaker(unique("exported"))
    try:
        assert breaker.call(ok) == "ok"
        provider.force_flush()  # the export raises inside the SDK, which logs it
        assert exporter.exports >= 1
        assert breaker.call(ok) == "ok"
    finally:
        handle.uninstrument()
        provider.shutdown()


def test_instrumenting_builds_no_event_per_successful_call(
    instrumented: resilient.Instrumentation, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = []

    class Spy(_events.CallSucceeded):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(args)
            super().__init__(*args, **kwargs)

    # The breaker names its records through `_events` (created on first use).
    monkeypatch.setattr(_events, "CallSucceeded", Spy)
    breaker = CircuitBreaker(unique("quiet"))
    for _ in range(10):
        breaker.call(ok)
    assert built == []
    assert not GLOBAL_LISTENERS


def test_opt_in_duration_histogram(reader: InMemoryMetricReader) -> None:
    clock = ManualClock()
    before = CircuitBreaker(unique("timed-before"), clock=clock)  # created untimed
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider, call_duration=True)
    after = CircuitBreaker(unique("timed-after"), clock=clock)

    def quarter() -> str:
        clock.advance(0.25)
        return "ok"

    try:
        for breaker in (before, after):
            for _ in range(4):
                breaker.call(quarter)
            with pytest.raises(Boom):
                breaker.call(boom)
        for breaker in (before, after):
            found = points(reader, "resilient.call.duration", breaker.name or "")
            hist = {attrs["resilient.outcome"]: point for attrs, point in found}
            assert hist["success"].count == 4
            assert hist["success"].sum == pytest.approx(1.0)
            assert hist["failure"].count == 1
            assert hist["failure"].sum == 0.0
        assert metric_units(reader)["resilient.call.duration"] == "s"
    finally:
        handle.uninstrument()
        provider.shutdown()
    assert not DURATIONS.wanted
    assert not GLOBAL_LISTENERS
    # Back to what each configuration needs: plain breakers stop measuring, a breaker
    # with slow-call detection keeps on.
    slow_aware = CircuitBreaker(unique("slow-aware"), slow_call_duration=1.0, clock=clock)
    with capture_events() as seen:
        for breaker in (before, after, slow_aware):
            breaker.call(quarter)
    assert [getattr(e, "duration", "?") for e in seen] == [None, None, 0.25]


def test_duration_quantiles_from_the_breaker_window(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        unique("quantiles"), slow_call_duration=100, window=CountWindow(10), clock=clock
    )
    for seconds in range(1, 11):

        def take(seconds: int = seconds) -> None:
            clock.advance(seconds)

        breaker.call(take)
    found = points(reader, "resilient.circuit_breaker.call.duration", breaker.name or "")
    assert by("resilient.quantile", found) == {0.5: 5.0, 0.9: 9.0, 0.99: 10.0}
    untimed = CircuitBreaker(unique("no-durations"))
    untimed.call(ok)
    assert points(reader, "resilient.circuit_breaker.call.duration", untimed.name or "") == []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"quantiles": (0.5, 1.5)}, ValueError),
        ({"quantiles": (0,)}, ValueError),
        ({"quantiles": (True,)}, ValueError),
        ({"meter_provider": "global"}, TypeError),
    ],
)
def test_bad_options_are_refused(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match=next(iter(kwargs))):
        resilient.instrument(**kwargs)


def test_instrument_again_returns_the_same_handle_and_reports_once(
    reader: InMemoryMetricReader,
) -> None:
    provider = MeterProvider(metric_readers=[reader])
    first = resilient.instrument(provider)
    second = resilient.instrument(provider, call_duration=True)
    breaker = CircuitBreaker(unique("twice"))
    breaker.call(ok)
    try:
        assert second is first
        assert points(reader, "resilient.calls", breaker.name or "") == [
            (
                {
                    "resilient.policy": breaker.name,
                    "resilient.kind": "circuit_breaker",
                    "resilient.outcome": outcome,
                },
                value,
            )
            for outcome, value in [("success", 1), ("failure", 0), ("ignored", 0), ("rejected", 0)]
        ]
        assert len(points(reader, "resilient.call.duration", breaker.name or "")) == 1
        first.uninstrument()
        assert points(reader, "resilient.calls", breaker.name or "") == []
        third = resilient.instrument(provider)
        assert third is first
        assert third.active
        assert (
            by("resilient.outcome", points(reader, "resilient.calls", breaker.name or ""))[
                "success"
            ]
            == 1
        )
    finally:
        first.uninstrument()
        provider.shutdown()
    assert not DURATIONS.wanted


def test_histogram_times_named_breakers_only_and_quantiles_skip_unmeasured_slots(
    reader: InMemoryMetricReader,
) -> None:
    clock = ManualClock()
    named = CircuitBreaker(unique("measured-late"), window=CountWindow(10), clock=clock)
    for _ in range(4):
        named.call(ok)  # recorded before durations are measured
    provider = MeterProvider(metric_readers=[reader])
    handle = resilient.instrument(provider, call_duration=True)
    unnamed = CircuitBreaker(clock=clock)

    def half() -> None:
        clock.advance(0.5)

    try:
        for _ in range(2):
            named.call(half)
        found = points(reader, "resilient.circuit_breaker.call.duration", named.name or "")
        assert set(by("resilient.quantile", found).values()) == {0.5}  # no 0.0 for old slots
        with capture_events() as seen:
            unnamed.call(half)
        assert [getattr(e, "duration", "?") for e in seen] == [None]  # not measured
    finally:
        handle.uninstrument()
        provider.shutdown()


def test_policies_sharing_a_name_report_one_set_of_points(
    instrumented: resilient.Instrumentation, reader: InMemoryMetricReader
) -> None:
    name = unique("shared")
    clock = ManualClock()
    budget = RetryBudget(ttl=10, min_retries_per_second=1, ratio=0.5, clock=clock)
    retries = [Retry(2, wait=0, budget=budget, name=name) for _ in range(3)]
    breakers = [
        CircuitBreaker(name, slow_call_duration=100, window=CountWindow(4), clock=clock)
        for _ in range(2)
    ]
    for seconds, breaker in zip((1, 3), breakers, strict=True):
        breaker.call(lambda s=seconds: clock.advance(s))
    found = points(reader, "resilient.circuit_breaker.call.duration", name)
    assert by("resilient.quantile", found) == {0.5: 1.0, 0.9: 3.0, 0.99: 3.0}
    assert len(found) == 3
    [(_, balance)] = points(reader, "resilient.retry.budget.balance", name)
    assert balance == budget.snapshot().balance  # one shared budget counted once
    assert len(retries) == 3


def test_duration_demand_switches_named_breakers_alive_and_created_later() -> None:
    # The switch a duration exporter turns (no exporter writes into a breaker's core).
    demand = DURATIONS
    clock = ManualClock()
    before = CircuitBreaker(unique("demand-before"), clock=clock)
    unnamed = CircuitBreaker(clock=clock)

    def quarter() -> None:
        clock.advance(0.25)

    def durations(breaker: CircuitBreaker) -> list[object]:
        with capture_events() as seen:
            breaker.call(quarter)
        return [getattr(e, "duration", "?") for e in seen]

    demand.want()
    demand.want()  # a second histogram
    try:
        after = CircuitBreaker(unique("demand-after"), clock=clock)
        assert durations(before) == durations(after) == [0.25]
        assert durations(unnamed) == [None]  # a histogram records named breakers only
        demand.release()
        assert durations(before) == [0.25]  # the other histogram still wants them
    finally:
        demand.release()
    assert not demand.wanted
    assert durations(before) == durations(after) == [None]
    with pytest.raises(RuntimeError, match="without a matching want"):
        demand.release()
