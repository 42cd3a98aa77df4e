"""``with`` blocks whose token lives in an object held by the ``with`` statement itself.

A signal handler may raise (``KeyboardInterrupt``, a ``SIGALRM`` timeout) at the first
line of any Python function, before it has done anything: an ``__exit__`` included, and
``with`` never calls it again. Whatever the block held must then come back on its own.

``with policy:`` looks ``__exit__`` up before it calls ``__enter__`` (every version:
3.11 to 3.13 look up both then call, 3.14 looks ``__exit__`` up first), and keeps the
bound ``__exit__`` until it calls it. So a policy's ``__exit__`` is a descriptor
(see :func:`block_exits`): the lookup makes a :class:`Block` and binds its exit; the policy's
``__enter__``, called next in the same thread, adopts that block and keeps its token (a
breaker's ticket, a bulkhead's slot) there. The block lives exactly as long as the
statement holds its exit, plus whatever holds the frame of an interrupted exit (a
traceback). When its exit never ran, what it held comes back once it is dropped: a
breaker's trial and a bulkhead's slot are each given back when their holder is collected
(see ``Trial`` and ``_SlotBlock``), nothing needs an exit call.

``__enter__``/``__exit__`` called by hand, or found on the class (as
``contextlib.ExitStack`` does), keep the token on the policy's token stack instead, as
the only place that a later, separate ``__exit__`` call can find it.
"""

from __future__ import annotations

import collections
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, cast

from resilient._core._outcome import NO_RESULT
from resilient._policies._pipeline import Step, Wait

if TYPE_CHECKING:
    from resilient._policies._policy import Policy

__all__ = [
    "DONE",
    "ENTERED",
    "FINISHED",
    "FRESH",
    "PENDING",
    "Block",
    "block_exits",
    "exit_block",
]

FRESH: Final = 0  # exit bound by a lookup, not entered
ENTERED: Final = 1  # entered by the policy's __enter__: holds its token
DONE: Final = 2  # exited, or adopted by an __enter__ that has not (yet) succeeded


@types.coroutine
def _finished() -> Generator[None, None, None]:
    return
    yield  # pragma: no cover - makes this a generator, which returns at once


FINISHED: Final[Awaitable[None]] = _finished()
"""An awaitable that is already over: awaiting it gives ``None`` and runs no Python code.

An exhausted generator marked as a coroutine (``types.coroutine``): ``await`` resumes it,
and a finished generator returns at once, in C, any number of times, from any task or
thread (asyncio and trio alike). ``__aenter__``/``__aexit__`` do their work before they
return and hand back this, so no Python frame runs between the work and the block.
"""
collections.deque(cast("Generator[None, None, None]", FINISHED), maxlen=0)


class _Gone:
    __slots__ = ("__weakref__",)


class _Pending(threading.local):
    # The block whose exit the last `__exit__` lookup in this thread bound; weak, so that
    # a lookup nobody keeps (`hasattr(policy, "__exit__")`) leaves nothing to adopt.
    ref: weakref.ref[Block] = weakref.ref(_Gone())  # type: ignore[arg-type]  # dead at once


PENDING: Final = _Pending()
"""Per thread: ``ref()`` is the block that a policy's ``__enter__`` adopts if it is live,
of that policy and still fresh (``__enter__`` called by hand or through the class finds
none, and uses the token stack)."""


class Block:
    """One ``with`` block of a policy with a step: the step's token, held for the block.

    A block whose exit never runs leaves nothing behind once dropped: the token goes with
    it (a breaker's half-open trial comes back when collected, see ``Trial``).
    """

    __slots__ = ("__weakref__", "_policy", "_state", "_step", "_token")
    _policy: Policy
    _state: int  # FRESH, ENTERED or DONE
    _step: Step
    _token: Any

    # Made by block_exits() without __init__ (the lookup is on every block's path):
    # _policy and _state are set there.

    def enter(self) -> None:
        """Admit the block (or raise the rejection); keep the token here."""
        policy = self._policy
        step = policy._cm_step(policy._sync_step(), "with")
        token = step.enter()
        if type(token) is Wait:
            return self._wait(step, token)
        self._step = step
        self._token = token
        self._state = ENTERED
        return None

    # The sync and async twins below differ only in async/await and names
    # (tests/test_twins.py): aenter() admits at once and returns an awaitable that is
    # already over, or the coroutine that waits.

    def aenter(self) -> Awaitable[None]:
        """As :meth:`enter` for ``async with``; the awaitable waits, if the step must."""
        policy = self._policy
        step = policy._cm_step(policy._async_step(), "async with")
        token = step.enter()
        if type(token) is Wait:
            return self._wait_async(step, token)
        self._step = step
        self._token = token
        self._state = ENTERED
        return FINISHED

    def _wait(self, step: Step, wait: Wait) -> None:
        token = step.enter_wait(wait)
        self._step = step
        self._token = token
        self._state = ENTERED

    async def _wait_async(self, step: Step, wait: Wait) -> None:
        token = await step.enter_wait_async(wait)
        self._step = step
        self._token = token
        self._state = ENTERED

    def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """End the block: report how it ended to the step."""
        if self._state != ENTERED:
            return self._unpaired_exit(exc_type, exc, tb)
        self._state = DONE
        return exit_block(self._step, self._token, exc)

    def aexit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[bool | None]:
        """As :meth:`exit` for ``async with``: the work is done when this returns."""
        if self._state != ENTERED:
            self._check_unpaired()
            return self._policy._stack_aexit(exc_type, exc, tb)
        self.exit(exc_type, exc, tb)
        return FINISHED

    # Not entered through this block: `__exit__` called by hand, or a block whose
    # `__enter__` went to the token stack. The token is there.

    def _unpaired_exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._check_unpaired()
        return self._policy._stack_exit(exc_type, exc, tb)

    def _check_unpaired(self) -> None:
        if self._state != FRESH:
            raise RuntimeError(f"{self._policy!r}: exit without a matching enter")


class _SyncExit(property):
    # Looked up on the class (contextlib.ExitStack binds it to the policy itself), the
    # property is returned as is: calling it is the token-stack exit.
    def __call__(
        self,
        policy: Policy,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return policy._stack_exit(exc_type, exc, tb)


class _AsyncExit(property):
    def __call__(
        self,
        policy: Policy,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[bool]:
        return policy._stack_aexit(exc_type, exc, tb)


def block_exits(kind: type[Block]) -> tuple[property, property]:
    """A policy class's ``__exit__`` and ``__aexit__``, for ``with`` blocks of ``kind``.

    Each is a property: looked up on an instance (what ``with`` does, and a call by
    hand), it makes a fresh block, notes it as the one the next ``__enter__`` in this
    thread may adopt, and returns the block's bound exit. Looked up on the class
    (``contextlib.ExitStack``), it is the token-stack exit, called with the policy.
    """
    new, ref, pending = object.__new__, weakref.ref, PENDING

    def bind_exit(policy: Policy) -> Callable[..., bool]:
        block = new(kind)
        block._policy = policy
        block._state = FRESH
        pending.ref = ref(block)
        return block.exit

    def bind_aexit(policy: Policy) -> Callable[..., Awaitable[bool | None]]:
        block = new(kind)
        block._policy = policy
        block._state = FRESH
        pending.ref = ref(block)
        return block.aexit

    return _SyncExit(bind_exit), _AsyncExit(bind_aexit)


def exit_block(step: Step, token: Any, exc: BaseException | None) -> bool:
    """End a ``with`` block: a block has no result to replace, so errors propagate."""
    if exc is None:
        step.exit_ok(token, NO_RESULT)
        return False
    if isinstance(exc, Exception):
        step.exit_error(token, exc)
        return False
    converted = step.exit_cancel(token, exc)
    if converted is not exc:
        try:
            raise converted from exc
        finally:
            # The traceback holds this frame: keeping the error in it would be a cycle.
            del converted, exc
    return False
