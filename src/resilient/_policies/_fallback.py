"""The fallback policy: replace a failure (or an unwanted result) with a value.

A fallback is a step whose exits may replace the outcome: ``exit_error`` returns the
handler's value for a matching exception, ``exit_ok`` for a matching result. An async
handler's value is handed back as a :class:`~resilient._policies._pipeline.Deferred`, which only
the async runner awaits; an async handler cannot serve a sync function, and saying so
at decoration time beats a coroutine returned where a value was expected.

With ``with_args=True`` the handler also receives the call's arguments, which a step
never sees (``enter()`` takes none); the fallback then owns the call as a thin wrapper
instead, and the same step methods make every decision.

For type checkers, ``Fallback[T]`` is generic in what its handler returns: a decorated
``Callable[P, R]`` becomes ``Callable[P, R | T]``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, ParamSpec, TypeVar, overload

from resilient._core._errors import MisuseError
from resilient._core._fallback import KIND, FallbackCore
from resilient._core._outcome import PASS
from resilient._core._validate import (
    ExceptionMatcher,
    matches,
)
from resilient._policies._decorate import is_async_callable
from resilient._policies._pipeline import Deferred, Wait
from resilient._policies._policy import CorePolicy, WidensResult

__all__ = ["Fallback"]

T = TypeVar("T")  # what the handler returns (awaited, for an async handler)
R = TypeVar("R")
P = ParamSpec("P")


def _check_handler_fits(handler: Callable[..., Any], fn: Callable[..., Any]) -> None:
    """Under ``with_args``, refuse at decoration a handler that cannot take ``fn``'s arguments.

    Tried with ``fn``'s required arguments only, then with every named one: the handler
    gets whatever the caller passed, so it must accept both.
    """
    try:
        wanted, given = inspect.signature(handler), inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    required: list[None] = []
    optional: list[None] = []
    required_kw: dict[str, None] = {}
    optional_kw: dict[str, None] = {}
    for param in given.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            (required if param.default is param.empty else optional).append(None)
        elif param.kind is param.KEYWORD_ONLY:
            (required_kw if param.default is param.empty else optional_kw)[param.name] = None
    for args, kwargs in ((required, required_kw), (required + optional, required_kw | optional_kw)):
        try:
            wanted.bind(None, *args, **kwargs)
        except TypeError as exc:
            name = getattr(fn, "__qualname__", repr(fn))
            raise TypeError(
                f"with_args=True passes the arguments of {name}{given} to the handler after "
                f"the exception, but handler {wanted} cannot take them ({exc}); accept them "
                "(e.g. `def handler(exc, *args, **kwargs)`), or pass with_args=False"
            ) from None


class _FallbackStep:
    __slots__ = ("_core", "defers")

    def __init__(self, core: FallbackCore, defer: bool) -> None:
        self._core = core
        self.defers = defer  # async handler: hand the coroutine to the async runner

    def enter(self) -> None:
        return None

    # The token is None inside a runner, or the call's (args, kwargs) under with_args.
    def exit_ok(self, token: Any, result: Any) -> Any:
        core = self._core
        check = core.on_result
        if check is not None and matches(check, result, "on_result", core.name):
            value = self._core.use(None, result, token)
            return Deferred(value) if self.defers else value
        return result

    def exit_error(self, token: Any, exc: Exception) -> Any:
        core = self._core
        match = core.on
        if type(exc) is MisuseError:
            return PASS  # a bug in the calling code: a fallback would hide it
        if match is not None and matches(match, exc, "the `on` predicate", core.name):
            value = self._core.use(exc, None, token)
            return Deferred(value) if self.defers else value
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        return exc  # cancellation and interrupts are never swallowed

    def enter_wait(self, wait: Wait) -> Any:  # pragma: no cover - enter() never returns WAIT
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> Any:  # pragma: no cover - likewise
        raise NotImplementedError


class Fallback(WidensResult[T], CorePolicy[FallbackCore]):
    """Return ``handler(exception)`` instead of raising a matching exception.

    With ``on_result``, a returned value that matches is replaced by
    ``handler(value)`` too. Rejections of inner policies (an open circuit, a full
    bulkhead, a timeout) are exceptions like any other, so a fallback can serve a cached
    value while a dependency is down. Cancellation, ``KeyboardInterrupt`` and
    ``SystemExit`` are never caught.

    An async ``handler`` is awaited; it can only guard async functions (decorating a sync
    function with it raises ``TypeError``). A sync handler serves both.

    For type checkers, ``Fallback[T]`` is generic in what the handler returns: a
    decorated ``Callable[P, R]`` becomes ``Callable[P, R | T]`` (just ``R`` when the
    handler returns an ``R`` too).

    Args:
        handler: Called with the exception (or the unwanted result); its return value
            is what the caller gets. It may raise instead.
        on: Exception types, or a predicate, that the fallback handles (default: every
            ``Exception``).
        on_result: A predicate over return values; a match is replaced as well.
        with_args: If true, the handler is called as ``handler(exc, *args, **kwargs)``
            with the guarded call's arguments (checked against the handler's signature
            at construction).
        name: A name for events and metrics.
    """

    __slots__ = ("_async", "_sync")
    kind = KIND
    _callable_option = True

    @overload
    def __init__(
        self,
        handler: Callable[[Any], Awaitable[T]],
        *,
        on: ExceptionMatcher = ...,
        on_result: Callable[[Any], bool] | None = ...,
        with_args: Literal[False] = ...,
        name: str | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        handler: Callable[[Any], T],
        *,
        on: ExceptionMatcher = ...,
        on_result: Callable[[Any], bool] | None = ...,
        with_args: Literal[False] = ...,
        name: str | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        handler: Callable[..., Awaitable[T]],
        *,
        on: ExceptionMatcher = ...,
        on_result: Callable[[Any], bool] | None = ...,
        with_args: Literal[True],
        name: str | None = ...,
    ) -> None: ...
    @overload
    def __init__(
        self,
        handler: Callable[..., T],
        *,
        on: ExceptionMatcher = ...,
        on_result: Callable[[Any], bool] | None = ...,
        with_args: Literal[True],
        name: str | None = ...,
    ) -> None: ...
    def __init__(
        self,
        handler: Callable[..., Any],
        *,
        on: ExceptionMatcher = Exception,
        on_result: Callable[[Any], bool] | None = None,
        with_args: bool = False,
        name: str | None = None,
    ) -> None:
        self._core = FallbackCore(handler, on, on_result, with_args, name, is_async_callable)
        self._async = _FallbackStep(self._core, defer=self._core.handler_is_async)
        self._sync = None if self._core.handler_is_async else _FallbackStep(self._core, defer=False)
        self._config = {"handler": handler, "on": on, "on_result": on_result}

    # The guards are built for the handler's kind and with_args: neither can change.
    _fixed_options = ("name", "with_args")

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        core = self._core
        handler = merged["handler"]
        fresh = FallbackCore(
            handler, merged["on"], merged["on_result"], core.with_args, None, is_async_callable
        )
        if fresh.handler_is_async != core.handler_is_async:
            kind = "an async" if core.handler_is_async else "a sync"
            raise TypeError(
                f"handler must stay {kind} callable: the functions this fallback guards "
                f"were decorated for one, got {handler!r}"
            )

        def commit() -> None:
            # The steps read them from the core at each outcome.
            with core._lock:
                core.handler = fresh.handler
                core.on = fresh.on
                core.on_result = fresh.on_result

        return commit

    def _check_target(self, fn: Callable[..., Any]) -> None:
        if self._core.with_args:
            _check_handler_fits(self._core.handler, fn)

    def _sync_step(self) -> _FallbackStep | None:
        return None if self._core.with_args else self._sync_checked()

    def _async_step(self) -> _FallbackStep | None:
        return None if self._core.with_args else self._async

    def _sync_checked(self) -> _FallbackStep:
        if self._sync is None:
            raise TypeError(
                f"{self!r} has an async handler, which cannot serve a sync function; "
                "give it a sync handler, or guard an async function"
            )
        return self._sync

    # with_args: the handler needs the call's arguments, which only a wrapper sees. The
    # step still decides; these shells pass it the arguments as its token.

    def _sync_wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        step = self._sync_checked()

        def guarded(*args: Any, **kwargs: Any) -> Any:
            call = (args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                value = step.exit_error(call, exc)
                if value is PASS:
                    raise
                return value
            return step.exit_ok(call, result)

        return guarded

    def _async_wrap(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        step = self._async

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            call = (args, kwargs)
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                value = step.exit_error(call, exc)
                if value is PASS:
                    raise
                if type(value) is Deferred:  # awaited here, so its errors chain to exc
                    return await value.awaitable
                return value
            value = step.exit_ok(call, result)
            if type(value) is Deferred:
                return await value.awaitable
            return value

        return guarded

    @property
    def used(self) -> int:
        """How many times the handler's value replaced an outcome."""
        return self._core.used

    @property
    def with_args(self) -> bool:
        """Whether the handler also receives the guarded call's arguments."""
        return self._core.with_args

    def __enter__(self) -> None:
        raise TypeError("a fallback replaces a call's result; decorate a function instead")

    async def __aenter__(self) -> None:
        raise TypeError("a fallback replaces a call's result; decorate a function instead")

    def __repr__(self) -> str:
        handler = getattr(self._core.handler, "__qualname__", self._core.handler)
        return f"<Fallback {self.name!r} handler={handler!r}>"
