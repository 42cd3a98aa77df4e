"""The current deadline, carried in a context variable, and ``remaining()``.

Deadlines nest: entering a timeout while one is already running keeps the tighter of
the two. Because the deadline lives in a :class:`contextvars.ContextVar`, it follows
the code that runs under it: into awaited coroutines, into tasks started from it, and
into the worker thread of a sync timeout (which runs in a copy of the caller's context).
"""

from __future__ import annotations

import contextvars
from typing import Final, TypeAlias

from resilient._core._clock import Clock

__all__ = ["DEADLINE", "Deadline", "effective_timeout", "remaining"]


Deadline: TypeAlias = "tuple[float, Clock]"
"""An absolute deadline: (time on the clock, the clock). A tuple: one is built per call."""

DEADLINE: Final[contextvars.ContextVar[Deadline | None]] = contextvars.ContextVar(
    "resilient_deadline", default=None
)


def remaining() -> float | None:
    """Seconds left before the innermost effective deadline, or ``None`` if there is none.

    Pass it on to whatever you call next, so the whole chain respects one budget::

        @Timeout(2.0)
        async def handler():
            async with httpx.AsyncClient(timeout=resilient.remaining()) as client: ...

    Never negative: a deadline that has passed gives ``0.0``.
    """
    deadline = DEADLINE.get()
    if deadline is None:
        return None
    left = deadline[0] - deadline[1].monotonic()
    return max(0.0, left)


def effective_timeout(seconds: float) -> float:
    """The tighter of ``seconds`` and what the current deadline leaves."""
    deadline = DEADLINE.get()
    if deadline is None:
        return seconds
    left = deadline[0] - deadline[1].monotonic()
    return min(seconds, left)
