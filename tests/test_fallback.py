"""Fallback: a matching exception (or result) is replaced by the handler's value."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Coroutine
from typing import Any

import anyio
import pytest

from resilient import (
    Bulkhead,
    BulkheadFullError,
    CircuitBreaker,
    CircuitOpenError,
    Fallback,
    FallbackUsed,
    Timeout,
    TimeoutExceededError,
    compose,
)
from resilient.testing import capture_events


class Boom(Exception):
    pass


class Other(Exception):
    pass


def raiser(exc: BaseException) -> Any:
    raise exc


async def araiser(exc: BaseException) -> Any:
    await anyio.sleep(0)
    raise exc


async def areturn(value: Any) -> Any:
    await anyio.sleep(0)
    return value


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never suspends, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    finally:
        coro.close()
    pytest.fail("the coroutine suspended")  # pragma: no cover


# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "options", "option"),
    [
        ((3,), {}, "handler"),
        ((None,), {}, "handler"),
        ((lambda exc: 0,), {"on": "x"}, "on"),
        ((lambda exc: 0,), {"on": 3}, "on"),
        ((lambda exc: 0,), {"on": int}, "on"),
        ((lambda exc: 0,), {"on": (ValueError, "x")}, "on"),
        ((lambda exc: 0,), {"on_result": 3}, "on_result"),
        ((lambda exc: 0,), {"on_result": "x"}, "on_result"),
        ((lambda exc: 0,), {"name": 3}, "name"),
    ],
)
def test_bad_options_raise_naming_the_option(
    args: tuple[Any, ...], options: dict[str, Any], option: str
) -> None:
    with pytest.raises(TypeError, match=option):
        Fallback(*args, **options)


def test_properties_and_with_blocks_are_refused() -> None:
    fallback = Fallback(lambda exc: 0, name="fb")
    assert fallback.name == "fb"
    assert fallback.used == 0
    with pytest.raises(TypeError), fallback:
        pass  # pragma: no cover - never entered


async def test_async_with_is_refused() -> None:
    with pytest.raises(TypeError):
        async with Fallback(lambda exc: 0):
            pass  # pragma: no cover - never entered


# -- sync ---------------------------------------------------------------------------------


def test_sync_exception_is_replaced_by_the_handlers_value() -> None:
    seen: list[BaseException] = []
    error = Boom("down")

    def handler(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    fallback = Fallback(handler, name="fb")

    @fallback
    def fn(x: int) -> str:
        if x < 0:
            raise error
        return f"live {x}"

    with capture_events() as events:
        assert fn(1) == "live 1"
        assert fn(-1) == "cached"
    assert seen == [error]
    assert seen[0] is error
    assert fallback.used == 1
    assert events == [FallbackUsed("fb", "fallback", error, None)]
    assert events[0].exception is error


def test_default_on_catches_every_exception_but_not_base_exceptions() -> None:
    fallback = Fallback(lambda exc: type(exc).__name__)
    assert fallback.call(raiser, KeyError("k")) == "KeyError"
    assert fallback.call(raiser, TimeoutError()) == "TimeoutError"
    for exc in (KeyboardInterrupt(), SystemExit(3), GeneratorExit()):
        with pytest.raises(type(exc)) as info:
            fallback.call(raiser, exc)
        assert info.value is exc
    assert fallback.used == 2


def test_on_tuple_selects_exceptions() -> None:
    fallback = Fallback(lambda exc: "handled", on=(Boom, KeyError))
    assert fallback.call(raiser, Boom()) == "handled"
    assert fallback.call(raiser, KeyError("k")) == "handled"
    other = Other("passes")
    with pytest.raises(Other) as info:
        fallback.call(raiser, other)
    assert info.value is other
    assert fallback.used == 2


def test_on_single_type_matches_subclasses() -> None:
    fallback = Fallback(lambda exc: "handled", on=LookupError)
    assert fallback.call(raiser, KeyError("k")) == "handled"
    with pytest.raises(Boom):
        fallback.call(raiser, Boom())


def test_on_predicate_receives_the_exception() -> None:
    asked: list[BaseException] = []

    def retryable(exc: BaseException) -> bool:
        asked.append(exc)
        return "soft" in str(exc)

    fallback = Fallback(lambda exc: "handled", on=retryable)
    soft, hard = Boom("soft"), Boom("hard")
    assert fallback.call(raiser, soft) == "handled"
    with pytest.raises(Boom) as info:
        fallback.call(raiser, hard)
    assert info.value is hard
    assert asked == [soft, hard]
    assert fallback.used == 1


def test_empty_on_handles_nothing() -> None:
    fallback = Fallback(lambda exc: "handled", on=())
    with pytest.raises(Boom):
        fallback.call(raiser, Boom())
    assert fallback.used == 0


def test_on_result_replaces_matching_results() -> None:
    seen: list[Any] = []

    def handler(value: Any) -> str:
        seen.append(value)
        return "default"

    fallback = Fallback(handler, on_result=lambda value: value is None, name="r")
    with capture_events() as events:
        assert fallback.call(lambda: None) == "default"
        assert fallback.call(lambda: 0) == 0
        assert fallback.call(lambda: "x") == "x"
    assert seen == [None]
    assert fallback.used == 1
    assert events == [FallbackUsed("r", "fallback", None, None)]


def test_on_result_and_on_together() -> None:
    fallback = Fallback(lambda value: ("fb", value), on=Boom, on_result=lambda v: v == "bad")
    error = Boom()
    assert fallback.call(lambda: "bad") == ("fb", "bad")
    assert fallback.call(raiser, error) == ("fb", error)
    assert fallback.call(lambda: "good") == "good"
    assert fallback.used == 2


def test_sync_handler_that_raises_propagates_with_the_original_as_context() -> None:
    original = Boom("original")
    replacement = Other("from handler")
    fallback = Fallback(lambda exc: raiser(replacement))
    with pytest.raises(Other) as info:
        fallback.call(raiser, original)
    assert info.value is replacement
    assert info.value.__context__ is original


def test_handler_raising_on_a_result_propagates() -> None:
    replacement = Other("from handler")
    fallback = Fallback(lambda value: raiser(replacement), on_result=lambda value: True)
    with pytest.raises(Other) as info:
        fallback.call(lambda: 1)
    assert info.value is replacement


def test_keyboard_interrupt_is_never_swallowed_even_when_asked() -> None:
    handled: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        handled.append(exc)  # pragma: no cover - must not be called
        return "swallowed"  # pragma: no cover

    # on=KeyboardInterrupt is refused at construction (see test_construction.py).
    for on in (BaseException, lambda exc: True):
        fallback = Fallback(handler, on=on)
        with pytest.raises(KeyboardInterrupt):
            fallback.call(raiser, KeyboardInterrupt())
        with pytest.raises(SystemExit):
            fallback.call(raiser, SystemExit(1))
        assert fallback.used == 0
    assert handled == []


def test_async_handler_on_a_sync_function_is_refused_at_decoration() -> None:
    async def handler(exc: BaseException) -> str:
        return "never"  # pragma: no cover

    class AsyncCallable:
        async def __call__(self, exc: BaseException) -> str:
            return "never"  # pragma: no cover

    called: list[int] = []

    def fn() -> None:
        called.append(1)  # pragma: no cover - must not run

    for async_handler in (handler, functools.partial(handler), AsyncCallable()):
        fallback = Fallback(async_handler)
        with pytest.raises(TypeError, match="async handler"):
            fallback(fn)
        with pytest.raises(TypeError, match="async handler"):
            compose(fallback, CircuitBreaker())(fn)
        with pytest.raises(TypeError, match="async handler"):
            fallback.call(fn)
    assert called == []


def test_sync_fallback_catches_circuit_open_from_a_forced_open_breaker() -> None:
    breaker = CircuitBreaker("dep")
    breaker.force_open()
    seen: list[BaseException] = []
    called: list[int] = []

    def handler(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    guarded = compose(Fallback(handler), breaker)(lambda: called.append(1))
    assert guarded() == "cached"
    assert called == []
    assert len(seen) == 1
    assert isinstance(seen[0], CircuitOpenError)
    assert seen[0].retry_after is None
    assert breaker.metrics().not_permitted_calls == 1


def test_stacked_fallbacks_outer_catches_inner_handlers_error() -> None:
    inner = Fallback(lambda exc: raiser(Other("inner handler failed")), on=Boom)
    outer = Fallback(lambda exc: f"outer saw {type(exc).__name__}")
    assert outer(inner(lambda: raiser(Boom())))() == "outer saw Other"
    assert (inner.used, outer.used) == (1, 1)


def test_sync_fallback_catches_a_sync_timeout() -> None:
    fallback = Fallback(lambda exc: type(exc).__name__, on=TimeoutError)
    guarded = compose(fallback, Timeout(0.05))
    release = threading.Event()
    try:
        assert guarded.call(release.wait, 10.0) == "TimeoutExceededError"
    finally:
        release.set()
    assert fallback.used == 1


def test_listener_and_used_counter() -> None:
    fallback = Fallback(lambda exc: 0, on=Boom, name="l")
    received: list[object] = []
    fallback.add_listener(received.append)
    errors = [Boom(str(i)) for i in range(3)]
    for error in errors:
        fallback.call(raiser, error)
    fallback.call(lambda: 1)
    fallback.remove_listener(received.append)
    fallback.call(raiser, Boom())
    assert fallback.used == 4
    assert received == [FallbackUsed("l", "fallback", error, None) for error in errors]


# -- async --------------------------------------------------------------------------------


async def test_async_function_with_sync_handler() -> None:
    error = Boom()
    seen: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    fallback = Fallback(handler, name="s")

    @fallback
    async def fn(fail: bool) -> str:
        if fail:
            await araiser(error)
        return "live"

    with capture_events() as events:
        assert await fn(False) == "live"
        assert await fn(True) == "cached"
    assert seen == [error]
    assert fallback.used == 1
    assert events == [FallbackUsed("s", "fallback", error, None)]


async def test_async_function_with_async_handler_is_awaited() -> None:
    error = Boom()
    seen: list[BaseException] = []

    async def handler(exc: BaseException) -> str:
        await anyio.sleep(0)
        seen.append(exc)
        return "cached"

    fallback = Fallback(handler, on=Boom)
    assert await fallback.call_async(araiser, error) == "cached"
    assert seen == [error]
    assert await fallback.call_async(areturn, "live") == "live"
    other = Other()
    with pytest.raises(Other) as info:
        await fallback.call_async(araiser, other)
    assert info.value is other
    assert fallback.used == 1


async def test_async_handler_as_partial_and_callable_object() -> None:
    async def handler(prefix: str, exc: BaseException) -> str:
        await anyio.sleep(0)
        return f"{prefix} {type(exc).__name__}"

    class Handler:
        async def __call__(self, exc: BaseException) -> str:
            await anyio.sleep(0)
            return "object"

    assert await Fallback(functools.partial(handler, "p")).call_async(araiser, Boom()) == "p Boom"
    assert await Fallback(Handler()).call_async(araiser, Boom()) == "object"


async def test_async_on_predicate_and_tuple() -> None:
    by_type = Fallback(lambda exc: "t", on=(Boom, KeyError))
    by_predicate = Fallback(lambda exc: "p", on=lambda exc: isinstance(exc, Other))
    assert await by_type.call_async(araiser, KeyError("k")) == "t"
    assert await by_predicate.call_async(araiser, Other()) == "p"
    with pytest.raises(Other):
        await by_type.call_async(araiser, Other())
    with pytest.raises(Boom):
        await by_predicate.call_async(araiser, Boom())


@pytest.mark.parametrize("async_handler", [False, True], ids=["sync-handler", "async-handler"])
async def test_async_on_result(async_handler: bool) -> None:
    seen: list[Any] = []

    def sync_handler(value: Any) -> str:
        seen.append(value)
        return "default"

    async def coro_handler(value: Any) -> str:
        await anyio.sleep(0)
        return sync_handler(value)

    fallback = Fallback(
        coro_handler if async_handler else sync_handler,
        on_result=lambda value: value == "",
        name="r",
    )
    with capture_events() as events:
        assert await fallback.call_async(areturn, "") == "default"
        assert await fallback.call_async(areturn, "x") == "x"
    assert seen == [""]
    assert events == [FallbackUsed("r", "fallback", None, "")]


@pytest.mark.parametrize("async_handler", [False, True], ids=["sync-handler", "async-handler"])
async def test_async_handler_that_raises_propagates_with_context(async_handler: bool) -> None:
    original = Boom("original")
    replacement = Other("from handler")

    async def coro_handler(exc: BaseException) -> str:
        return await araiser(replacement)

    handler = coro_handler if async_handler else (lambda exc: raiser(replacement))
    with pytest.raises(Other) as info:
        await Fallback(handler).call_async(araiser, original)
    assert info.value is replacement
    assert info.value.__context__ is original


@pytest.mark.parametrize(
    "on", [BaseException, lambda exc: True], ids=["BaseException", "always-true-predicate"]
)
async def test_cancellation_is_never_swallowed(on: Any) -> None:
    handled: list[BaseException] = []

    def handler(exc: BaseException) -> str:
        handled.append(exc)  # pragma: no cover - must not be called
        return "swallowed"  # pragma: no cover

    fallback = Fallback(handler, on=on)
    reached: list[str] = []

    async def fn() -> str:
        try:
            await anyio.sleep(10)
        finally:
            reached.append("finally")
        return "done"  # pragma: no cover

    with anyio.CancelScope() as scope:
        scope.cancel()
        await fallback.call_async(fn)
        reached.append("after call")  # pragma: no cover - the call must re-raise
    assert scope.cancelled_caught

    with anyio.move_on_after(0.02) as scope:
        await fallback.call_async(fn)
        reached.append("after call")  # pragma: no cover
    assert scope.cancelled_caught

    assert reached == ["finally", "finally"]
    assert handled == []
    assert fallback.used == 0


async def test_cancellation_while_an_async_handler_runs_propagates() -> None:
    started = anyio.Event()

    async def slow_handler(exc: BaseException) -> str:
        started.set()
        await anyio.sleep(10)
        return "too late"  # pragma: no cover

    fallback = Fallback(slow_handler)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            await fallback.call_async(araiser, Boom())
            pytest.fail("the cancelled fallback returned")  # pragma: no cover

        tg.start_soon(run)
        with anyio.fail_after(5):
            await started.wait()
        tg.cancel_scope.cancel()
    assert fallback.used == 1


def test_native_asyncio_cancelled_error_is_not_swallowed() -> None:
    fallback = Fallback(lambda exc: "swallowed", on=BaseException)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        drive(fallback.call_async(cancelled))
    assert fallback.used == 0


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_async_keyboard_interrupt_is_not_swallowed(exc_type: type[BaseException]) -> None:
    # Driven by hand: a KeyboardInterrupt inside a running event loop would stop pytest.
    fallback = Fallback(lambda exc: "swallowed", on=BaseException)

    async def interrupted() -> None:
        raise exc_type

    with pytest.raises(exc_type):
        drive(fallback.call_async(interrupted))
    assert fallback.used == 0


async def test_async_fallback_catches_circuit_open_from_a_forced_open_breaker() -> None:
    breaker = CircuitBreaker("dep")
    breaker.force_open()
    seen: list[BaseException] = []
    called: list[int] = []

    async def handler(exc: BaseException) -> str:
        seen.append(exc)
        return "cached"

    @compose(Fallback(handler), breaker)
    async def fn() -> None:
        called.append(1)  # pragma: no cover - must not run

    assert await fn() == "cached"
    assert called == []
    assert len(seen) == 1
    assert isinstance(seen[0], CircuitOpenError)
    assert breaker.metrics().not_permitted_calls == 1


async def test_async_fallback_catches_a_timeout() -> None:
    fallback = Fallback(lambda exc: type(exc).__name__)
    bulkhead = Bulkhead(1)
    guarded = compose(fallback, Timeout(0.05), bulkhead)
    reached: list[str] = []

    async def slow() -> str:
        try:
            await anyio.sleep(10)
        finally:
            reached.append("finally")
        return "late"  # pragma: no cover

    assert await guarded.call_async(slow) == TimeoutExceededError.__name__
    assert reached == ["finally"]
    assert bulkhead.metrics().in_flight == 0
    assert fallback.used == 1


async def test_async_fallback_catches_a_full_bulkhead() -> None:
    fallback = Fallback(lambda exc: type(exc).__name__)
    bulkhead = Bulkhead(1)
    guarded = compose(fallback, bulkhead)
    entered, release = anyio.Event(), anyio.Event()
    results: list[str] = []

    async def hold() -> str:
        entered.set()
        await release.wait()
        return "held"

    async def first() -> None:
        results.append(await guarded.call_async(hold))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await entered.wait()
            # The slot is taken: the call is rejected and served by the fallback.
            assert await guarded.call_async(areturn, "x") == BulkheadFullError.__name__
            release.set()
    assert results == ["held"]
    assert bulkhead.metrics().in_flight == 0
    assert fallback.used == 1
