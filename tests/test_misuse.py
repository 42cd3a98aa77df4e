"""Plausible mistakes get a MisuseError (a TypeError) that says what to do instead."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
    CircuitState,
    CountWindow,
    Fallback,
    KeyedRateLimiter,
    MisuseError,
    RateLimiter,
    Retry,
    Timeout,
    compose,
)

POLICIES = [
    pytest.param(lambda: CircuitBreaker("b"), id="breaker"),
    pytest.param(lambda: Bulkhead(2), id="bulkhead"),
    pytest.param(lambda: Timeout(5), id="timeout"),
    pytest.param(lambda: Retry(2, wait=0), id="retry"),
    pytest.param(lambda: RateLimiter(1000), id="ratelimiter"),
    pytest.param(lambda: Fallback(lambda exc: "fb", on=KeyError), id="fallback"),
    pytest.param(lambda: compose(Retry(2, wait=0), CircuitBreaker(), Bulkhead(2)), id="compose"),
]


async def async_fn(x: int) -> int:
    await anyio.sleep(0)
    return x


def gen_fn() -> Iterator[int]:
    yield 1  # pragma: no cover - never started


def test_misuse_error_is_a_type_error() -> None:
    assert issubclass(MisuseError, TypeError)


@pytest.mark.parametrize("make", POLICIES)
def test_call_with_an_async_function_says_use_call_async(make: Any) -> None:
    with pytest.raises(MisuseError, match="call_async"):
        make().call(async_fn, 1)


@pytest.mark.parametrize("make", POLICIES)
def test_call_with_a_generator_function_is_refused_as_the_decorator_does(make: Any) -> None:
    with pytest.raises(MisuseError, match="generator"):
        make().call(gen_fn)


@pytest.mark.parametrize("make", POLICIES)
async def test_call_async_with_a_builtin_sync_function_says_use_call(make: Any) -> None:
    ran: list[int] = []
    with pytest.raises(MisuseError, match=r"policy\.call\(fn"):
        await make().call_async(ran.append, 1)  # a builtin, as time.sleep is
    assert ran == []  # refused before it ran (time.sleep would have blocked the loop)


@pytest.mark.parametrize("make", POLICIES)
async def test_call_async_with_a_sync_function_returning_a_value_says_use_call(
    make: Any,
) -> None:
    with pytest.raises(MisuseError, match=r"policy\.call\(fn"):
        await make().call_async(lambda: 42)


@pytest.mark.parametrize("make", POLICIES)
async def test_call_async_with_a_lambda_returning_a_coroutine_still_works(make: Any) -> None:
    assert await make().call_async(lambda: async_fn(3)) == 3


@pytest.mark.parametrize("make", POLICIES)
def test_sync_decorated_callable_returning_a_coroutine_is_refused(make: Any) -> None:
    # A lambda around an async function looks sync: the coroutine it returns would
    # otherwise run later, outside the policy (1 s under a Timeout(0.1)).
    guarded = make()(lambda: asyncio.sleep(1))
    with pytest.raises(MisuseError, match="async def"):
        guarded()
    with pytest.raises(MisuseError, match="async def"):
        make().call(lambda: asyncio.sleep(1))


@pytest.mark.parametrize("make", POLICIES)
def test_decorating_a_class_is_refused(make: Any) -> None:
    with pytest.raises(MisuseError, match="class"):

        @make()
        class Client:
            pass


@pytest.mark.parametrize(
    "policy", [CircuitBreaker, Bulkhead, Timeout, Retry, RateLimiter, KeyedRateLimiter]
)
def test_a_policy_used_as_a_decorator_without_parentheses(policy: Any) -> None:
    with pytest.raises(MisuseError, match=rf"@{policy.__name__}\(") as info:

        @policy
        def fn() -> None:
            pass  # pragma: no cover

    assert "parentheses" in str(info.value)


def test_call_through_a_class_is_still_allowed() -> None:
    # Constructing a client through a breaker is a legitimate call.
    class Client:
        def __init__(self, host: str) -> None:
            self.host = host

    assert CircuitBreaker().call(Client, "h").host == "h"


def _misuse_compositions() -> list[Any]:
    return [
        pytest.param(lambda: Retry(5, wait=0), id="retry"),
        pytest.param(lambda: Fallback(lambda exc: "stale"), id="fallback"),
        pytest.param(
            lambda: compose(Fallback(lambda exc: "stale"), Retry(3, wait=0), CircuitBreaker()),
            id="readme-shape",
        ),
    ]


@pytest.mark.parametrize("make", _misuse_compositions())
async def test_a_misuse_is_neither_retried_nor_replaced_by_a_fallback(make: Any) -> None:
    # A MisuseError reports a bug in the calling code, not a failure of the dependency:
    # running the function again or answering with a fallback would hide it.
    calls: list[int] = []

    def charge() -> str:
        calls.append(1)
        return "charged"

    with pytest.raises(MisuseError):
        await make().call_async(charge)
    assert len(calls) == 1
    guarded = make()(lambda: asyncio.sleep(1))
    with pytest.raises(MisuseError):
        guarded()


async def test_a_misuse_does_not_count_against_the_dependency() -> None:
    breaker = CircuitBreaker(window=CountWindow(2), minimum_calls=2)
    for _ in range(3):
        with pytest.raises(MisuseError):
            await breaker.call_async(lambda: "sync")
        with pytest.raises(MisuseError):
            breaker.call(lambda: asyncio.sleep(1))
    metrics = breaker.metrics()
    assert breaker.state is CircuitState.CLOSED
    assert metrics.total_failed_calls == 0
    assert metrics.total_ignored_calls == 6
