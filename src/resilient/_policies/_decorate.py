"""Turning a policy's two guards (sync and async) into a correct decorator.

One decorator serves every kind of callable: functions and coroutine functions, methods
(a function is already a descriptor, so the wrapper binds ``self`` as the function did),
``classmethod`` and ``staticmethod`` objects (decorated inside, rewrapped outside), and
other callables. The returned wrapper is a plain closure: wrapt's ``FunctionWrapper``
measured about 860 ns per call, twice our whole budget for a closed breaker, so it is kept
off the hot path of functions and used only for callable *objects*, where its proxying
earns its cost (``isinstance`` and attribute access still see the object); it is
imported then, not with the package.

Mistakes a type checker may miss are refused here with a
:class:`~resilient.MisuseError` saying what to do instead: at decoration time where the
target tells (a class, a generator function), and in ``call()``/``call_async()`` by a
look at the function. The one check left on the call path is a type comparison of a
sync call's result, for a "sync" callable (a lambda, a plain wrapper) that returned a
coroutine: awaited later by the caller, it would run outside every policy.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from types import CoroutineType, FunctionType, MethodType
from typing import Any, NoReturn

from resilient._core._errors import MisuseError
from resilient._policies._signature import signature_of

__all__ = [
    "COROUTINE",
    "NOT_PLAIN",
    "async_callable_for",
    "check_sync_callable",
    "decorate",
    "is_async_callable",
    "refuse_bare_decorator",
    "refuse_coroutine",
    "refusing_coroutines",
]

COROUTINE: Any = CoroutineType  # compared with `type(result) is COROUTINE` on sync paths

# Code flags of functions whose call returns a coroutine or a generator: `call()` reads
# them inline (tens of nanoseconds, where `inspect`'s predicates cost hundreds).
NOT_PLAIN: Any = (
    inspect.CO_COROUTINE
    | inspect.CO_ITERABLE_COROUTINE
    | inspect.CO_GENERATOR
    | inspect.CO_ASYNC_GENERATOR
)

# (fn, its signature or None, whether it is async) -> the wrapper around it
Guard = Callable[[Callable[..., Any], Any, bool], Callable[..., Any]]


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


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def _refuse_generator(fn: object, policy: object) -> None:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise MisuseError(
            f"{policy!r} cannot guard the generator function {_name(fn)}: the call "
            "only creates the generator, so its outcome says nothing; guard the code that "
            "consumes it instead"
        )


def refuse_coroutine(fn: object, result: Any) -> NoReturn:
    """A sync call returned a coroutine: close it (it never ran) and say what to do."""
    result.close()
    raise MisuseError(
        f"{_name(fn)} was guarded as a sync function but returned a coroutine, which would "
        "run later outside the policy: make it an `async def` function (or a partial of "
        "one), or use `await policy.call_async(...)`"
    )


def refusing_coroutines(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, refusing to return a coroutine (for a wrapper that calls it directly)."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if type(result) is COROUTINE:
            refuse_coroutine(fn, result)
        return result

    return checked


def check_sync_callable(fn: object, policy: object) -> None:
    """Refuse what ``policy.call(fn)`` cannot guard: async and generator functions.

    ``call()`` passes plain functions by itself; a bound method of one is passed here.
    """
    if type(fn) is MethodType:
        func = fn.__func__
        if type(func) is FunctionType and not func.__code__.co_flags & NOT_PLAIN:
            return
    if is_async_callable(fn):
        raise MisuseError(
            f"{_name(fn)} is an async function: use `await policy.call_async(fn, ...)` "
            f"rather than `call()`, which would return its coroutine unguarded ({policy!r})"
        )
    _refuse_generator(fn, policy)


def async_callable_for(fn: Any, policy: object) -> Callable[..., Awaitable[Any]]:
    """``fn`` for ``policy.call_async(fn)``: refused if it is sync, checked if unsure.

    A builtin is refused before it runs (``time.sleep`` would block the event loop).
    A plain callable may still return an awaitable (``lambda: fetch(url)``), so it is
    accepted, and refused only if what it returns cannot be awaited.
    """
    if is_async_callable(fn):
        return fn  # type: ignore[no-any-return]
    _refuse_generator(fn, policy)
    advice = (
        "use `policy.call(fn, ...)` for a sync function (run it in a thread, e.g. with "
        "anyio.to_thread.run_sync, so it does not block the event loop), or pass an "
        f"async function ({policy!r})"
    )
    if inspect.isbuiltin(fn) or isinstance(fn, type):
        raise MisuseError(f"call_async() was given {_name(fn)}, which is not async: {advice}")

    def checked(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        if not inspect.isawaitable(result):
            raise MisuseError(
                f"call_async() was given {_name(fn)}, which returned "
                f"{type(result).__name__}, not an awaitable: {advice}"
            )
        return result

    return checked


def refuse_bare_decorator(cls: type, args: tuple[Any, ...]) -> None:
    """``@CircuitBreaker`` without parentheses: the class got the function as its option."""
    if args and (inspect.isfunction(args[0]) or inspect.ismethod(args[0])):
        name = cls.__name__
        raise MisuseError(
            f"{name} was given the function {_name(args[0])} as its first option: to "
            f"decorate, create the policy with parentheses, @{name}(...), or decorate with "
            f"an instance (`policy = {name}(...)`, then `@policy`)"
        )


def decorate(target: Any, guard: Guard, policy: object) -> Any:
    """Wrap ``target`` with ``guard(target, signature, is_async)``.

    A plain function's guard takes the function's own parameters (``signature``, see
    ``_signature``); anything else's takes ``(*args, **kwargs)``.
    """
    if isinstance(target, (classmethod, staticmethod)):
        return type(target)(decorate(target.__func__, guard, policy))
    if isinstance(target, type):
        raise MisuseError(
            f"{policy!r} cannot decorate the class {target.__qualname__}: decorate its "
            "methods, or the function that creates or uses its instances"
        )
    if not callable(target):
        raise TypeError(f"{policy!r} can only decorate a callable, not {type(target).__name__}")
    _refuse_generator(target, policy)
    wrapper = guard(target, signature_of(target), is_async_callable(target))
    if inspect.isfunction(target) or inspect.ismethod(target) or inspect.isbuiltin(target):
        functools.update_wrapper(wrapper, target)
        wrapper.__resilient_policy__ = policy  # type: ignore[attr-defined]
        return wrapper
    if isinstance(target, functools.partial):
        return functools.update_wrapper(wrapper, target)
    # wrapt 2 imports asyncio and importlib.metadata: loaded for the first callable object
    # decorated, not by `import resilient`.
    import wrapt  # noqa: PLC0415

    return wrapt.FunctionWrapper(
        target, lambda _wrapped, _instance, args, kwargs: wrapper(*args, **kwargs)
    )
