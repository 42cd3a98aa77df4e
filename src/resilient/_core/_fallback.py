"""The fallback policy's core: what to catch, what to replace it with, how often.

The step that hands an async handler's value to the async runner (``Deferred``) is
the adapter's, ``resilient._policies._fallback``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Final

from resilient._core._events import EventSource, FallbackUsed
from resilient._core._fork import new_lock
from resilient._core._validate import check_name, check_result_predicate, compile_matcher

__all__ = ["KIND", "FallbackCore"]

KIND: Final = "fallback"


def _check_handler_arity(handler: Callable[..., Any], with_args: bool) -> None:
    """Refuse, at construction, a handler that cannot take what it will be given."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    params = signature.parameters.values()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in params)
    if not with_args:
        try:
            signature.bind(None)
        except TypeError:
            raise TypeError(
                f"handler {signature} cannot be called with one argument (the exception or "
                "the matched result); to receive the call's arguments too, pass "
                "with_args=True and accept them after the exception"
            ) from None
        return
    if not positional and not var_positional:
        raise TypeError(
            f"handler {signature} must accept the exception as its first positional "
            "argument when with_args=True"
        )
    if len(params) < 2 and not (var_positional or var_keyword):  # noqa: PLR2004
        raise TypeError(
            f"with_args=True passes the call's arguments after the exception, but handler "
            f"{signature} accepts only one argument; pass with_args=False (the default), or "
            "accept the arguments (e.g. `def handler(exc, *args, **kwargs)`)"
        )


class FallbackCore(EventSource):
    """What to catch, what to return, and how often it was used."""

    __slots__ = (
        "_lock",
        "handler",
        "handler_is_async",
        "name",
        "on",
        "on_result",
        "used",
        "with_args",
    )

    def __init__(
        self,
        handler: object,
        on: object,
        on_result: object,
        with_args: object,
        name: str | None,
        is_async: Callable[[object], bool],
    ) -> None:
        super().__init__()
        if not callable(handler):
            raise TypeError(f"handler must be callable, not {type(handler).__name__}")
        if not isinstance(with_args, bool):
            raise TypeError(f"with_args must be True or False, not {type(with_args).__name__}")
        _check_handler_arity(handler, with_args)
        name = check_name(name)
        on_result = check_result_predicate("on_result", on_result)
        self.handler: Callable[[Any], Any] = handler
        # Asked of the adapter, which knows the async worlds (coroutine functions,
        # partials of them, callables whose __call__ is async).
        self.handler_is_async = is_async(handler)
        self.on = compile_matcher("on", on)
        self.on_result: Callable[[Any], bool] | None = on_result
        self.name = name
        self.with_args = with_args
        self.used = 0
        self._lock = new_lock(self)

    def use(self, exc: BaseException | None, result: Any, call: Any) -> Any:
        """Count and report a fallback, and call the handler with what it replaces.

        ``call`` is the ``(args, kwargs)`` of the guarded call under ``with_args``, else
        ``None``.
        """
        with self._lock:
            self.used += 1
        if self.observed():
            self.emit(FallbackUsed(self.name, KIND, exc, result))
        replaced = exc if exc is not None else result
        if call is None:
            return self.handler(replaced)
        return self.handler(replaced, *call[0], **call[1])
