"""Cache: results per key for ``ttl``, bounded, stale values on failure (issue 19).

Time is a ``ManualClock``: entries age only when a test advances it.
"""

from __future__ import annotations

import contextvars
import datetime
import math
import threading
from typing import Any

import anyio
import pytest

import resilient
from resilient import (
    Cache,
    CacheStatus,
    CircuitBreaker,
    CircuitOpenError,
    Coalesce,
    CountWindow,
    StaleValueServed,
    Timeout,
    cache_status,
    compose,
)
from resilient.testing import ManualClock, capture_events


class Down(Exception):
    pass


class NotFound(Exception):
    pass


class Counter:
    """A function that counts its calls and fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing: BaseException | None = None

    def __call__(self, x: Any) -> Any:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return (x, self.calls)


def test_a_fresh_entry_answers_until_ttl_then_the_function_runs_again() -> None:
    clock = ManualClock()
    fn = Counter()
    get = Cache(ttl=10, clock=clock)(fn)
    assert get(1) == (1, 1)
    status = cache_status()
    assert status is not None
    assert (status.outcome, status.from_cache, status.age, status.key) == (
        "miss",
        False,
        0.0,
        (fn, (1,)),
    )
    clock.advance(9.999)
    assert get(1) == (1, 1)
    status = cache_status()
    assert status is not None
    assert (status.outcome, status.from_cache, status.stale) == ("hit", True, False)
    assert math.isclose(status.age, 9.999)
    clock.advance(0.001)  # exactly ttl: no longer fresh
    assert get(1) == (1, 2)
    assert get(2) == (2, 3)


def test_exceptions_are_not_cached() -> None:
    fn = Counter()
    get = Cache(ttl=10, clock=ManualClock())(fn)
    fn.failing = Down()
    with pytest.raises(Down):
        get(1)
    fn.failing = None
    assert get(1) == (1, 2)


def test_a_failure_is_answered_with_a_stale_value_within_stale_if_error() -> None:
    clock = ManualClock()
    fn = Counter()
    cache = Cache(ttl=10, stale_if_error=30, clock=clock, name="quotes")
    get = cache(fn)
    assert get("a") == ("a", 1)
    clock.advance(40)  # exactly ttl + stale_if_error: still servable
    fn.failing = Down("backend")
    with capture_events() as events:
        assert get("a") == ("a", 1)
    status = cache_status()
    assert status is not None
    assert (status.outcome, status.stale, status.age, status.policy) == (
        "stale",
        True,
        40.0,
        "quotes",
    )
    assert status.error is fn.failing
    [event] = [e for e in events if isinstance(e, StaleValueServed)]
    assert (event.policy, event.kind, event.age, event.exception) == (
        "quotes",
        "cache",
        40.0,
        fn.failing,
    )
    clock.advance(0.001)  # past it: the failure stands
    with pytest.raises(Down):
        get("a")
    m = cache.metrics()
    assert (m.hits, m.misses, m.stale_served, m.stores) == (0, 3, 1, 1)


def test_a_success_after_expiry_replaces_the_stale_entry() -> None:
    clock = ManualClock()
    fn = Counter()
    get = Cache(ttl=1, stale_if_error=100, clock=clock)(fn)
    get(1)
    clock.advance(2)
    assert get(1) == (1, 2)  # expired: the function ran, and its result is stored
    fn.failing = Down()
    clock.advance(2)
    assert get(1) == (1, 2)  # the newer value stands in


def test_without_stale_if_error_a_failure_is_raised() -> None:
    clock = ManualClock()
    fn = Counter()
    get = Cache(ttl=1, clock=clock)(fn)
    get(1)
    clock.advance(1)
    fn.failing = Down()
    with pytest.raises(Down):
        get(1)


def test_stale_on_chooses_the_failures_a_stale_value_may_answer() -> None:
    clock = ManualClock()
    fn = Counter()
    get = Cache(ttl=1, stale_if_error=10, stale_on=Down, clock=clock)(fn)
    get(1)
    clock.advance(2)
    fn.failing = NotFound()
    with pytest.raises(NotFound):
        get(1)
    fn.failing = Down()
    assert get(1) == (1, 1)


def test_a_stale_on_predicate_that_raises_lets_the_failure_stand() -> None:
    clock = ManualClock()
    fn = Counter()

    def broken(exc: BaseException) -> bool:
        raise RuntimeError("bug in the predicate")

    get = Cache(ttl=1, stale_if_error=10, stale_on=broken, clock=clock)(fn)
    get(1)
    clock.advance(2)
    fn.failing = Down()
    with pytest.raises(Down):
        get(1)


def test_interrupts_are_never_answered_with_a_stale_value() -> None:
    clock = ManualClock()
    fn = Counter()
    get = Cache(ttl=1, stale_if_error=10, clock=clock)(fn)
    get(1)
    clock.advance(2)
    fn.failing = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        get(1)


def test_cache_result_chooses_what_is_stored() -> None:
    calls = []

    def fn(x: int) -> int | None:
        calls.append(x)
        return None if x < 0 else x

    get = Cache(ttl=10, cache_result=lambda value: value is not None, clock=ManualClock())(fn)
    assert (get(-1), get(-1), get(1), get(1)) == (None, None, 1, 1)
    assert calls == [-1, -1, 1]


def test_least_recently_used_entries_go_first() -> None:
    fn = Counter()
    cache = Cache(ttl=100, max_entries=2, clock=ManualClock())
    get = cache(fn)
    get("a")
    get("b")
    get("a")  # a is now the most recently used
    get("c")  # drops b
    assert fn.calls == 3
    get("a")
    assert fn.calls == 3
    get("b")
    assert fn.calls == 4
    m = cache.metrics()
    assert (m.entries, m.max_entries, m.evictions) == (2, 2, 2)


def test_invalidate_and_clear() -> None:
    fn = Counter()
    cache = Cache(ttl=100, key=lambda x: x, clock=ManualClock())
    get = cache(fn)
    get(1)
    get(2)
    assert cache.invalidate(1) is True
    assert cache.invalidate(1) is False
    get(1)
    assert fn.calls == 3
    cache.clear()
    get(2)
    assert fn.calls == 4
    assert cache.metrics().entries == 1


def test_the_default_key_is_the_function_and_its_arguments() -> None:
    cache = Cache(ttl=100, clock=ManualClock())
    a = cache(lambda x, **kw: ("a", x, kw))
    b = cache(lambda x, **kw: ("b", x, kw))
    assert a(1, p=1, q=2) == ("a", 1, {"p": 1, "q": 2})
    assert b(1, p=1, q=2)[0] == "b"
    assert a(1, q=2, p=1) == ("a", 1, {"p": 1, "q": 2})
    assert cache.metrics().hits == 1
    with pytest.raises(
        TypeError, match=r"cache: the default key .* positional argument 0 \(list\)"
    ):
        a([1])


def test_a_key_function_that_raises_stores_nothing() -> None:
    cache = Cache(ttl=100, key=lambda x: 1 / x, clock=ManualClock())
    get = cache(lambda x: x)
    with pytest.raises(ZeroDivisionError):
        get(0)
    assert cache.metrics().entries == 0


def test_the_status_is_per_thread() -> None:
    get = Cache(ttl=100, clock=ManualClock())(lambda x: x)
    get(1)
    seen: list[CacheStatus | None] = []
    thread = threading.Thread(target=lambda: seen.append(cache_status()))
    thread.start()
    thread.join()
    assert seen == [None]
    get(1)
    status = cache_status()
    assert status is not None
    assert status.outcome == "hit"
    assert contextvars.copy_context().run(cache_status) == status


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ttl": 0}, ValueError, "ttl must be > 0"),
        ({"ttl": -1}, ValueError, "ttl must be > 0"),
        ({"ttl": math.nan}, ValueError, "ttl must be a finite number"),
        ({"ttl": True}, TypeError, "ttl must be"),
        ({"ttl": "10"}, TypeError, "ttl must be a number of seconds"),
        ({"ttl": 2e9}, ValueError, "ttl must be"),
        ({"ttl": 1, "stale_if_error": -1}, ValueError, "stale_if_error must be >= 0"),
        ({"ttl": 1, "stale_if_error": math.inf}, ValueError, "stale_if_error must be a finite"),
        ({"ttl": 1, "max_entries": 0}, ValueError, "max_entries must be an int >= 1"),
        ({"ttl": 1, "max_entries": 10**8}, ValueError, "max_entries must be an int >= 1"),
        ({"ttl": 1, "max_entries": 1.5}, TypeError, "max_entries must be an int"),
        ({"ttl": 1, "key": 3}, TypeError, "key must be None or a callable"),
        ({"ttl": 1, "stale_on": KeyboardInterrupt}, ValueError, "stale_on must name Exception"),
        ({"ttl": 1, "stale_on": "Down"}, TypeError, "stale_on must be"),
        ({"ttl": 1, "cache_result": 1}, TypeError, "cache_result"),
        ({"ttl": 1, "clock": object()}, TypeError, "clock"),
        ({"ttl": 1, "name": 1}, TypeError, "name must be a str"),
    ],
)
def test_construction_is_checked(options: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Cache(**options)


def test_durations_may_be_timedeltas() -> None:
    cache = Cache(ttl=datetime.timedelta(minutes=1), stale_if_error=datetime.timedelta(hours=1))
    assert (cache.ttl, cache.stale_if_error) == (60.0, 3600.0)
    assert "ttl=60" in repr(cache)
    with pytest.raises(TypeError, match="needs the call's arguments"), cache:
        pass


# -- async -----------------------------------------------------------------------------


async def test_async_hits_misses_and_stale_values() -> None:
    clock = ManualClock()
    calls = []
    failing = False

    cache = Cache(ttl=10, stale_if_error=10, clock=clock)

    @cache
    async def get(x: int) -> int:
        calls.append(x)
        await anyio.lowlevel.checkpoint()
        if failing:
            raise Down
        return x * 10

    assert await get(1) == 10
    assert await get(1) == 10
    assert len(calls) == 1
    status = cache_status()
    assert status is not None
    assert status.outcome == "hit"
    clock.advance(15)
    failing = True
    assert await get(1) == 10
    status = cache_status()
    assert status is not None
    assert status.stale
    assert isinstance(status.error, Down)


async def test_a_cancelled_call_stores_nothing_and_is_not_answered_stale() -> None:
    clock = ManualClock()
    started = anyio.Event()
    cache = Cache(ttl=1, stale_if_error=100, clock=clock)
    block = False

    @cache
    async def get() -> str:
        if block:
            started.set()
            await anyio.sleep_forever()
        return "value"

    assert await get() == "value"
    clock.advance(2)
    block = True
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            await started.wait()
            scope.cancel()
    m = cache.metrics()
    assert (m.stores, m.stale_served) == (1, 0)


# -- composition (issue 19: the composition named in the issue, sync and async) ---------


def _composition(clock: ManualClock) -> tuple[Any, Cache, Coalesce, CircuitBreaker]:
    cache = Cache(ttl=10, stale_if_error=60, clock=clock, name="quotes")
    coalesce = Coalesce(name="quotes")
    breaker = CircuitBreaker(
        "quotes", window=CountWindow(2), minimum_calls=2, open_duration=30, clock=clock
    )
    return compose(cache, coalesce, breaker, Timeout(5)), cache, coalesce, breaker


def test_the_issue_composition_sync() -> None:
    clock = ManualClock()
    policy, cache, coalesce, breaker = _composition(clock)
    fn = Counter()
    get = policy(fn)
    assert get("AAPL") == ("AAPL", 1)
    assert get("AAPL") == ("AAPL", 1)  # cached: neither coalesce nor breaker ran
    assert (coalesce.metrics().leaders, breaker.metrics().calls) == (1, 1)
    clock.advance(11)
    fn.failing = Down()
    assert get("AAPL") == ("AAPL", 1)  # stale, the failure recorded by the breaker
    assert breaker.state.value == "open"  # one failure in two calls
    with pytest.raises(CircuitOpenError):
        get("MSFT")  # nothing stale to answer with
    assert get("AAPL") == ("AAPL", 1)  # the open circuit is answered with the stale value
    status = cache_status()
    assert status is not None
    assert status.stale
    assert isinstance(status.error, CircuitOpenError)
    assert cache.metrics().stale_served == 2


async def test_the_issue_composition_async() -> None:
    clock = ManualClock()
    policy, cache, coalesce, breaker = _composition(clock)
    calls = []
    failing = False
    release = anyio.Event()

    @policy
    async def get(symbol: str) -> str:
        calls.append(symbol)
        await release.wait()
        if failing:
            raise Down
        return f"{symbol}:{len(calls)}"

    results: list[str] = []

    async def one() -> None:
        results.append(await get("AAPL"))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
        while coalesce.metrics().followers < 19:
            await anyio.lowlevel.checkpoint()
        release.set()
    assert results == ["AAPL:1"] * 20
    assert calls == ["AAPL"]
    assert await get("AAPL") == "AAPL:1"
    status = cache_status()
    assert status is not None
    assert status.outcome == "hit"
    clock.advance(11)
    failing = True
    assert await get("AAPL") == "AAPL:1"
    status = cache_status()
    assert status is not None
    assert status.stale
    assert breaker.metrics().failed_calls == 1
    assert cache.metrics().misses == 21  # 20 concurrent misses, one call; then one more


def test_the_public_names() -> None:
    assert resilient.cache_status is cache_status
    assert repr(CacheStatus("p", "stale", "k", 1.0)) == (
        "CacheStatus(policy='p', outcome='stale', age=1.0, error=None)"
    )


def test_a_stale_value_that_expired_during_the_call_is_not_served() -> None:
    clock = ManualClock()
    cache = Cache(ttl=1, stale_if_error=5, clock=clock)
    slow = False

    @cache
    def get() -> str:
        if slow:
            clock.advance(10)  # the call outlived the stale value's grace
            raise Down
        return "value"

    get()
    clock.advance(2)
    slow = True
    with pytest.raises(Down):
        get()
    assert cache.metrics().stale_served == 0


async def test_async_with_is_refused() -> None:
    with pytest.raises(TypeError, match="needs the call's arguments"):
        async with Cache(ttl=1):
            pass
    with pytest.raises(TypeError, match="needs the call's arguments"):
        async with Coalesce():
            pass
