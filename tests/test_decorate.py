"""One breaker decorates every kind of callable, sync and async, keeping its identity."""

from __future__ import annotations

import functools
import inspect

import anyio
import pytest

from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow
from resilient.testing import ManualClock


def tripped_breaker() -> CircuitBreaker:
    breaker = CircuitBreaker("d", clock=ManualClock())
    breaker.force_open()
    return breaker


def test_sync_function_keeps_name_doc_signature_and_wrapped() -> None:
    breaker = CircuitBreaker()

    def add(a: int, b: int = 2) -> int:
        """Add two numbers."""
        return a + b

    guarded = breaker(add)
    assert guarded(1) == 3
    assert guarded(1, b=5) == 6
    assert guarded.__name__ == "add"
    assert guarded.__doc__ == "Add two numbers."
    assert guarded.__wrapped__ is add  # type: ignore[attr-defined]
    assert inspect.signature(guarded) == inspect.signature(add)
    assert not inspect.iscoroutinefunction(guarded)
    assert guarded.__resilient_policy__ is breaker  # type: ignore[attr-defined]


async def test_async_function_is_guarded_and_stays_a_coroutine_function() -> None:
    breaker = CircuitBreaker()

    async def fetch(x: int) -> int:
        await anyio.sleep(0)
        return x * 2

    guarded = breaker(fetch)
    assert inspect.iscoroutinefunction(guarded)
    assert await guarded(21) == 42
    assert breaker.metrics().calls == 1
    breaker.force_open()
    with pytest.raises(CircuitOpenError):
        await guarded(1)


async def test_async_failures_are_counted() -> None:
    breaker = CircuitBreaker(window=CountWindow(2), minimum_calls=2)

    @breaker
    async def broken() -> None:
        raise ConnectionError

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await broken()
    assert breaker.state is CircuitState.OPEN


async def test_call_async_and_call() -> None:
    breaker = CircuitBreaker()

    async def double(x: int, *, times: int = 2) -> int:
        return x * times

    assert await breaker.call_async(double, 4, times=3) == 12
    assert breaker.call(lambda a, b: a - b, 5, b=1) == 4
    assert breaker.metrics().calls == 2


async def test_cancelled_async_call_is_not_a_failure() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(window=CountWindow(2), minimum_calls=1, clock=clock)

    @breaker
    async def hangs() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01):
        await hangs()
    assert breaker.metrics().calls == 0
    assert breaker.state is CircuitState.CLOSED


class Service:
    breaker = CircuitBreaker("svc")

    def __init__(self) -> None:
        self.factor = 3

    @breaker
    def method(self, x: int) -> int:
        return x * self.factor

    @breaker
    async def amethod(self, x: int) -> int:
        return x + self.factor

    @classmethod
    @breaker
    def cls_inner(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"

    @breaker  # type: ignore[arg-type]
    @classmethod
    def cls_outer(cls, x: int) -> str:
        return f"{cls.__name__}:{x}"

    @staticmethod
    @breaker
    def static_inner(x: int) -> int:
        return -x

    @breaker  # type: ignore[arg-type]
    @staticmethod
    def static_outer(x: int) -> int:
        return -x


async def test_methods_classmethods_and_staticmethods() -> None:
    Service.breaker.reset()
    service = Service()
    assert service.method(2) == 6
    assert await service.amethod(2) == 5
    assert Service.cls_inner(1) == "Service:1"
    assert Service.cls_outer(1) == "Service:1"
    assert service.cls_outer(2) == "Service:2"
    assert Service.static_inner(4) == -4
    assert Service.static_outer(4) == -4
    assert service.static_outer(5) == -5
    assert Service.breaker.metrics().calls == 8
    assert isinstance(Service.__dict__["cls_outer"], classmethod)
    assert isinstance(Service.__dict__["static_outer"], staticmethod)
    Service.breaker.force_open()
    for call in (
        lambda: service.method(1),
        lambda: Service.cls_outer(1),
        lambda: service.static_outer(1),
    ):
        with pytest.raises(CircuitOpenError):
            call()
    Service.breaker.reset()


async def test_partial_of_async_function_is_detected() -> None:
    breaker = tripped_breaker()

    async def fn(a: int, b: int) -> int:
        return a + b

    guarded = breaker(functools.partial(fn, 1))
    assert inspect.iscoroutinefunction(guarded)
    breaker.reset()
    assert await guarded(2) == 3


class Multiplier:
    def __init__(self, k: int) -> None:
        self.k = k

    def __call__(self, x: int) -> int:
        return x * self.k


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        return x + 100


async def test_callable_objects_keep_their_identity() -> None:
    breaker = CircuitBreaker()
    times3 = breaker(Multiplier(3))
    assert times3(2) == 6
    assert isinstance(times3, Multiplier)
    assert times3.k == 3
    aplus = breaker(AsyncCallable())
    assert await aplus(1) == 101
    assert breaker.metrics().calls == 2


def test_builtin_function() -> None:
    breaker = CircuitBreaker()
    guarded_len = breaker(len)
    assert guarded_len([1, 2]) == 2
    assert guarded_len.__name__ == "len"


def test_generator_functions_are_refused() -> None:
    breaker = CircuitBreaker("gen")

    def gen():
        yield 1

    async def agen():
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        breaker(gen)
    with pytest.raises(TypeError, match="generator function"):
        breaker(agen)


def test_non_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="can only decorate a callable"):
        CircuitBreaker()(42)  # type: ignore[arg-type]


def test_exception_traceback_passes_through_unchanged() -> None:
    breaker = CircuitBreaker()
    original = ValueError("original")

    @breaker
    def raises() -> None:
        raise original

    with pytest.raises(ValueError, match="original") as info:
        raises()
    assert info.value is original
