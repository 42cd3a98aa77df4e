"""The public bulkhead and its step: admission by the core, waiting by the adapters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from resilient._bulkhead_core import BulkheadCore, BulkheadMetrics
from resilient._decorate import COROUTINE, refuse_coroutine
from resilient._pipeline import PASS, WAIT, Wait
from resilient._policy import CorePolicy
from resilient._validate import Duration
from resilient._waiters import ThreadWaiter, async_waiter

__all__ = ["Bulkhead"]


class _BulkheadStep:
    """Take a slot on enter, give it back on every kind of exit."""

    __slots__ = ("_core", "_release")
    defers = False

    def __init__(self, core: BulkheadCore) -> None:
        self._core = core
        self._release = core.release

    def enter(self) -> Any:
        core = self._core
        slots = core._slots
        try:
            slots.pop()
        except IndexError:
            return WAIT
        if len(slots) < core._low_water:
            core._low_water = len(slots)
        return None

    def enter_wait(self, wait: Wait = WAIT) -> None:
        core = self._core
        waiter = ThreadWaiter()
        if core.enqueue(waiter):
            return
        try:
            woken = waiter.wait(core.max_wait)
        except BaseException:  # KeyboardInterrupt while blocked: leave the queue
            if core.cancel(waiter):
                core.release()
            raise
        if woken or core.timed_out(waiter):
            return
        raise core.rejection()

    async def enter_wait_async(self, wait: Wait = WAIT) -> None:
        core = self._core
        waiter = async_waiter()
        if core.enqueue(waiter):
            return
        try:
            woken = await waiter.wait(core.max_wait)
        except BaseException:  # cancelled while queued: leave without taking a slot
            if core.cancel(waiter):
                core.release()
            raise
        if woken or core.timed_out(waiter):
            return
        raise core.rejection()

    def exit_ok(self, token: None, result: Any) -> Any:
        self._release()
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        self._release()
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        self._release()
        return exc


class Bulkhead(CorePolicy[BulkheadCore]):
    """Limit how many calls run at once; callers beyond the limit wait briefly or fail fast.

    At most ``max_concurrent`` calls are in flight across every caller of one instance:
    threads and async tasks (asyncio or trio) alike. A caller that finds no free slot
    waits up to ``max_wait`` seconds, in FIFO order with the other waiters, then gets
    [`BulkheadFullError`][resilient.BulkheadFullError]. A slot is released however the call ends:
    return, exception, cancellation or timeout; a waiter that is cancelled leaves the
    queue without taking a slot.

    A bulkhead binds to no event loop: it can be created at import time and used from
    several event loops over a process's life, and from threads at the same time.

    Args:
        max_concurrent: The most calls in flight at once (>= 1).
        max_wait: Seconds a caller may wait for a slot (default 0: fail at once).
        name: A name for errors, events and metrics.
    """

    __slots__ = ("_step",)
    kind = "bulkhead"

    def __init__(
        self, max_concurrent: int, *, max_wait: Duration = 0.0, name: str | None = None
    ) -> None:
        self._core = BulkheadCore(max_concurrent, max_wait, name)
        self._step = _BulkheadStep(self._core)

    def _sync_step(self) -> _BulkheadStep:
        return self._step

    def _async_step(self) -> _BulkheadStep:
        return self._step

    # Alone, the bulkhead gets guards of its own: the step's logic written flat, since
    # an uncontended call should cost a deque pop and append, not a pipeline.

    def _sync_guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        core = self._core
        slots = core._slots
        release = core.release
        wait = self._step.enter_wait
        coroutine = COROUTINE  # a closure variable reads faster than a global

        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                slots.pop()
            except IndexError:
                wait()
            else:
                if len(slots) < core._low_water:
                    core._low_water = len(slots)
            try:
                result = fn(*args, **kwargs)
                if type(result) is coroutine:
                    refuse_coroutine(fn, result)
            finally:
                release()
            return result

        return guarded

    def _async_guard(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        core = self._core
        slots = core._slots
        release = core.release
        wait = self._step.enter_wait_async

        async def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                slots.pop()
            except IndexError:
                await wait()
            else:
                if len(slots) < core._low_water:
                    core._low_water = len(slots)
            try:
                return await fn(*args, **kwargs)
            finally:
                release()

        return guarded

    @property
    def max_concurrent(self) -> int:
        """The configured limit."""
        return self._core.max_concurrent

    @property
    def max_wait(self) -> float:
        """Seconds a caller may wait for a slot."""
        return self._core.max_wait

    def metrics(self) -> BulkheadMetrics:
        """In flight, waiting, rejected and the most ever in flight, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        m = self._core.metrics()
        return f"<Bulkhead {self.name!r} {m.in_flight}/{m.max_concurrent} in flight>"
