"""What a forked child must not inherit: held locks and the parent's threads.

``os.fork()`` copies the whole process but only the thread that called it. A lock that
another thread held at that moment stays held in the child, where nobody will ever
release it; worker threads, blocked waiters and calls in flight in other threads are
still counted in the child but will never finish there. So, as the standard library's
``concurrent.futures`` and ``logging`` do, one ``os.register_at_fork(after_in_child=...)``
hook puts every lock of the library back to unlocked and lets each object that keeps
per-process structures (worker pools, waiter queues, bulkhead slots, half-open trials)
forget the threads that are gone.

Objects take part at construction, at no cost per call: :func:`new_lock` makes a lock
that is reinitialised in the child for as long as its owner lives, and an owner that has
an ``_after_fork_in_child()`` method has it called there, after its locks (one weak
reference per owner, so creating a policy stays cheap).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["ForkAware", "new_lock", "on_fork_in_child", "reinit_lock"]

logger = logging.getLogger("resilient")


class ForkAware(Protocol):
    """An owner with per-process structures to reset in a forked child."""

    def _after_fork_in_child(self) -> None: ...


# Locks cannot be referenced weakly, so each is filed under a weak reference to its
# owner (objects hashed by identity), which takes the entry away when the owner dies.
_owned: dict[weakref.ReferenceType[Any], list[threading.Lock]] = {}
_module_locks: list[threading.Lock] = []
_callbacks: list[Callable[[], None]] = []


def _forget(ref: weakref.ReferenceType[Any]) -> None:
    _owned.pop(ref, None)


def new_lock(owner: object = None) -> threading.Lock:
    """A ``threading.Lock`` that a forked child finds unlocked.

    Args:
        owner: The object the lock belongs to, held weakly: the lock is forgotten with
            it. If it has an ``_after_fork_in_child()`` method (:class:`ForkAware`),
            that runs in the child once the owner's locks are unlocked. ``None`` for a
            module's lock, kept for the life of the process.
    """
    lock = threading.Lock()
    if owner is None:
        _module_locks.append(lock)
    else:
        # An owner's second lock finds the entry of its first (equal references).
        _owned.setdefault(weakref.ref(owner, _forget), []).append(lock)
    return lock


def on_fork_in_child(callback: Callable[[], None]) -> None:
    """Call ``callback()`` in every forked child (a module's own reset)."""
    _callbacks.append(callback)


def reinit_lock(lock: Any) -> None:
    """Unlock ``lock`` (a ``Lock`` or an ``RLock``) in a forked child, in place."""
    # In place, so that closures which bound the lock (the rate limiter's fast path)
    # get the unlocked lock too. CPython 3.9+ and PyPy provide it (threading uses it).
    reinit = getattr(lock, "_at_fork_reinit", None)
    if reinit is not None:
        reinit()
    elif lock.locked():  # pragma: no cover - interpreters without _at_fork_reinit
        lock.release()  # a plain Lock may be released by any thread


def _after_fork_in_child() -> None:
    # Only the forking thread runs here: nothing else can touch these structures.
    for lock in _module_locks:
        reinit_lock(lock)
    # dict.copy() clones the table without allocating per entry, so no collection can
    # run in the middle of it and call _forget on a table being iterated.
    owners = list(_owned.copy().items())
    for _, locks in owners:
        for lock in locks:
            reinit_lock(lock)
    for callback in _callbacks:
        _run(callback)
    for ref, _ in owners:
        reset = getattr(ref(), "_after_fork_in_child", None)
        if reset is not None:
            _run(reset)


def _run(reset: Callable[[], None]) -> None:
    try:
        reset()
    except Exception:  # one object's failure must not leave the others unreset
        logger.exception("resetting %r after fork failed", reset)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
