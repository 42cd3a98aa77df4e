"""Wake-ups that cross threads and event loops: one waiter per waiting caller.

A policy core queues waiters and grants them in order; whoever releases a slot may be a
thread, an asyncio task or a trio task, and the waiter may be any of those too. So a
waiter owns the one primitive that its own world can wait on, created when the caller
starts waiting (never when the policy is created: policies exist before event loops do),
and exposes a ``wake()`` that is safe to call from any thread.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from resilient._core._waiter import Waiter

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncioWaiter", "ThreadWaiter", "TrioWaiter", "Waiter", "async_waiter"]


class ThreadWaiter(Waiter):
    """A blocked thread; waits on a lock that ``wake()`` releases."""

    __slots__ = ("_deadline", "_lock")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lock.acquire()
        self._deadline = 0.0

    def wait(self, timeout: float) -> bool:
        """Block until woken (``True``) or ``timeout`` seconds after the first wait began.

        Called again after a wake-up that brought no slot, it waits out what is left.
        """
        if not self._deadline:
            self._deadline = time.monotonic() + timeout
            return self._lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))
        left = min(max(self._deadline - time.monotonic(), 0.0), threading.TIMEOUT_MAX)
        return self._lock.acquire(timeout=left)

    def wake(self) -> bool:
        with contextlib.suppress(RuntimeError):  # released already: a wake-up too many
            self._lock.release()
        return True

    def survives_fork(self) -> bool:
        return False  # a blocked thread cannot be the one that forked


class AsyncioWaiter(Waiter):
    """An asyncio task; waits on a future of its own loop, with a timer of that loop."""

    __slots__ = ("_deadline", "_future", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Waiter.__init__ written out: one call less on every contended call.
        self.granted = self.lost = False
        self.ticket = 0
        self._loop = loop
        self._thread = threading.get_ident()
        self._future: asyncio.Future[bool] = loop.create_future()
        self._deadline: float | None = None  # on the loop's clock, once it waits

    def wait(self, timeout: float) -> Awaitable[bool]:
        """Suspend until woken (``True``) or ``timeout`` seconds passed (``False``).

        The first wait's timeout is one entry in the loop's shared timer for waits of
        this length (:class:`_Expiry`), not a timer handle of its own: a queued caller
        pays for the wait it needs and little else (a handle of its own costs ~40% of a
        contended call; anyio's cancel scope ~10x more). Called again after a wake-up
        that brought no slot (rare), it waits out what is left with a handle of its own.
        """
        if self._deadline is None:
            _expiry(self._loop, timeout).add(self)  # sets _deadline
            return self._future  # awaited as it is: no coroutine frame of our own
        return self._wait_again()

    async def _wait_again(self) -> bool:
        loop = self._loop
        if self._future.done():  # woken before: a fresh future for this wait
            self._future = loop.create_future()
        timer = loop.call_at(self._deadline or 0.0, self._expire)  # set: it waited before
        try:
            return await self._future
        finally:
            timer.cancel()

    def _set(self) -> None:
        if not self._future.done():
            self._future.set_result(True)

    def _expire(self) -> None:
        if not self._future.done():
            self._future.set_result(False)

    def wake(self) -> bool:
        if threading.get_ident() == self._thread:
            # Released in the loop's own thread: no need to go through the loop's
            # self-pipe (a system call) to reach it.
            if self._loop.is_closed():
                return False
            future = self._future
            if not future.done():
                future.set_result(True)
            return True
        try:
            self._loop.call_soon_threadsafe(self._set)
        except RuntimeError:  # the loop is closed: its task will never run again
            return False
        return True

    def nearby(self) -> bool:
        return self._thread == threading.get_ident()

    def survives_fork(self) -> bool:
        return self._thread == threading.get_ident()


class TrioWaiter(Waiter):
    """A trio task; waits on a ``trio.Event`` set through the run's token."""

    __slots__ = ("_deadline", "_event", "_thread", "_token")

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 -- only under trio, which is then imported already

        super().__init__()
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        self._deadline: float | None = None

    async def wait(self, timeout: float) -> bool:
        """Suspend until woken (``True``) or ``timeout`` seconds passed (``False``).

        Called again after a wake-up that brought no slot, it waits out what is left.
        """
        import trio  # noqa: PLC0415 -- imported already: this waiter exists under trio

        if self._deadline is None:
            self._deadline = trio.current_time() + timeout
        elif self._event.is_set():  # woken before: a fresh event for this wait
            self._event = trio.Event()
        with trio.move_on_at(self._deadline):
            await self._event.wait()
            return True
        return False

    def _set(self) -> None:
        # The event current when the callback runs, in the run's thread: a wait that
        # began after the wake-up was sent has replaced the one set by the last.
        self._event.set()

    def wake(self) -> bool:
        try:
            self._token.run_sync_soon(self._set)
        except RuntimeError:  # the trio run is over: nobody is left to wake
            return False
        return True

    def nearby(self) -> bool:
        return self._thread == threading.get_ident()

    def survives_fork(self) -> bool:
        return self._thread == threading.get_ident()


# asyncio's timers take any float, but a huge delay overflows the selector's timeout.
_LONGEST: Final = 86_400.0 * 365


class _Expiry:
    """The timeouts of one event loop's waiters that wait equally long, on one timer.

    Such waiters begin waiting in order, so their deadlines come in order: a deque of
    the waiters (each with its ``_deadline``) and one timer handle, set for the earliest
    deadline, serve them all. A timer handle per waiter would cost a heap push and a
    cancelled entry in the loop's heap per wait. Waiters woken already are dropped from
    the front as new ones come, so the deque holds about as many entries as there are
    waiters.
    """

    __slots__ = ("_entries", "_handle", "_loop", "_wait")

    def __init__(self, loop: asyncio.AbstractEventLoop, wait: float) -> None:
        self._loop = loop
        self._wait = min(wait, _LONGEST)
        self._entries: collections.deque[AsyncioWaiter] = collections.deque()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, waiter: AsyncioWaiter) -> None:
        """Expire ``waiter`` ``wait`` seconds from now (its ``_deadline``, loop time)."""
        entries = self._entries
        while entries and entries[0]._future.done():
            entries.popleft()
        deadline = waiter._deadline = self._loop.time() + self._wait
        entries.append(waiter)
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        self._handle = None
        entries = self._entries
        now = self._loop.time()
        while entries:
            deadline = entries[0]._deadline or 0.0  # set by add()
            if deadline > now and not entries[0]._future.done():
                # The next deadline (or the same, if the timer fired a hair early).
                self._handle = self._loop.call_at(deadline, self._fire)
                return
            entries.popleft()._expire()  # a no-op for a waiter woken already


# One _Expiry per wait length for the loop running in each thread (a thread runs one
# loop at a time; a loop that stops and another that starts in the thread get their own).
_expiries = threading.local()


def _expiry(loop: asyncio.AbstractEventLoop, wait: float) -> _Expiry:
    expiry: _Expiry | None = getattr(_expiries, "last", None)
    if expiry is not None and expiry._loop is loop and expiry._wait == wait:
        return expiry  # the common case: one bulkhead's waiters, one after the other
    by_wait: dict[float, _Expiry] = _expiries.__dict__.setdefault("by_wait", {})
    expiry = by_wait.get(wait)
    if expiry is None or expiry._loop is not loop:
        expiry = by_wait[wait] = _Expiry(loop, wait)
    _expiries.last = expiry
    return expiry


# asyncio._get_running_loop, once asyncio is imported (looked up once, not per wait).
_get_running_loop: Callable[[], Any] | None = None


def _remember(get_loop: Callable[[], Any]) -> Callable[[], Any]:
    global _get_running_loop  # noqa: PLW0603 -- a cache, filled once
    _get_running_loop = get_loop
    return get_loop


def async_waiter() -> AsyncioWaiter | TrioWaiter:
    """A waiter for the current task, whichever event loop runs it."""
    # No asyncio loop can run before asyncio is imported, and `import resilient` does
    # not import it for programs that never await.
    get_loop = _get_running_loop
    if get_loop is None:
        asyncio: Any = sys.modules.get("asyncio")
        if asyncio is not None:
            get_loop = _remember(asyncio._get_running_loop)
    loop: Any = None if get_loop is None else get_loop()  # None outside a loop
    if loop is not None:
        return AsyncioWaiter(loop)
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return TrioWaiter()
    raise RuntimeError("resilient: no running asyncio or trio event loop in this thread")
