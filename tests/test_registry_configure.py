"""Registry.configure(): every kind from plain data, updates in place, bad files change nothing."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    Composition,
    CountWindow,
    Fallback,
    KeyedRateLimiter,
    RateLimitedError,
    Reconfigured,
    Registry,
    TimeWindow,
)
from resilient._policies._registry_config import ConfigurationError, resolve
from resilient.testing import ManualClock, capture_events


def cached_quote(exc: BaseException) -> str:
    """A fallback handler this test module names by its dotted name."""
    return "cached"


def user_of(user: str) -> str:
    return user


CONFIG: dict[str, Any] = {
    "payments": {
        "kind": "circuit_breaker",
        "failure_rate_threshold": 0.5,
        "window": {"type": "count", "size": 10},
        "minimum_calls": 4,
        "open_duration": 30,
        "record": ["ConnectionError", "TimeoutError"],
    },
    "payments-timeout": {"kind": "timeout", "seconds": 2.0},
    "payments-pool": {"kind": "bulkhead", "max_concurrent": 4, "max_wait": 0.1},
    "payments-retry": {"kind": "retry", "attempts": 3, "wait": 0.0},
    "payments-limit": {"kind": "rate_limiter", "rate": 50, "burst": 10},
    "per-user": {"kind": "keyed_rate_limiter", "rate": 5, "key": f"{__name__}:user_of"},
    "quotes-fallback": {
        "kind": "fallback",
        "handler": f"{__name__}:cached_quote",
        "on": "Exception",
    },
    "payments-all": {
        "kind": "compose",
        "policies": ["quotes-fallback", "payments-retry", "payments", "payments-timeout"],
    },
}


def fresh_config() -> dict[str, Any]:
    return json.loads(json.dumps(CONFIG))  # a deep copy, as a file would load


def test_every_kind_and_compositions_from_plain_data() -> None:
    registry = Registry()
    registry.configure(fresh_config())
    assert isinstance(registry.get("payments"), CircuitBreaker)
    assert isinstance(registry.get("per-user"), KeyedRateLimiter)
    fallback = registry.get("quotes-fallback")
    assert isinstance(fallback, Fallback)
    composition = registry.get("payments-all")
    assert isinstance(composition, Composition)
    assert [p.name for p in composition.policies] == [  # type: ignore[attr-defined]
        "quotes-fallback",
        "payments-retry",
        "payments",
        "payments-timeout",
    ]
    assert composition.call(lambda: 1 / 0) == "cached"  # type: ignore[arg-type]
    breaker = registry.circuit_breaker("payments")
    assert breaker._unpack_options(breaker._config)["record"] == (ConnectionError, TimeoutError)
    with pytest.raises(ConnectionError):
        breaker.call(_raise, ConnectionError)
    limited = registry.keyed_rate_limiter("per-user")(lambda user: user)
    assert [limited("a") for _ in range(5)] == ["a"] * 5
    with pytest.raises(RateLimitedError):
        limited("a")
    json.dumps(registry.snapshot())


def _raise(kind: type[BaseException]) -> None:
    raise kind


def test_an_update_reconfigures_in_place_keeping_state() -> None:
    registry = Registry()
    registry.configure(fresh_config())
    breaker = registry.circuit_breaker("payments")
    pool = registry.bulkhead("payments-pool")
    for _ in range(3):
        breaker.call(lambda: None)
    with pytest.raises(ConnectionError):
        breaker.call(_raise, ConnectionError)
    config = fresh_config()
    config["payments"]["failure_rate_threshold"] = 0.2
    config["payments-pool"]["max_concurrent"] = 8
    with capture_events() as events:
        registry.configure(config)
    assert registry.get("payments") is breaker
    assert registry.get("payments-pool") is pool
    changes = {e.policy: dict(e.changes) for e in events if isinstance(e, Reconfigured)}
    assert changes == {
        "payments": {"failure_rate_threshold": (0.5, 0.2)},
        "payments-pool": {"max_concurrent": (4, 8)},
    }
    assert breaker.state is CircuitState.OPEN  # 1 of 4 >= 0.2, from the kept window
    assert pool.max_concurrent == 8
    with capture_events() as again:
        registry.configure(config)  # the same file again: nothing changes
    assert again == []


def test_an_option_left_out_goes_back_to_its_default() -> None:
    registry = Registry(defaults={"bulkhead": {"max_wait": 0.5}})
    registry.configure({"pool": {"kind": "bulkhead", "max_concurrent": 2, "max_wait": 1.0}})
    registry.configure({"pool": {"kind": "bulkhead", "max_concurrent": 2}})
    assert registry.bulkhead("pool").max_wait == 0.5  # the registry's default
    registry.configure({"b": {"kind": "circuit_breaker", "minimum_calls": 5}})
    registry.configure({"b": {"kind": "circuit_breaker"}})
    assert registry.circuit_breaker("b")._core._minimum_calls == 100


def test_a_bad_file_changes_nothing_and_names_every_wrong_key() -> None:
    registry = Registry()
    registry.configure(fresh_config())
    breaker = registry.circuit_breaker("payments")
    before = (breaker._config, registry.snapshot(), sorted(registry))
    bad = fresh_config()
    bad["payments"]["failure_rate_threshold"] = 0.1  # fine on its own
    bad["payments-pool"]["max_concurrent"] = 0
    bad["payments-timeout"]["kind"] = "retry"
    bad["quotes-fallback"]["handler"] = "no_such_module_here:handler"
    bad["new-one"] = {"kind": "bulkhead", "max_concurrent": 2}  # fine, but not made
    bad["bad-window"] = {"kind": "circuit_breaker", "window": {"type": "count"}}
    bad["nowhere"] = {"kind": "compose", "policies": ["payments", "missing"]}
    bad["no-kind"] = {"max_concurrent": 1}
    with capture_events() as events, pytest.raises(ConfigurationError) as info:
        registry.configure(bad)
    error = info.value
    assert isinstance(error, ValueError)
    assert isinstance(error, TypeError)
    assert sorted(error.errors) == [
        "config['bad-window']['window']",
        "config['no-kind']",
        "config['nowhere']['policies']",
        "config['payments-pool']",
        "config['payments-timeout']['kind']",
        "config['quotes-fallback']['handler']",
    ]
    message = str(error)
    assert "max_concurrent must be" in message
    assert "'missing' is neither in this configuration nor in the registry" in message
    assert "its kind cannot change" in message
    assert "nothing changed" in message
    assert events == []
    assert (breaker._config, registry.snapshot(), sorted(registry)) == before


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"kind": "compose", "policies": "payments"}, "non-empty list"),
        ({"kind": "compose", "policies": ["payments"], "extra": 1}, "only 'policies'"),
        ({"kind": "fallback"}, 'needs the option "handler"'),
        ({"kind": "keyed_rate_limiter", "rate": 1}, "key"),
        ({"kind": "circuit_breaker", "record": "NoSuchBuiltin"}, "no builtin"),
    ],
)
def test_bad_entries(entry: dict[str, Any], match: str) -> None:
    registry = Registry()
    registry.configure({"payments": {"kind": "circuit_breaker"}})
    with pytest.raises(ConfigurationError, match=match):
        registry.configure({"x": entry})
    assert sorted(registry) == ["payments"]


def test_a_composition_cannot_change_its_policies() -> None:
    registry = Registry()
    registry.configure(fresh_config())
    config = fresh_config()
    registry.configure(config)  # the same list: fine
    config["payments-all"]["policies"] = ["payments", "payments-timeout"]
    with pytest.raises(ConfigurationError, match="cannot change at run time"):
        registry.configure(config)


def test_dotted_names() -> None:
    assert resolve(f"{__name__}:cached_quote") is cached_quote
    assert resolve(f"{__name__}.cached_quote") is cached_quote
    assert resolve("TimeoutError") is TimeoutError
    assert resolve("resilient.CountWindow") is CountWindow
    with pytest.raises(ValueError, match="cannot import"):
        resolve("nowhere_at_all.thing")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib came with Python 3.11")
def test_a_toml_file() -> None:
    import tomllib  # noqa: PLC0415

    text = f"""
[payments]
kind = "circuit_breaker"
failure_rate_threshold = 0.5
minimum_calls = 20
open_duration = 30
window = {{ type = "time", seconds = 60 }}
record = ["ConnectionError", "TimeoutError"]

[payments-timeout]
kind = "timeout"
seconds = 2.5

[payments-pool]
kind = "bulkhead"
max_concurrent = 20
max_wait = 0.05

[quotes-fallback]
kind = "fallback"
handler = "{__name__}:cached_quote"

[payments-all]
kind = "compose"
policies = ["quotes-fallback", "payments", "payments-timeout", "payments-pool"]
"""
    registry = Registry()
    registry.configure(tomllib.loads(text))
    window = registry.circuit_breaker("payments")._core._template
    assert isinstance(window, TimeWindow)
    assert window.seconds == 60
    assert isinstance(registry.get("payments-pool"), Bulkhead)
    assert registry.get("payments-all").call(lambda: 1 / 0) == "cached"  # type: ignore[arg-type]


def test_a_file_with_a_cache_and_a_coalesce_reloads_and_reconfigures_the_cache() -> None:
    clock = ManualClock()
    registry = Registry(defaults={"cache": {"clock": clock}})
    config = {
        "quotes-cache": {"kind": "cache", "ttl": 60, "stale_if_error": 30, "max_entries": 3},
        "quotes-herd": {"kind": "coalesce"},
    }
    registry.configure(json.loads(json.dumps(config)))
    cache = registry.cache("quotes-cache")
    herd = registry.coalesce("quotes-herd")
    fetch = cache(lambda n: n * 10)
    assert [fetch(n) for n in (1, 2, 3)] == [10, 20, 30]
    with capture_events() as same:
        registry.configure(json.loads(json.dumps(config)))  # a reload of the same file
    assert [e for e in same if isinstance(e, Reconfigured)] == []
    config["quotes-cache"] = {"kind": "cache", "ttl": 5, "stale_if_error": 30, "max_entries": 2}
    with capture_events() as events:
        registry.configure(config)
    assert registry.get("quotes-cache") is cache
    assert registry.get("quotes-herd") is herd
    changes = [dict(e.changes) for e in events if isinstance(e, Reconfigured)]
    assert changes == [{"ttl": (60, 5), "max_entries": (3, 2)}]
    assert cache.metrics().entries == 2  # the least recently used entry went at once
    clock.advance(6)  # past the new ttl: the kept entries are no longer fresh
    hits = cache.metrics().hits
    assert fetch(3) == 30
    assert cache.metrics().hits == hits


def test_a_coalesce_key_cannot_be_reconfigured() -> None:
    registry = Registry()
    registry.configure({"herd": {"kind": "coalesce"}})
    with pytest.raises(TypeError, match="'key' cannot be changed at run time"):
        registry.coalesce("herd").reconfigure(key=lambda *a: a)
