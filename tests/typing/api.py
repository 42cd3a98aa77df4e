"""Type tests: checked by mypy (see pyproject's [tool.mypy] files), never run."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from resilient import CircuitBreaker, CircuitBreakerMetrics, CircuitState, CountWindow, TimeWindow

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
_checked: Coroutine[Any, Any, float] = assert_type(_coro, Coroutine[Any, Any, float])
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
