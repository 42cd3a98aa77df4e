"""Counting without a lock, and the switch that turns every lock-free path off.

``next()`` on an ``itertools.count`` is one C call, so under the GIL it is atomic: many
threads may draw from one counter and no draw is lost or repeated. Hot paths (the
breaker's ring slots and rejections) count this way instead of taking a lock.

That relies on the GIL. On a free-threaded CPython (``sys._is_gil_enabled()`` false) an
``itertools.count`` is not atomic, so :data:`LOCKED` is true there and every path that
would rely on it takes its lock instead. ``RESILIENT_FORCE_LOCKED=1`` in the environment
forces the same on a normal build, so that the locked paths can be tested (and timed)
where no free-threaded interpreter is installed. It is read once, at import.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from typing import Final

from resilient._core._fork import new_lock

__all__ = ["LOCKED", "LockedCount", "counted", "new_counter"]


def _gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)  # Python 3.13+
    return True if check is None else bool(check())


LOCKED: Final[bool] = os.environ.get("RESILIENT_FORCE_LOCKED", "") == "1" or not _gil_enabled()
"""Whether the lock-free fast paths are off (free-threaded build, or forced)."""


def counted(counter: Iterator[int]) -> int:
    """How many times ``next()`` was called on a fresh ``itertools.count()``.

    Its repr is ``count(N)``; the pickling route to N is deprecated since Python 3.12.
    """
    return int(repr(counter)[6:-1])


class LockedCount:
    """An ``itertools.count()`` whose ``next()`` takes a lock: what :data:`LOCKED` uses.

    Its repr is ``count(N)`` as the real one's, so :func:`counted` reads both.
    """

    __slots__ = ("__weakref__", "_lock", "_n")

    def __init__(self) -> None:
        self._n = 0
        self._lock = new_lock(self)

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        with self._lock:
            n = self._n
            self._n = n + 1
        return n

    def __repr__(self) -> str:
        return f"count({self._n})"


def new_counter() -> Iterator[int]:
    """A counter for ``next()`` from many threads: lock-free under the GIL, locked if not."""
    if LOCKED:  # pragma: no cover - the RESILIENT_FORCE_LOCKED=1 run
        return LockedCount()
    return itertools.count()
