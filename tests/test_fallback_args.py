"""Fallback(with_args=True): the handler also receives the guarded call's arguments."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from resilient import CircuitBreaker, Fallback, Retry, compose
from resilient.asgi import ResilienceMiddleware


class Boom(Exception):
    pass


def failing(order_id: int, *, region: str = "eu") -> str:
    raise Boom(order_id)


async def afailing(order_id: int, *, region: str = "eu") -> str:
    await anyio.sleep(0)
    raise Boom(order_id)


def by_order(exc: Exception, order_id: int, *, region: str = "eu") -> str:
    return f"cached {order_id} {region} after {type(exc).__name__}"


async def aby_order(exc: Exception, order_id: int, *, region: str = "eu") -> str:
    await anyio.sleep(0)
    return f"cached {order_id} {region} after {type(exc).__name__}"


# -- construction: the handler's signature is checked against the option ------------------


@pytest.mark.parametrize(
    "handler",
    [
        lambda: "no argument",
        lambda exc, order_id: "needs the call's arguments",
        lambda *, exc: "keyword-only",
    ],
)
def test_handler_that_cannot_take_one_argument_is_refused(handler: Any) -> None:
    with pytest.raises(TypeError, match="with_args=True"):
        Fallback(handler)


@pytest.mark.parametrize(
    "handler",
    [lambda exc: "only the exception", lambda: "nothing", lambda *, exc, **kw: "kw only"],
)
def test_with_args_handler_must_take_the_exception_and_the_arguments(handler: Any) -> None:
    with pytest.raises(TypeError, match="with_args"):
        Fallback(handler, with_args=True)


def test_with_args_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="with_args"):
        Fallback(by_order, with_args=1)  # type: ignore[call-overload]


def test_handlers_that_fit_are_accepted() -> None:
    Fallback(lambda exc, *args, **kwargs: None, with_args=True)
    Fallback(by_order, with_args=True)
    Fallback(lambda *args: None, with_args=True)
    Fallback(lambda exc, extra=1: None)  # one argument binds; the default fills the rest
    Fallback(lambda *args: None)
    Fallback(print)  # a builtin without an inspectable signature is trusted


# -- sync and async -----------------------------------------------------------------------


def test_sync_handler_receives_the_calls_arguments() -> None:
    fallback = Fallback(by_order, with_args=True, name="orders")
    guarded = fallback(failing)
    assert guarded(7, region="us") == "cached 7 us after Boom"
    assert fallback.call(failing, 8) == "cached 8 eu after Boom"
    assert fallback.used == 2


def test_sync_on_result_handler_receives_the_value_and_the_arguments() -> None:
    fallback = Fallback(
        lambda value, x: ("replaced", value, x), on_result=lambda v: v < 0, with_args=True
    )
    assert fallback.call(lambda x: -x, 3) == ("replaced", -3, 3)
    assert fallback.call(lambda x: x, 3) == 3
    assert fallback.used == 1


def test_sync_unmatched_exception_propagates_unchanged() -> None:
    fallback = Fallback(by_order, on=KeyError, with_args=True)
    with pytest.raises(Boom):
        fallback.call(failing, 1)
    assert fallback.used == 0


def test_sync_handler_error_chains_to_the_original() -> None:
    def handler(exc: Exception, *args: Any) -> str:
        raise LookupError(args)

    with pytest.raises(LookupError) as info:
        Fallback(handler, with_args=True).call(failing, 5)
    assert info.value.args == ((5,),)
    assert isinstance(info.value.__context__, Boom)


def test_sync_composed_inside_other_policies() -> None:
    fallback = Fallback(by_order, with_args=True)
    guarded = compose(fallback, Retry(2, wait=0), CircuitBreaker(minimum_calls=10))(failing)
    assert guarded(4) == "cached 4 eu after Boom"


def test_sync_function_with_async_handler_is_refused() -> None:
    with pytest.raises(TypeError, match="async handler"):
        Fallback(aby_order, with_args=True)(failing)


async def test_async_function_with_sync_handler() -> None:
    fallback = Fallback(by_order, with_args=True)
    assert await fallback(afailing)(7, region="us") == "cached 7 us after Boom"
    assert await fallback.call_async(afailing, 9) == "cached 9 eu after Boom"


async def test_async_function_with_async_handler_is_awaited() -> None:
    fallback = Fallback(aby_order, with_args=True)
    assert await fallback(afailing)(7, region="us") == "cached 7 us after Boom"

    async def negative(x: int) -> int:
        return -x

    replacing = Fallback(
        aby_order, on_result=lambda v: isinstance(v, int) and v < 0, with_args=True
    )
    assert await replacing.call_async(negative, 2) == "cached 2 eu after int"
    assert await replacing.call_async(afailing, 3) == "cached 3 eu after Boom"
    assert replacing.used == 2


async def test_async_handler_error_chains_and_unmatched_passes() -> None:
    async def handler(exc: Exception, *args: Any) -> str:
        raise LookupError(args)

    with pytest.raises(LookupError) as info:
        await Fallback(handler, with_args=True).call_async(afailing, 5)
    assert isinstance(info.value.__context__, Boom)
    with pytest.raises(Boom):
        await Fallback(aby_order, on=KeyError, with_args=True).call_async(afailing, 1)


async def test_async_cancellation_is_never_caught() -> None:
    fallback = Fallback(lambda exc, *a: "caught", on=BaseException, with_args=True)

    async def hang() -> str:
        await anyio.sleep(10)
        return "late"  # pragma: no cover

    with anyio.move_on_after(0.01) as scope:
        await fallback.call_async(hang)
    assert scope.cancelled_caught
    assert fallback.used == 0


def test_asgi_middleware_refuses_a_with_args_fallback() -> None:
    # A request's "arguments" are the middleware's internals: nothing a handler can use.
    async def app(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    with pytest.raises(TypeError, match="with_args"):
        ResilienceMiddleware(app, Fallback(lambda exc, *a: None, with_args=True))


# -- decoration: the handler must take the decorated function's arguments -----------------


def _two(x: int, y: int) -> int:
    raise Boom(x + y)


def _optional(x: int, y: int = 1, *, z: int = 2) -> int:
    raise Boom(x + y + z)


@pytest.mark.parametrize(
    ("handler", "fn"),
    [
        pytest.param(lambda exc, a: 0, _two, id="one-of-two"),
        pytest.param(lambda exc, x, y, w: 0, _two, id="one-too-many"),
        pytest.param(lambda exc, x: 0, _optional, id="optional-positional-missing"),
        pytest.param(lambda exc, x, y=1: 0, _optional, id="keyword-only-missing"),
    ],
)
def test_a_handler_that_cannot_take_the_functions_arguments_is_refused_at_decoration(
    handler: Any, fn: Any
) -> None:
    fallback = Fallback(handler, with_args=True)
    with pytest.raises(TypeError, match="with_args=True passes the arguments of"):
        fallback(fn)
    with pytest.raises(TypeError, match="with_args=True"):
        compose(fallback, Retry(2, wait=0))(fn)


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(lambda exc, *args, **kwargs: -1, id="var"),
        pytest.param(lambda exc, x, y=1, *, z=2: -1, id="same"),
        pytest.param(lambda exc, x, *rest, **kw: -1, id="mixed"),
    ],
)
def test_a_handler_that_takes_the_functions_arguments_is_accepted(handler: Any) -> None:
    guarded = Fallback(handler, with_args=True)(_optional)
    assert guarded(1) == -1
    assert guarded(1, 2, z=3) == -1


def test_with_args_is_read_back() -> None:
    assert Fallback(lambda exc, *a, **k: None, with_args=True).with_args is True
    assert Fallback(lambda exc: None).with_args is False
