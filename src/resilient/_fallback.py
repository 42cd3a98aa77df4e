"""The fallback policy: replace a failure (or an unwanted result) with a value.

A fallback is a step whose exits may replace the outcome: ``exit_error`` returns the
handler's value for a matching exception, ``exit_ok`` for a matching result. An async
handler's value is handed back as a :class:`~resilient._pipeline.Deferred`, which only
the async runner awaits; an async handler cannot serve a sync function, and saying so
at decoration time beats a coroutine returned where a value was expected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from resilient._decorate import is_async_callable
from resilient._events import GLOBAL_LISTENERS, NOTABLE_LISTENERS, EventSource, FallbackUsed
from resilient._fork import new_lock
from resilient._pipeline import PASS, Deferred, Wait
from resilient._policy import CorePolicy
from resilient._validate import (
    ExceptionMatcher,
    check_name,
    check_result_predicate,
    compile_matcher,
    matches,
)

__all__ = ["Fallback"]

KIND: Final = "fallback"


class FallbackCore(EventSource):
    """What to catch, what to return, and how often it was used."""

    __slots__ = ("_lock", "handler", "handler_is_async", "name", "on", "on_result", "used")

    def __init__(self, handler: object, on: object, on_result: object, name: str | None) -> None:
        super().__init__()
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        name = check_name(name)
        on_result = check_result_predicate("on_result", on_result)
        self.handler: Callable[[Any], Any] = handler
        self.handler_is_async = is_async_callable(handler)
        self.on = compile_matcher("on", on)
        self.on_result: Callable[[Any], bool] | None = on_result
        self.name = name
        self.used = 0
        self._lock = new_lock(self)

    def use(self, exc: BaseException | None, result: Any) -> Any:
        """Count and report a fallback, and call the handler with what it replaces."""
        with self._lock:
            self.used += 1
        if self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
            self.emit(FallbackUsed(self.name, KIND, exc, result))
        return self.handler(exc if exc is not None else result)


class _FallbackStep:
    __slots__ = ("_core", "defers")

    def __init__(self, core: FallbackCore, defer: bool) -> None:
        self._core = core
        self.defers = defer  # async handler: hand the coroutine to the async runner

    def enter(self) -> None:
        return None

    def exit_ok(self, token: None, result: Any) -> Any:
        core = self._core
        check = core.on_result
        if check is not None and matches(check, result, "on_result", core.name):
            value = self._core.use(None, result)
            return Deferred(value) if self.defers else value
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        core = self._core
        match = core.on
        if match is not None and matches(match, exc, "the `on` predicate", core.name):
            value = self._core.use(exc, None)
            return Deferred(value) if self.defers else value
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        return exc  # cancellation and interrupts are never swallowed

    def enter_wait(self, wait: Wait) -> Any:  # pragma: no cover - enter() never returns WAIT
        raise NotImplementedError

    async def enter_wait_async(self, wait: Wait) -> Any:  # pragma: no cover - likewise
        raise NotImplementedError


class Fallback(CorePolicy[FallbackCore]):
    """Return ``handler(exception)`` instead of raising a matching exception.

    With ``on_result``, a returned value that matches is replaced by
    ``handler(value)`` too. Rejections of inner policies (an open circuit, a full
    bulkhead, a timeout) are exceptions like any other, so a fallback can serve a cached
    value while a dependency is down. Cancellation, ``KeyboardInterrupt`` and
    ``SystemExit`` are never caught.

    An async ``handler`` is awaited; it can only guard async functions (decorating a sync
    function with it raises ``TypeError``). A sync handler serves both.

    Args:
        handler: Called with the exception (or the unwanted result); its return value
            is what the caller gets. It may raise instead.
        on: Exception types, or a predicate, that the fallback handles (default: every
            ``Exception``).
        on_result: A predicate over return values; a match is replaced as well.
        name: A name for events and metrics.
    """

    __slots__ = ("_async", "_sync")
    kind = "fallback"

    def __init__(
        self,
        handler: Callable[[Any], Any],
        *,
        on: ExceptionMatcher = Exception,
        on_result: Callable[[Any], bool] | None = None,
        name: str | None = None,
    ) -> None:
        self._core = FallbackCore(handler, on, on_result, name)
        self._async = _FallbackStep(self._core, defer=self._core.handler_is_async)
        self._sync = None if self._core.handler_is_async else _FallbackStep(self._core, defer=False)

    def _sync_step(self) -> _FallbackStep:
        if self._sync is None:
            raise TypeError(
                f"{self!r} has an async handler, which cannot serve a sync function; "
                "give it a sync handler, or guard an async function"
            )
        return self._sync

    def _async_step(self) -> _FallbackStep:
        return self._async

    @property
    def used(self) -> int:
        """How many times the handler's value replaced an outcome."""
        return self._core.used

    def __enter__(self) -> None:
        raise TypeError("a fallback replaces a call's result; decorate a function instead")

    async def __aenter__(self) -> None:
        raise TypeError("a fallback replaces a call's result; decorate a function instead")

    def __repr__(self) -> str:
        handler = getattr(self._core.handler, "__qualname__", self._core.handler)
        return f"<Fallback {self.name!r} handler={handler!r}>"
