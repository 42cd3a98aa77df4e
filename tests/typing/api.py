"""Type tests: checked by mypy (pyproject's [tool.mypy] files) and pyright (.ci/run), never run."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from resilient import CircuitBreaker, CircuitBreakerMetrics, CircuitState, CountWindow, TimeWindow
from resilient.redis import RedisStore

breaker = CircuitBreaker("typed", window=CountWindow(10), open_duration=lambda n: 2.0**n)
CircuitBreaker(
    window=TimeWindow(60), record=(ValueError, KeyError), ignore=lambda e: isinstance(e, OSError)
)


@breaker
def sync_fn(a: int, *, b: str = "x") -> list[str]:
    return [b] * a


@breaker
async def async_fn(a: int, b: float = 1.0) -> float:
    return a * b


assert_type(sync_fn(1, b="y"), list[str])
_coro = async_fn(2)
# mypy sees Coroutine, pyright the CoroutineType an `async def` returns: both assign.
_checked: Coroutine[Any, Any, float] = _coro
_checked.close()
assert_type(breaker.call(sync_fn, 3, b="z"), list[str])
assert_type(breaker.call(lambda: 1), int)
assert_type(breaker.state, CircuitState)
assert_type(breaker.metrics(), CircuitBreakerMetrics)
assert_type(breaker.retry_after, float | None)


async def use_async() -> None:
    assert_type(await async_fn(1), float)
    assert_type(await breaker.call_async(async_fn, 1, b=2.0), float)


class Service:
    @breaker
    def method(self, x: int) -> str:
        return str(x)


assert_type(Service().method(1), str)

sync_fn("not an int")  # type: ignore[arg-type]
sync_fn(1, c=2)  # type: ignore[call-arg]


# -- every policy, and compositions, keep signatures the same way ------------------------

from resilient import (  # noqa: E402
    Bulkhead,
    DecorrelatedJitter,
    Fallback,
    KeyedRateLimiter,
    RateLimiter,
    Retry,
    RetryBudget,
    Timeout,
    compose,
)

bulkhead = Bulkhead(4, max_wait=0.1, fair=False)
timeout = Timeout(1.5)
fallback = Fallback(lambda exc: list[str]())
retry = Retry(3, wait=DecorrelatedJitter(0.1), budget=RetryBudget())
limiter = RateLimiter(100, per=1.0, burst=10)
keyed = KeyedRateLimiter(10, key=lambda user, *args, **kwargs: user)
pipeline = compose(fallback, retry, breaker, limiter, timeout, bulkhead)


@pipeline
def composed(a: int, *, b: str = "x") -> list[str]:
    return [b] * a


@pipeline
async def composed_async(a: int) -> bytes:
    return b"x" * a


@keyed
def per_user(user: str, amount: float) -> float:
    return amount


assert_type(composed(2, b="y"), list[str])
assert_type(per_user("u", 1.0), float)
assert_type(bulkhead.call(composed, 1), list[str])
assert_type(timeout(sync_fn)(1), list[str])


async def use_composed() -> None:
    assert_type(await composed_async(3), bytes | list[str])  # the fallback's value
    assert_type(await retry.call_async(async_fn, 1), float)
    async with bulkhead:
        pass
    async with timeout:
        pass
    with breaker:
        pass


composed("2")  # type: ignore[arg-type]


# -- the ASGI middleware ----------------------------------------------------------------

from starlette.applications import Starlette  # noqa: E402

from resilient.asgi import (  # noqa: E402
    ASGIApp,
    Receive,
    ResilienceMiddleware,
    Route,
    Scope,
    Send,
    client_ip,
    header_key,
    timeout_header,
)


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})


guarded_app: ASGIApp = ResilienceMiddleware(
    raw_app,
    pipeline,
    routes=[Route("/health", None), Route("/users/{id}", bulkhead, methods=["GET"])],
    key=client_ip,
    per_key=lambda key: RateLimiter(10),
    failure_status=lambda status: status >= 500,
)
ResilienceMiddleware(
    raw_app,
    routes={"/search": timeout},
    key=header_key("x-api-key"),
    per_key=lambda key: Bulkhead(2),
)
assert_type(timeout_header(), dict[str, str])
Starlette().add_middleware(ResilienceMiddleware, policy=bulkhead, timeout_body=True)
ResilienceMiddleware(raw_app, "bulkhead")  # type: ignore[arg-type]


def _stores(client: Any) -> None:
    # A policy's store= takes a shared store, and nothing else.
    store = RedisStore(client)
    RateLimiter(10, name="shared", store=store)
    KeyedRateLimiter(10, key=lambda user: user, name="shared-keyed", store=store)
    CircuitBreaker("shared-breaker", store=store)
    RateLimiter(10, name="wrong", store="redis://localhost")  # type: ignore[arg-type]


# -- issue 17: adaptive throttling --------------------------------------------------------
def _throttles() -> None:
    import random  # noqa: PLC0415

    from resilient import AdaptiveThrottle, AdaptiveThrottleMetrics  # noqa: PLC0415

    throttle = AdaptiveThrottle(
        "search",
        k=1.5,
        window=60.0,
        record=(ValueError,),
        record_result=lambda status: status == 503,
        random=random.Random(1),
    )

    @throttle
    def fetch(page: int) -> str:
        return str(page)

    assert_type(fetch(1), str)
    assert_type(throttle.call(sync_fn, 1), list[str])
    assert_type(throttle.metrics(), AdaptiveThrottleMetrics)
    assert_type(throttle.rejection_probability, float)
    assert_type(compose(throttle, bulkhead)(fetch)(2), str)
    AdaptiveThrottle(k="2")  # type: ignore[arg-type]


# -- issue 19: reconfiguration ----------------------------------------------------------
from resilient import Bulkhead as _Bulkhead  # noqa: E402
from resilient import Reconfigured, Registry  # noqa: E402


def _reconfigure(event: Reconfigured) -> None:
    assert_type(breaker.reconfigure(failure_rate_threshold=0.3, window=CountWindow(50)), bool)
    assert_type(_Bulkhead(4).reconfigure(max_concurrent=8), bool)
    assert_type(Registry().configure({"x": {"kind": "bulkhead", "max_concurrent": 2}}), None)
    assert_type(event.options, tuple[str, ...])
