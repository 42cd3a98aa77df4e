"""One timer per asyncio event loop for all timeouts, over lanes of deadlines.

``asyncio.timeout()`` costs ~5 µs and ``anyio.fail_after()`` ~17 µs per call, mostly to
schedule and cancel a timer handle each time. Here one ``call_at`` handle per loop is
armed for the earliest deadline of all. Deadlines of one timeout length arrive in
order (now + a constant), so each length gets a *lane*, a FIFO deque: adding a deadline
is an append, finished calls fall off the front, and nothing is ever sorted. Deadlines
of other lengths (a timeout cut short by an outer deadline) share a lane kept as a heap.
With steady traffic the handle is re-armed about once per timeout period, not per call.

When the handle fires, every expired entry's task is cancelled, as ``asyncio.timeout()``
does it, and the timeout step turns that cancellation into ``TimeoutExceededError``
using ``Task.uncancel()`` (Python 3.11+), so a cancellation from anyone else still
propagates as a cancellation.

An entry is the timeout's token for one call (``_timeout.LoopDeadline``), built once
per guarded call; the timer reads and writes only its ``state``, ``task`` and ``when``
(the :class:`Entry` protocol). A call that finishes only marks its entry done; the
entry leaves its lane when it reaches the front. Behind one slow call at the front,
though, finished entries would pile up for the whole timeout (timeout x call
rate of them), so a lane (and the heap) is swept of finished entries whenever it has
doubled since its last sweep: memory stays proportional to the calls in flight, and
the sweeps cost O(1) per call amortised.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import math
import threading
import weakref
from typing import Any, Final, Protocol

from resilient._core._fork import on_fork_in_child

__all__ = ["DONE", "FIRED", "PENDING", "Entry", "LoopTimer", "loop_timer"]

# An entry's states.
PENDING: Final = 0
DONE: Final = 1
FIRED: Final = 2


class Entry(Protocol):
    """What the timer needs of an armed deadline (the timeout's token is one)."""

    state: int
    """``PENDING`` until the call finishes (``DONE``) or the timer cancels it (``FIRED``)."""
    task: Any
    """The task to cancel at ``when`` (an ``asyncio.Task``)."""
    when: float
    """The deadline, on the loop's clock."""


# Below this length a lane (or the heap) is never swept: short queues cost nothing to
# keep, and sweeping them would be a cost on every few calls.
SWEEP_MIN: Final = 64


class LoopTimer:
    """The deadlines of one event loop; only ever touched from that loop's thread.

    Attributes:
        standard_time: Whether the loop's ``time()`` is :func:`time.monotonic` (so a
            timeout on the default clock can read the time once for both).
    """

    __slots__ = (
        "__weakref__",
        "_heap",
        "_heap_sweep_at",
        "_lanes",
        "_loop",
        "_seq",
        "_sweep_at",
        "_when",
        "standard_time",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # The loop is held weakly and armed handles are never kept: the loop owns its
        # timer, never the other way round, so a finished loop can be collected.
        self._loop = weakref.ref(loop)
        self._lanes: dict[float, collections.deque[Entry]] = {}
        self._heap: list[tuple[float, int, Entry]] = []
        self._seq = itertools.count()
        self._when = math.inf
        # The length at which each lane (and the heap) is next swept of finished entries.
        self._sweep_at: dict[float, int] = {}
        self._heap_sweep_at = SWEEP_MIN
        self.standard_time = getattr(type(loop), "time", None) is asyncio.BaseEventLoop.time

    def add(self, entry: Entry, seconds: float, regular: bool) -> None:
        """Cancel ``entry.task`` at ``entry.when`` unless it is marked done first.

        ``regular`` entries (deadline = now + ``seconds`` for a fixed ``seconds``) go to
        that length's FIFO lane; others to the heap.
        """
        if regular:
            lane = self._lanes.get(seconds)
            if lane is None:
                lane = self._lanes[seconds] = collections.deque()
            while lane and lane[0].state != PENDING:
                lane.popleft()
            lane.append(entry)
            if len(lane) > SWEEP_MIN and len(lane) > self._sweep_at.get(seconds, 0):
                self._sweep_lane(seconds, lane)
        else:
            heap = self._heap
            heapq.heappush(heap, (entry.when, next(self._seq), entry))
            if len(heap) > self._heap_sweep_at:
                self._sweep_heap()
        if entry.when < self._when:
            self._arm(entry.when)

    def _sweep_lane(self, seconds: float, lane: collections.deque[Entry]) -> None:
        # Filtering keeps the deadline order; the next sweep waits until the lane has
        # doubled again, so each entry is swept over O(1) times.
        pending = [entry for entry in lane if entry.state == PENDING]
        lane.clear()
        lane.extend(pending)
        self._sweep_at[seconds] = 2 * len(pending)

    def _sweep_heap(self) -> None:
        heap = self._heap
        heap[:] = [item for item in heap if item[2].state == PENDING]
        heapq.heapify(heap)
        self._heap_sweep_at = max(SWEEP_MIN, 2 * len(heap))

    def _arm(self, when: float) -> None:
        # An earlier handle is left to fire on its own (it then finds nothing due and
        # re-arms): cheaper than cancelling it, and no handle needs to be kept.
        loop = self._loop()
        if loop is not None:
            loop.call_at(when, self._fire, when)
            self._when = when

    def _fire(self, when: float) -> None:
        loop = self._loop()
        if loop is None:  # pragma: no cover - a collected loop runs no callbacks
            return
        if self._when not in (when, math.inf):
            return  # a superseded handle; the one armed for _when is still to come
        self._when = math.inf
        # Loops run handles up to their clock resolution early (15.6 ms on Windows;
        # uvloop counts milliseconds): what is due within it is due now.
        now = loop.time() + getattr(loop, "_clock_resolution", 0.0)
        earliest = math.inf
        for seconds, lane in list(self._lanes.items()):
            while lane:
                entry = lane[0]
                if entry.state == PENDING:
                    if entry.when > now:
                        earliest = min(earliest, entry.when)
                        break
                    entry.state = FIRED
                    entry.task.cancel()
                lane.popleft()
            if not lane:
                del self._lanes[seconds]
                self._sweep_at.pop(seconds, None)
        heap = self._heap
        while heap:
            deadline, _, entry = heap[0]
            if entry.state == PENDING:
                if deadline > now:
                    earliest = min(earliest, deadline)
                    break
                entry.state = FIRED
                entry.task.cancel()
            heapq.heappop(heap)
        if earliest < math.inf:
            self._arm(earliest)


_timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopTimer] = (
    weakref.WeakKeyDictionary()
)
# Most calls come from one loop: remember the last timer (whose loop it is, it knows,
# weakly). Rebound whole, so a thread running another loop never sees a torn pair.
_last: LoopTimer | None = None


def loop_timer(loop: asyncio.AbstractEventLoop) -> LoopTimer:
    """The timer of ``loop``, created on first use (loops come and go: weakly held)."""
    global _last  # noqa: PLW0603 -- a one-entry cache
    last = _last
    if last is not None and last._loop() is loop:
        return last
    timer = _timers.get(loop)
    if timer is None:
        timer = _timers[loop] = LoopTimer(loop)
    _last = timer
    return timer


def _after_fork_in_child() -> None:
    # A loop that was running in another thread will never run again in a forked child
    # (its thread is gone): drop its timer and the entries that keep its tasks alive.
    global _last  # noqa: PLW0603 -- the one-entry cache above
    _last = None
    me = threading.get_ident()
    for loop in list(_timers.keys()):
        if loop.is_running() and getattr(loop, "_thread_id", me) != me:
            del _timers[loop]


on_fork_in_child(_after_fork_in_child)
