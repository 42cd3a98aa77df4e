"""Type tests for Fallback: checked by mypy (and pyright), never run.

A fallback's caller gets either the function's result or the handler's value, so a
decorated ``Callable[P, R]`` is a ``Callable[P, R | T]`` where ``T`` is what the handler
returns (``R`` again when the handler returns an ``R``).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from resilient import Fallback


def text(exc: object) -> str:
    return "text"


async def async_text(exc: object) -> str:
    return "text"


def zero(exc: object) -> int:
    return 0


@Fallback(text)
def count() -> int:
    return 1


@Fallback(zero)
def same(a: int, *, b: str = "x") -> int:
    return a


@Fallback(lambda exc: None)
def maybe(a: int) -> bytes:
    return b"x" * a


@Fallback(text)
async def acount() -> int:
    return 1


@Fallback(async_text)
async def acount_async_handler(a: int) -> int:
    return a


assert_type(count(), int | str)
assert_type(same(1, b="y"), int)
assert_type(maybe(2), bytes | None)
assert_type(Fallback(text), Fallback[str])
assert_type(Fallback(async_text), Fallback[str])
assert_type(Fallback(text).call(lambda: 1), int | str)
assert_type(Fallback(zero).call(same, 1, b="z"), int)
_coro: Coroutine[Any, Any, int | str] = assert_type(acount(), Coroutine[Any, Any, int | str])
_coro.close()


async def use_async() -> None:
    assert_type(await acount(), int | str)
    assert_type(await acount_async_handler(1), int | str)
    assert_type(await Fallback(text).call_async(acount_async_handler, 1), int | str)
    assert_type(await Fallback(async_text).call_async(acount_async_handler, 1), int | str)


# The call's arguments, with with_args=True: handler(exc, *args, **kwargs).
def by_order(exc: Exception, order_id: int, *, retries: int = 0) -> str:
    return f"order {order_id}"


@Fallback(by_order, with_args=True)
def lookup(order_id: int, *, retries: int = 0) -> bytes:
    return b""


assert_type(lookup(1, retries=2), bytes | str)
assert_type(Fallback(by_order, with_args=True), Fallback[str])

same("1")  # type: ignore[arg-type]
count(1)  # type: ignore[call-arg]


# -- in a composition: an outermost Fallback's value shows in the type --------------------

from resilient import CircuitBreaker, Composition, Retry, compose  # noqa: E402

with_fallback = compose(Fallback(text), Retry(2), CircuitBreaker())
without_fallback = compose(Retry(2), CircuitBreaker())
nested = compose(with_fallback, Retry(2))
assert_type(with_fallback, Composition[str])
assert_type(nested, Composition[str])
bare: Composition = without_fallback  # the default: Composition[Never]


@with_fallback
def composed_count(a: int) -> int:
    return a


@without_fallback
def plain_count(a: int) -> int:
    return a


@compose(Fallback(async_text), Retry(2))
async def composed_async(a: int) -> bytes:
    return b""


assert_type(composed_count(1), int | str)
assert_type(plain_count(1), int)
assert_type(with_fallback.call(plain_count, 1), int | str)
assert_type(compose(Fallback(zero), Retry(2)).call(plain_count, 1), int)


async def use_composed() -> None:
    assert_type(await composed_async(1), bytes | str)
    assert_type(await with_fallback.call_async(acount_async_handler, 1), int | str)
