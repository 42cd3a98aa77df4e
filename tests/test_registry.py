"""The registry: create-or-get by name, shared defaults, plain-data config, snapshots."""

from __future__ import annotations

import json
import threading

import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitOpenError,
    CountWindow,
    RateLimiter,
    Registry,
    Retry,
    Timeout,
    TimeWindow,
    default_registry,
)
from resilient.testing import ManualClock


def test_create_or_get_by_name_with_defaults() -> None:
    registry = Registry(defaults={"circuit_breaker": {"minimum_calls": 2, "open_duration": 5}})
    breaker = registry.circuit_breaker("payments", window=CountWindow(2))
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.name == "payments"
    assert registry.circuit_breaker("payments") is breaker
    assert registry.get("payments") is breaker
    assert "payments" in registry
    assert "other" not in registry
    for _ in range(2):  # the defaults apply: two failures of two open it
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(lambda: None)
    assert info.value.retry_after == pytest.approx(5, abs=0.5)


def test_every_kind_from_plain_data() -> None:
    registry = Registry()
    registry.configure(
        {
            "payments": {"kind": "circuit_breaker", "window": {"seconds": 30, "buckets": 6}},
            "search": {"kind": "circuit_breaker", "window": {"count": 20}, "minimum_calls": 5},
            "pool": {"kind": "bulkhead", "max_concurrent": 4, "max_wait": 0.1},
            "deadline": {"kind": "timeout", "seconds": 2.5},
            "again": {"kind": "retry", "attempts": 4, "wait": 0.2},
            "limit": {"kind": "rate_limiter", "rate": 50, "per": 1, "burst": 10},
        }
    )
    assert list(registry) == ["again", "deadline", "limit", "payments", "pool", "search"]
    assert len(registry) == 6
    assert isinstance(registry.get("pool"), Bulkhead)
    assert isinstance(registry.get("deadline"), Timeout)
    assert isinstance(registry.get("again"), Retry)
    assert isinstance(registry.get("limit"), RateLimiter)
    assert registry.bulkhead("pool").max_concurrent == 4
    assert registry.timeout("deadline").seconds == 2.5
    assert registry.retry("again").attempts == 4
    assert registry.rate_limiter("limit").burst == 10
    assert registry.get("payments").name == "payments"
    window = registry.get("payments")._core._template  # type: ignore[attr-defined]
    assert isinstance(window, TimeWindow)
    assert (window.seconds, window.buckets) == (30.0, 6)


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (
            {"x": {"kind": "circuit_breaker", "failure_rate_threshold": 2}},
            ValueError,
            "failure_rate",
        ),
        ({"x": {"kind": "bulkhead", "max_concurrent": 0}}, ValueError, "max_concurrent"),
        ({"x": {"kind": "bulkhead"}}, TypeError, "max_concurrent"),
        ({"x": {"kind": "timeout", "seconds": -1}}, ValueError, "seconds"),
        ({"x": {"kind": "rate_limiter", "rate": 0}}, ValueError, "rate"),
        ({"x": {"kind": "circuit_breaker", "window": {"size": 3}}}, ValueError, "window"),
        ({"x": {"kind": "circuit_breaker", "nonsense": 1}}, TypeError, "nonsense"),
        ({"x": {"kind": "flux_capacitor"}}, ValueError, "kind must be one of"),
        ({"x": {"max_concurrent": 3}}, ValueError, "kind"),
    ],
)
def test_config_is_validated_by_the_constructors(config, error, match) -> None:
    with pytest.raises(error, match=match):
        Registry().configure(config)


def test_a_name_belongs_to_one_kind() -> None:
    registry = Registry()
    registry.bulkhead("shared", max_concurrent=2)
    with pytest.raises(ValueError, match="already a bulkhead"):
        registry.circuit_breaker("shared")
    with pytest.raises(TypeError, match="name"):
        registry.circuit_breaker("")
    with pytest.raises(KeyError):
        registry.get("missing")
    with pytest.raises(ValueError, match="kind must be one of"):
        Registry(defaults={"nope": {}})


def test_snapshot_is_plain_json_data() -> None:
    clock = ManualClock()
    registry = Registry()
    breaker = registry.circuit_breaker(
        "payments", window=CountWindow(2), minimum_calls=2, open_duration=30, clock=clock
    )
    registry.bulkhead("pool", max_concurrent=3)
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    snapshot = registry.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["payments"]["kind"] == "circuit_breaker"
    assert snapshot["payments"]["state"] == "open"
    assert snapshot["payments"]["failed_calls"] == 2
    assert snapshot["payments"]["not_permitted_calls"] == 1
    assert snapshot["payments"]["retry_after"] == 30.0
    assert snapshot["pool"] == {
        "kind": "bulkhead",
        "max_concurrent": 3,
        "in_flight": 0,
        "waiting": 0,
        "rejected": 0,
        "max_observed": 0,
        "admitted": 0,
    }


def test_concurrent_first_requests_make_one_policy() -> None:
    registry = Registry()
    start = threading.Barrier(16)
    got: list[CircuitBreaker] = []

    def ask() -> None:
        start.wait()
        got.append(registry.circuit_breaker("hot"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(breaker) for breaker in got}) == 1


def test_default_registry_exists() -> None:
    assert isinstance(default_registry, Registry)
    assert repr(Registry()) == "<Registry of 0 policies>"
