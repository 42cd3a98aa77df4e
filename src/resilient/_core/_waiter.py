"""A queued caller, as a core sees it: granted or not, and a way to wake it.

A core queues waiters and grants them in order; how a waiter waits (a lock a thread
blocks on, a future a task awaits) is the adapter's, in ``resilient._waiting._waiters``.
"""

from __future__ import annotations

__all__ = ["Waiter"]


class Waiter:
    """A queued caller. ``granted`` is set (under the core's lock) before ``wake()``.

    A waiter may be woken without a grant, to take a free slot itself (see
    ``resilient._core._bulkhead``); it then waits again if the slot was taken meanwhile.
    So ``wake()`` is called once per wait, and may be called once more just after the
    waiter's last wait ended (a waiter that serves itself a slot in the same instant as
    another thread wakes it): it must ignore that call.
    """

    __slots__ = ("granted", "lost", "ticket")

    def __init__(self) -> None:
        self.granted = False
        #: Woken to take a free slot, it found the slot taken: it is served next, directly.
        self.lost = False
        #: Its place in the order of arrival (set when it queues).
        self.ticket = 0

    def wake(self) -> bool:
        """Wake the waiting caller; callable from any thread, once per wait.

        Returns ``False`` if the caller can no longer be woken (its event loop is gone),
        so whoever granted it something can take that back.
        """
        raise NotImplementedError

    def nearby(self) -> bool:
        """Whether waking it costs no thread switch: it runs in the calling thread.

        A task of the event loop that is running the caller is woken by a callback of
        that loop; a blocked thread (or a task of another thread's loop) needs its
        thread woken by the kernel, which a running caller should not wait for.
        """
        return False

    def survives_fork(self) -> bool:
        """Whether the caller still exists in a child forked while it waits.

        Called in the child, in the thread that forked: only that thread's callers (its
        event loop's tasks) live on there.
        """
        raise NotImplementedError
