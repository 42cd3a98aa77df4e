"""A queued caller, as a core sees it: granted or not, and a way to wake it.

A core queues waiters and grants them in order; how a waiter waits (a lock a thread
blocks on, a future a task awaits) is the adapter's, in ``resilient._waiting._waiters``.
"""

from __future__ import annotations

__all__ = ["Waiter"]


class Waiter:
    """A queued caller. ``granted`` is set (under the core's lock) before ``wake()``."""

    __slots__ = ("granted",)

    def __init__(self) -> None:
        self.granted = False

    def wake(self) -> bool:
        """Wake the waiting caller; callable from any thread, at most once.

        Returns ``False`` if the caller can no longer be woken (its event loop is gone),
        so whoever granted it something can take that back.
        """
        raise NotImplementedError

    def survives_fork(self) -> bool:
        """Whether the caller still exists in a child forked while it waits.

        Called in the child, in the thread that forked: only that thread's callers (its
        event loop's tasks) live on there.
        """
        raise NotImplementedError
