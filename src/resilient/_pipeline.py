"""The one adapter: run a callable inside a chain of policy steps, sync or async.

A *step* is the adapter-facing side of a policy core: ``enter()`` admits the call (or
raises a rejection, or returns :data:`WAIT` when the caller must wait), and one of
``exit_ok()``, ``exit_error()``, ``exit_cancel()`` reports how the call ended. Steps hold
every decision; the runners below only call, await, wait and unwind. Policies that
must own the call itself (a retry loop, a sync timeout's worker thread) are *wrappers*
instead, and split the chain.

``compose(a, b, c)`` turns runs of adjacent steps into a single runner frame, which is
why it costs less than stacking the same decorators.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

__all__ = ["NO_RESULT", "PASS", "WAIT", "Deferred", "Step", "async_runner", "sync_runner"]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


WAIT: Final[Any] = _Sentinel("WAIT")
"""Returned by ``Step.enter()`` when the caller must wait for admission."""
PASS: Final[Any] = _Sentinel("PASS")
"""Returned by ``Step.exit_error()`` to let the exception propagate unchanged."""
NO_RESULT: Final[Any] = _Sentinel("NO_RESULT")
"""The "result" of a ``with`` block, which has none: result predicates skip it."""


class Deferred:
    """An exit's result that the async runner must await first (an async fallback)."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable


class Step(Protocol):
    """What a policy exposes to the runners."""

    #: Whether an exit may return a :class:`Deferred` (only async fallbacks do); chains
    #: without such a step unwind without an extra coroutine.
    defers: bool

    def enter(self) -> Any:
        """Admit the call: return a token, raise a rejection, or return ``WAIT``."""
        ...

    def enter_wait(self) -> Any:
        """Block the thread until admitted; return a token or raise a rejection."""
        ...

    async def enter_wait_async(self) -> Any:
        """Wait (as a task) until admitted; return a token or raise a rejection."""
        ...

    def exit_ok(self, token: Any, result: Any) -> Any:
        """The call returned ``result``; return what the caller gets."""
        ...

    def exit_error(self, token: Any, exc: Exception) -> Any:
        """The call raised ``exc``: return a replacement result, ``PASS``, or raise."""
        ...

    def exit_cancel(self, token: Any, exc: BaseException) -> BaseException:
        """The call was cancelled or interrupted: release, and return what to raise."""
        ...


def _unwind(
    steps: Sequence[Step], tokens: list[Any], result: Any, exc: BaseException | None
) -> Any:
    i = len(tokens)
    while i:
        i -= 1
        step = steps[i]
        try:
            if exc is None:
                result = step.exit_ok(tokens[i], result)
            elif isinstance(exc, Exception):
                replaced = step.exit_error(tokens[i], exc)
                if replaced is not PASS:
                    result, exc = replaced, None
            else:
                exc = step.exit_cancel(tokens[i], exc)
        except BaseException as error:  # a step replaced the outcome with its own error
            if error is not exc and error.__context__ is None:
                error.__context__ = exc
            exc = error
    if exc is not None:
        try:
            raise exc
        finally:
            exc = None  # break the frame <-> traceback cycle
    return result


async def _aunwind(
    steps: Sequence[Step], tokens: list[Any], result: Any, exc: BaseException | None
) -> Any:
    i = len(tokens)
    while i:
        i -= 1
        step = steps[i]
        try:
            if exc is None:
                result = step.exit_ok(tokens[i], result)
                if type(result) is Deferred:
                    result = await result.awaitable
            elif isinstance(exc, Exception):
                replaced = step.exit_error(tokens[i], exc)
                if replaced is not PASS:
                    if type(replaced) is Deferred:
                        replaced = await replaced.awaitable
                    result, exc = replaced, None
            else:
                exc = step.exit_cancel(tokens[i], exc)
        except BaseException as error:
            if error is not exc and error.__context__ is None:
                error.__context__ = exc
            exc = error
    if exc is not None:
        try:
            raise exc
        finally:
            exc = None
    return result


def sync_runner(steps: Sequence[Step], fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return ``run(*args, **kwargs)`` calling ``fn`` inside ``steps`` (outermost first)."""
    chain = tuple(steps)

    def run(*args: Any, **kwargs: Any) -> Any:
        tokens: list[Any] = []
        try:
            for step in chain:
                token = step.enter()
                if token is WAIT:
                    token = step.enter_wait()
                tokens.append(token)
            result = fn(*args, **kwargs)
        except BaseException as exc:
            return _unwind(chain, tokens, None, exc)
        return _unwind(chain, tokens, result, None)

    return run


def async_runner(
    steps: Sequence[Step], fn: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    """Return ``async run(*args, **kwargs)`` awaiting ``fn`` inside ``steps``."""
    chain = tuple(steps)
    if any(step.defers for step in chain):

        async def run_deferring(*args: Any, **kwargs: Any) -> Any:
            tokens: list[Any] = []
            try:
                for step in chain:
                    token = step.enter()
                    if token is WAIT:
                        token = await step.enter_wait_async()
                    tokens.append(token)
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                return await _aunwind(chain, tokens, None, exc)
            return await _aunwind(chain, tokens, result, None)

        return run_deferring

    async def run(*args: Any, **kwargs: Any) -> Any:
        tokens: list[Any] = []
        try:
            for step in chain:
                token = step.enter()
                if token is WAIT:
                    token = await step.enter_wait_async()
                tokens.append(token)
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            return _unwind(chain, tokens, None, exc)
        return _unwind(chain, tokens, result, None)

    return run
