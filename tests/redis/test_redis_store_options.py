"""Per-policy store options: ``store.with_options(local_share=..., on_unavailable=...)``.

A view shares the store's connections, health and breakers' thread; only its two
options are its own. The outages here are a port nobody listens on (every connection
refused at once), so the local decisions are deterministic.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis_servers import free_port

import redis
from resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    KeyedRateLimiter,
    RateLimitedError,
    RateLimiter,
)
from resilient.redis import RedisStore
from resilient.redis._breaker_sync import BreakerSync
from resilient.testing import ManualClock


def dead_store(**options: Any) -> RedisStore:
    store = RedisStore(redis.Redis(port=free_port()), retry_interval=60, **options)
    store._breakers = BreakerSync(store)
    store._breakers.manual = True  # no thread: the test decides when to sync
    return store


def admitted(call: Any, times: int) -> int:
    count = 0
    for _ in range(times):
        try:
            call()
            count += 1
        except RateLimitedError:
            pass
    return count


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"local_share": 0}, ValueError, "local_share must be an int >= 1"),
        ({"local_share": "4"}, TypeError, "local_share must be an int >= 1"),
        ({"local_share": True}, TypeError, "local_share"),
        ({"on_unavailable": "fail"}, ValueError, "on_unavailable must be 'local' or 'reject'"),
    ],
)
def test_bad_options_are_refused_when_the_view_is_made(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        dead_store().with_options(**options)


def test_a_view_keeps_the_options_it_was_not_given_and_shares_the_health() -> None:
    store = dead_store(local_share=3, on_unavailable="reject")
    view = store.with_options(local_share=4)
    assert (view.local_share, view.on_unavailable) == (4, "reject")
    again = view.with_options(on_unavailable="local")
    assert (again.local_share, again.on_unavailable) == (4, "local")
    assert (store.local_share, store.on_unavailable) == (3, "reject")
    assert isinstance(view, RedisStore)
    assert "local_share=4" in repr(view)
    # One outage, seen through every view, counted once.
    limiter = RateLimiter(10, name="seen", store=again)
    limiter.call(int)
    assert not store.available
    assert view.metrics() == store.metrics()
    assert (store.metrics().errors, store.metrics().outages) == (1, 1)


def test_limiters_on_one_store_each_get_their_own_local_share() -> None:
    store = dead_store()
    clock = ManualClock()  # local decisions at one instant: the bursts are exact
    whole = RateLimiter(40, burst=40, name="whole", store=store, clock=clock)
    quarter = RateLimiter(
        40, burst=40, name="quarter", store=store.with_options(local_share=4), clock=clock
    )
    assert admitted(lambda: quarter.call(int), 20) == 10  # 40 / 4, while Redis is down
    assert admitted(lambda: whole.call(int), 50) == 40
    assert store.metrics().fallbacks == 70


def test_a_keyed_limiter_gets_its_own_local_share() -> None:
    store = dead_store()
    keyed = KeyedRateLimiter(
        10,
        burst=10,
        key=lambda client: client,
        name="per-client",
        store=store.with_options(local_share=2),
        clock=ManualClock(),
    )

    def client(name: str) -> str:
        return name

    assert admitted(lambda: keyed.call(client, "a"), 8) == 5
    assert admitted(lambda: keyed.call(client, "b"), 8) == 5


def test_one_limiter_rejects_while_another_decides_locally() -> None:
    store = dead_store()
    local = RateLimiter(10, name="local", store=store)
    strict = RateLimiter(10, name="strict", store=store.with_options(on_unavailable="reject"))
    assert local.call(lambda: "ok") == "ok"
    with pytest.raises(RateLimitedError, match="on_unavailable='reject'") as error:
        strict.call(lambda: "ok")
    assert error.value.retry_after == 60


def opened(store: RedisStore, name: str) -> CircuitBreaker:
    breaker = CircuitBreaker(
        name,
        window=CountWindow(4),
        minimum_calls=4,
        open_duration=1.0,
        half_open_calls=1,
        clock=ManualClock(),
        store=store,
    )
    for _ in range(4):
        with pytest.raises(ZeroDivisionError):
            breaker.call(lambda: 1 / 0)
    assert breaker.state is CircuitState.OPEN  # tripped locally: the store is out
    breaker._core._clock.advance(2)  # type: ignore[attr-defined]
    return breaker


def test_a_breaker_rejecting_in_an_outage_runs_no_local_trial() -> None:
    store = dead_store()
    store._failed(ConnectionError("down"), store.generation)
    local = opened(store, "local")
    strict = opened(store.with_options(on_unavailable="reject"), "strict")
    # "local": the trial runs here, and its round closes the breaker locally.
    assert local.call(lambda: "ok") == "ok"
    assert local.state is CircuitState.CLOSED
    # "reject": no trial while the store is out; refused, retry in retry_interval.
    with pytest.raises(CircuitOpenError) as error:
        strict.call(lambda: "ok")
    assert error.value.retry_after == 60
    assert strict.state is CircuitState.OPEN
    # Its closed path never asks the store: a closed breaker lets calls through.
    strict.reset()
    assert strict.call(lambda: "ok") == "ok"
