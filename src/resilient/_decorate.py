"""Turning a policy's two guards (sync and async) into a correct decorator.

One decorator serves every kind of callable: functions and coroutine functions, methods
(a function is already a descriptor, so the wrapper binds ``self`` as the function did),
``classmethod`` and ``staticmethod`` objects (decorated inside, rewrapped outside), and
other callables. The returned wrapper is a plain closure: wrapt's ``FunctionWrapper``
measured about 860 ns per call, twice our whole budget for a closed breaker, so it is kept
off the hot path of functions and used only for callable *objects*, where its proxying
earns its cost (``isinstance`` and attribute access still see the object).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import wrapt

__all__ = ["decorate", "is_async_callable"]

Guard = Callable[[Callable[..., Any]], Callable[..., Any]]


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns an awaitable coroutine (looking through partials)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 -- we want the bound __call__ itself
    return (
        call is not None
        and not inspect.isfunction(fn)
        and not inspect.ismethod(fn)
        and inspect.iscoroutinefunction(call)
    )


def decorate(target: Any, sync_guard: Guard, async_guard: Guard, policy: object) -> Any:
    """Wrap ``target`` with ``sync_guard`` or ``async_guard``, whichever fits it."""
    if isinstance(target, (classmethod, staticmethod)):
        return type(target)(decorate(target.__func__, sync_guard, async_guard, policy))
    if not callable(target):
        raise TypeError(f"{policy!r} can only decorate a callable, not {type(target).__name__}")
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"{policy!r} cannot guard the generator function {target.__qualname__}: the call "
            "only creates the generator, so its outcome says nothing; guard the code that "
            "consumes it instead"
        )
    guard = async_guard if is_async_callable(target) else sync_guard
    wrapper = guard(target)
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target):
        functools.update_wrapper(wrapper, target)
        wrapper.__resilient_policy__ = policy  # type: ignore[attr-defined]
        return wrapper
    if isinstance(target, functools.partial):
        return functools.update_wrapper(wrapper, target)
    return wrapt.FunctionWrapper(
        target, lambda _wrapped, _instance, args, kwargs: wrapper(*args, **kwargs)
    )
