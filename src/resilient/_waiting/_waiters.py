"""Wake-ups that cross threads and event loops: one waiter per waiting caller.

A policy core queues waiters and grants them in order; whoever releases a slot may be a
thread, an asyncio task or a trio task, and the waiter may be any of those too. So a
waiter owns the one primitive that its own world can wait on, created when the caller
starts waiting (never when the policy is created: policies exist before event loops do),
and exposes a ``wake()`` that is safe to call from any thread.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any, Final

from resilient._core._waiter import Waiter

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncioWaiter", "ThreadWaiter", "TrioWaiter", "Waiter", "async_waiter"]


class ThreadWaiter(Waiter):
    """A blocked thread; waits on a lock that ``wake()`` releases."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; return whether woken."""
        return self._lock.acquire(timeout=min(timeout, threading.TIMEOUT_MAX))

    def wake(self) -> bool:
        self._lock.release()
        return True

    def survives_fork(self) -> bool:
        return False  # a blocked thread cannot be the one that forked


class AsyncioWaiter(Waiter):
    """An asyncio task; waits on a future of its own loop, with a timer of that loop."""

    __slots__ = ("_future", "_loop", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self._thread = threading.get_ident()
        self._future: asyncio.Future[bool] = loop.create_future()

    async def wait(self, timeout: float) -> bool:
        """Suspend until woken (``True``) or ``timeout`` seconds passed (``False``).

        One timer handle of the loop, not a cancel scope: a queued caller pays for the
        wait it needs and nothing else (anyio's scope costs ~10x more).
        """
        timer = self._loop.call_later(min(timeout, _LONGEST), self._expire)
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
            self._set()
            return True
        try:
            self._loop.call_soon_threadsafe(self._set)
        except RuntimeError:  # the loop is closed: its task will never run again
            return False
        return True

    def survives_fork(self) -> bool:
        return self._thread == threading.get_ident()


class TrioWaiter(Waiter):
    """A trio task; waits on a ``trio.Event`` set through the run's token."""

    __slots__ = ("_event", "_thread", "_token")

    def __init__(self) -> None:
        import trio  # noqa: PLC0415 -- only under trio, which is then imported already

        super().__init__()
        self._event = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    async def wait(self, timeout: float) -> bool:
        """Suspend until woken (``True``) or ``timeout`` seconds passed (``False``)."""
        import trio  # noqa: PLC0415 -- imported already: this waiter exists under trio

        with trio.move_on_after(timeout):
            await self._event.wait()
            return True
        return False

    def wake(self) -> bool:
        try:
            self._token.run_sync_soon(self._event.set)
        except RuntimeError:  # the trio run is over: nobody is left to wake
            return False
        return True

    def survives_fork(self) -> bool:
        return self._thread == threading.get_ident()


# asyncio's timers take any float, but a huge delay overflows the selector's timeout.
_LONGEST: Final = 86_400.0 * 365


def async_waiter() -> AsyncioWaiter | TrioWaiter:
    """A waiter for the current task, whichever event loop runs it."""
    # No asyncio loop can run before asyncio is imported, and `import resilient` does
    # not import it for programs that never await.
    asyncio: Any = sys.modules.get("asyncio")
    loop: Any = None if asyncio is None else asyncio._get_running_loop()  # None outside
    if loop is not None:
        return AsyncioWaiter(loop)
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return TrioWaiter()
    raise RuntimeError("resilient: no running asyncio or trio event loop in this thread")
