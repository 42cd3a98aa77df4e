"""Plausible mistakes get a MisuseError (a TypeError) that says what to do instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from resilient import (
    Bulkhead,
    CircuitBreaker,
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
    started = time.perf_counter()
    with pytest.raises(MisuseError, match=r"policy\.call\(fn"):
        await make().call_async(time.sleep, 0.5)
    assert time.perf_counter() - started < 0.4  # refused before it blocked the loop


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
