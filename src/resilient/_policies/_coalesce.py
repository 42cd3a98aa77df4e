"""The public coalescing policy: its options, and the drivers that run and wait for flights.

Every decision is :class:`~resilient._core._coalesce.CoalesceCore`'s (who leads, who
follows, when a flight is over); the drivers below compute the key, run the call or
wait for it, and hand out its outcome.

* Sync: the leader runs the call in its own thread; followers block on a
  :class:`~resilient._waiting._waiters.ThreadWaiter` until it settles. A thread cannot
  be cancelled, so a follower interrupted while waiting just stops waiting.
* Async (asyncio and trio): nobody's task runs the call. The leader starts it in a
  task of its own (an asyncio task; a trio system task), in a copy of the leader's
  context, and then waits for it like every follower. So a caller cancelled while
  waiting (a timeout, a client gone) leaves, and the call goes on for the others; when
  the *last* caller leaves, the call is cancelled, as nobody wants its outcome any more.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

from resilient._core._coalesce import (
    KIND,
    CoalesceCore,
    CoalesceMetrics,
    Flight,
    check_key,
    copy_error,
    default_key,
)
from resilient._policies._policy import CorePolicy
from resilient._waiting._waiters import AsyncioWaiter, ThreadWaiter, async_waiter

if TYPE_CHECKING:
    import asyncio

__all__ = ["Coalesce", "CoalesceMetrics", "call_key"]

_FOREVER: Final = 1e9  # a flight is waited for until it settles; this is only the cap

# Strong references to the asyncio tasks running flights: the event loop keeps only
# weak ones, and a flight nobody waits for any more must still end properly.
_TASKS: set[asyncio.Task[None]] = set()


def call_key(
    kind: str,
    key: Callable[..., Hashable] | None,
    target: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Hashable:
    """The key of one call: ``key(*args, **kwargs)``, or the function and its arguments.

    Hashed here, outside every lock, so that an unhashable key (or a ``__hash__`` that
    raises) fails the call before any flight or entry is touched.
    """
    if key is None:
        return default_key(kind, target, args, kwargs)  # type: ignore[no-any-return]
    made = key(*args, **kwargs)
    try:
        hash(made)
    except TypeError:
        raise TypeError(
            f"{kind}: key= returned {type(made).__name__}, which cannot be hashed"
        ) from None
    return made


def _outcome(flight: Flight, leader: bool) -> Any:
    """The flight's result, or its error: the object itself for the leader, a copy else."""
    error = flight.error
    if error is None:
        return flight.result
    raised = error if leader else copy_error(error)
    try:
        raise raised
    finally:
        del error, raised


class Coalesce(CorePolicy[CoalesceCore]):
    """Concurrent identical calls share one call in flight (Go's singleflight).

    The first call of a key runs the function; calls with the same key made while it
    runs wait for it instead of running it again, and get its outcome: its result (the
    same object), or its exception. Once it has ended, the next call of that key runs
    the function again: to keep results for a while, put a [`Cache`][resilient.Cache]
    in front (``compose(Cache(ttl=30), Coalesce(), ...)``).

    Exceptions: the call that ran the function raises the exception object itself;
    every other waiter raises a shallow copy of it (same type, arguments, attributes,
    cause and traceback), so that many threads or tasks raising it at once do not all
    add their frames to one traceback. An exception class that cannot be copied is
    raised as the same object by everyone.

    Interrupts and cancellation: a waiter cancelled or interrupted while it waits stops
    waiting, and the call goes on for the others. Sync calls run in the leader's thread:
    if the leader itself is interrupted (``KeyboardInterrupt``), the interrupt is its
    own; the followers start over, one of them running the function anew. Async calls
    run in a task of their own (in a copy of the leader's context), so the leader's
    cancellation is like any waiter's; the call is cancelled only when no caller waits
    for it any more. Sync and async calls never share a flight.

    Args:
        key: A function of the call's arguments returning a hashable key (it runs for
            every call, outside every lock). Default: the function called and its
            arguments (keyword arguments in any order), which must then be hashable,
            else the call raises ``TypeError`` without running. With a ``key``, calls
            of different functions through one policy share flights when their keys
            are equal.
        name: A name for events and metrics.
    """

    __slots__ = ("_key",)
    kind = KIND
    _wants_target = True

    def __init__(
        self, *, key: Callable[..., Hashable] | None = None, name: str | None = None
    ) -> None:
        self._core = CoalesceCore(name)
        self._key = check_key(key)
        self._config: dict[str, Any] = {}  # reconfigure(): nothing to change

    # The key function is read by the wrappers made at decoration time.
    _fixed_options = ("name", "key")

    def _sync_wrap(self, fn: Callable[..., Any], target: object = None) -> Callable[..., Any]:
        core = self._core
        key_of = self._key
        scope = fn if target is None else target

        def guarded(*args: Any, **kwargs: Any) -> Any:
            key = call_key(KIND, key_of, scope, args, kwargs)
            while True:
                flight, leader = core.join(key, "sync")
                if leader:
                    try:
                        result = fn(*args, **kwargs)
                    except Exception as exc:
                        core.settle(flight, exc, None)
                        raise
                    except BaseException:
                        core.abandon(flight)  # an interrupt: the followers start over
                        raise
                    core.settle(flight, None, result)
                    return result
                waiter = ThreadWaiter()
                try:
                    if core.wait_on(flight, waiter):
                        while not flight.settled:
                            waiter.wait(_FOREVER)
                except BaseException:
                    core.leave(flight, waiter)
                    raise
                if not flight.abandoned:
                    return _outcome(flight, leader=False)

        return guarded

    def _async_wrap(
        self, fn: Callable[..., Awaitable[Any]], target: object = None
    ) -> Callable[..., Awaitable[Any]]:
        core = self._core
        key_of = self._key
        scope = fn if target is None else target

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            key = call_key(KIND, key_of, scope, args, kwargs)
            while True:
                flight, leader = core.join(key, "async")
                waiter: Any = None
                try:
                    waiter = async_waiter()
                    if leader:
                        _start(core, flight, waiter, fn, args, kwargs)
                    if core.wait_on(flight, waiter):
                        while not flight.settled:
                            await waiter.wait(_FOREVER)
                except BaseException:
                    if leader and flight.cancel is None:
                        core.abandon(flight)  # it never started: nobody else may wait
                    else:
                        core.leave(flight, waiter)
                    raise
                if not flight.abandoned:
                    return _outcome(flight, leader)
                if leader and flight.error is not None:
                    # An interrupt raised by the call: the leader's to raise.
                    return _outcome(flight, leader)

        return guarded

    # -- read-outs ---------------------------------------------------------------------

    @property
    def key(self) -> Callable[..., Hashable] | None:
        """The key function, or ``None`` for the default (the function and its arguments)."""
        return self._key

    def metrics(self) -> CoalesceMetrics:
        """Flights started (leaders), calls that shared one (followers), and the rest."""
        return self._core.metrics()

    def __enter__(self) -> None:
        raise TypeError("coalescing needs the call's arguments: decorate, or use call()")

    async def __aenter__(self) -> None:
        raise TypeError("coalescing needs the call's arguments: decorate, or use call_async()")

    def __repr__(self) -> str:
        return f"<Coalesce {self.name!r} in_flight={self._core.in_flight()}>"


def _start(
    core: CoalesceCore,
    flight: Flight,
    waiter: object,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """Run the flight's call in a task of its own, on the leader's event loop."""
    context = contextvars.copy_context()
    if isinstance(waiter, AsyncioWaiter):
        loop = waiter._loop
        task = context.run(loop.create_task, _fly(core, flight, fn, args, kwargs))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

        def cancel_task() -> None:
            # A closed loop (RuntimeError) runs nothing any more: nothing to cancel.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)

        flight.cancel = cancel_task
        return
    import trio  # noqa: PLC0415 -- a TrioWaiter exists: trio is imported and running

    scope = trio.CancelScope()
    token = trio.lowlevel.current_trio_token()

    def cancel_scope() -> None:
        with contextlib.suppress(RuntimeError):  # the run is over: nothing runs
            token.run_sync_soon(scope.cancel)

    trio.lowlevel.spawn_system_task(
        _fly_trio,
        scope,
        core,
        flight,
        fn,
        args,
        kwargs,
        name=f"resilient coalesce {fn!r}",
        context=context,
    )
    flight.cancel = cancel_scope


async def _fly(
    core: CoalesceCore,
    flight: Flight,
    fn: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    """The flight's call, in its own task: its outcome goes to whoever waits."""
    try:
        result = await fn(*args, **kwargs)
    except Exception as exc:
        core.settle(flight, exc, None)
    except BaseException as exc:
        cancelled = _is_cancellation(exc)
        # Cancelled: nobody waits any more (or the event loop is closing). An interrupt
        # raised by the call is the leader's to raise; its followers start over.
        core.abandon(flight, None if cancelled else exc)
        if cancelled:
            raise
    else:
        core.settle(flight, None, result)


async def _fly_trio(scope: Any, *args: Any) -> None:
    with scope:
        await _fly(*args)


def _is_cancellation(exc: BaseException) -> bool:
    import sys  # noqa: PLC0415 -- only on the rare way out

    for module, name in (("asyncio", "CancelledError"), ("trio", "Cancelled")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False
