"""The bulkhead's admission logic, sans I/O: slots, a FIFO queue of waiters, counts.

Free slots are tokens in a deque. ``deque.pop()`` and ``deque.append()`` are single C
calls, atomic under the GIL (and internally locked on free-threaded builds), so an
uncontended caller takes and returns its slot without the lock. The lock guards the
waiter queue: a releaser that sees waiters hands free slots to them, first come first
served, so waiters are admitted in arrival order. (A newcomer may take a slot in the
instant between its return to the pool and the hand-off; it then releases it to the
same queue, so no waiter is skipped or stranded.)
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from resilient._core._atomic import counted, new_counter
from resilient._core._errors import BulkheadFullError, bulkhead_full
from resilient._core._events import GLOBAL_LISTENERS, NOTABLE_LISTENERS, CallRejected, EventSource
from resilient._core._fork import new_lock
from resilient._core._validate import check_duration, check_int, check_name
from resilient._core._waiter import Waiter

__all__ = ["BulkheadCore", "BulkheadMetrics", "SlotClaim"]

KIND: Final = "bulkhead"


@dataclass(frozen=True, slots=True)
class BulkheadMetrics:
    """A bulkhead's counts at one moment.

    Attributes:
        max_concurrent: The configured limit.
        in_flight: Calls holding a slot now.
        waiting: Callers queued for a slot now.
        rejected: Callers refused since the bulkhead was created.
        max_observed: The most calls ever in flight at once.
        admitted: Slots granted since the bulkhead was created (at once or after a
            wait); ``rejected / (admitted + rejected)`` is the rejection ratio.
    """

    max_concurrent: int
    in_flight: int
    waiting: int
    rejected: int
    max_observed: int
    # Left out of ==, so that snapshots compare by state and their other counts.
    admitted: int = field(default=0, compare=False)


class SlotClaim(weakref.ref):  # type: ignore[type-arg]
    """A ``with`` block's claim on a slot: a weak reference to the block, kept by the core.

    ``held`` is set just before the block takes its slot and cleared just before the slot
    goes back, each with no call in between (a signal handler raises only at a call), so
    it is the truth at every instant. The callback is the ``append`` of the core's
    ``_lost`` deque, a C function: a block collected with its claim still held (its exit
    never ran) puts the claim there without running Python code, and
    :meth:`BulkheadCore.take_back_lost` returns the slot. The core keeps every claim in
    ``_live`` until its block ends, so the callback also runs when the block is collected
    in a reference cycle (the collector skips the callbacks of unreachable references).
    """

    __slots__ = ("held", "waiter")
    held: bool  # unset until the block first sets it: read with getattr(claim, "held", False)
    #: While the block waits for a slot, its waiter: a block dropped then leaves the queue
    #: (or gives back what was handed to it) when its claim is taken back.
    waiter: Waiter | None


class BulkheadCore(EventSource):
    """Slots, waiters and counts of one bulkhead; see the module docstring."""

    __slots__ = (
        "_live",
        "_lock",
        "_lost",
        "_low_water",
        "_refused",
        "_released",
        "_slots",
        "_waiters",
        "max_concurrent",
        "max_wait",
        "name",
        "rejected",
    )

    def __init__(self, max_concurrent: int, max_wait: object, name: str | None) -> None:
        super().__init__()
        self.name = check_name(name)
        self.max_concurrent = check_int("max_concurrent", max_concurrent)
        wait = check_duration("max_wait", max_wait)
        self.max_wait = wait
        # Bounded: a slot taken before a fork and returned in the child (which starts
        # with every slot free) is dropped rather than raising the limit.
        self._slots: collections.deque[bool] = collections.deque(
            [True] * self.max_concurrent, maxlen=self.max_concurrent
        )
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._lock = new_lock(self)
        self._low_water = self.max_concurrent
        self.rejected = 0
        # Slots given back, counted without a lock where the GIL allows (see
        # _atomic.new_counter): admitted calls are those plus the ones in flight. Counted
        # here, once, rather than on each of the inlined fast paths that take a slot.
        self._released = new_counter()
        # Callers refused at once without the lock (see full()), one atomic draw each.
        self._refused = new_counter()
        # The claims of `with` blocks on their slots, and those whose block was dropped
        # before its exit ran (see SlotClaim).
        self._live: set[SlotClaim] = set()
        self._lost: collections.deque[SlotClaim] = collections.deque()

    def took(self, free: int) -> None:
        """A caller took a slot and left ``free`` slots: keep the lowest count seen.

        The one place the low-water mark (``max_observed``) is written. Callers that
        take slots lock-free tell it only when ``free`` is below the mark, which only
        ever falls: at most ``max_concurrent`` times in a bulkhead's life.
        """
        if free < self._low_water:
            self._low_water = free

    def take(self) -> bool:
        """Take a free slot at once, lock-free; ``False`` if none is free."""
        slots = self._slots
        try:
            slots.pop()
            if len(slots) < self._low_water:
                self.took(len(slots))
        except IndexError:
            return False
        except BaseException:  # pragma: no cover - tests/test_interrupts.py (no tracer)
            # An interrupt at a call after the pop (the interpreter checks for signals
            # after a call, not before): the slot is ours to give back.
            slots.append(True)
            raise
        return True

    def enqueue(self, waiter: Waiter) -> bool:
        """Take a slot or queue ``waiter``; ``True`` if the slot is taken already.

        Either way ``waiter.granted`` says whether ``waiter`` holds a slot, at every
        instant: it is set before the slot is taken, with no call in between (a signal
        handler raises only at a call), so an interrupt anywhere leaves the truth in it.

        Raises:
            BulkheadFullError: no slot is free and ``max_wait`` is 0.
        """
        if self._lost:
            self.take_back_lost()
        slots = self._slots
        with self._lock:
            waiter.granted = True
            try:
                slots.pop()
            except IndexError:
                waiter.granted = False
            else:
                return True
            if self.max_wait == 0:
                self.rejected += 1
            else:
                self._waiters.append(waiter)
                waiter.granted = True  # a last look: a slot freed meanwhile
                try:
                    slots.pop()
                except IndexError:
                    waiter.granted = False
                    return False
                self._waiters.remove(waiter)
                return True
        raise self.rejection()

    def leave(self, waiter: Waiter) -> None:
        """``waiter``'s call is over: give back its slot, or leave the queue."""
        with self._lock:
            if waiter.granted:
                waiter.granted = False
                self._slots.append(True)
                next(self._released)
            elif waiter in self._waiters:  # not if refused at once, or revoked after
                # a failed wake-up; a test, not a suppressed ValueError, which costs a
                # refused caller ~1 us
                self._waiters.remove(waiter)
        if self._waiters:
            self._hand_off()

    def timed_out(self, waiter: Waiter) -> bool:
        """Withdraw ``waiter`` (its wait ran out); ``True`` if it holds a slot anyway.

        A waiter granted a slot just as it gave up keeps it; otherwise it leaves the
        queue and counts as rejected.
        """
        with self._lock:
            if waiter.granted:
                return True
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
            self.rejected += 1
            return False

    def take_back_lost(self) -> None:
        """Give back the slots of ``with`` blocks dropped before their exit ran.

        Each such block's claim was put in ``_lost`` by a weak reference's callback when
        the block was collected (see :class:`SlotClaim`). A claim is marked returned
        and its slot appended with no call in between, and dropped from the deque only
        after, so an interrupt anywhere here returns each slot exactly once.
        """
        lost, live, slots = self._lost, self._live, self._slots
        with self._lock:
            while lost:
                claim = lost[-1]
                if getattr(claim, "held", False):
                    claim.held = False
                    slots.append(True)
                    next(self._released)
                waiter = getattr(claim, "waiter", None)
                if waiter is not None:  # self.leave(waiter), inlined: the lock is held
                    if waiter.granted:
                        waiter.granted = False
                        slots.append(True)
                        next(self._released)
                    elif waiter in self._waiters:
                        self._waiters.remove(waiter)
                live.discard(claim)
                lost.pop()
        if self._waiters:
            self._hand_off()

    def release(self) -> None:
        """Return a slot; if callers are queued, hand free slots to them in order."""
        self._slots.append(True)
        next(self._released)
        # Slot first, queue second: a waiter queues itself before its last look at the
        # pool, so one of the two always sees the other (no slot is left idle).
        if self._waiters:
            self._hand_off()

    def _hand_off(self) -> None:
        woken = []
        slots, waiters = self._slots, self._waiters
        with self._lock:
            while waiters and slots:
                waiter = waiters[0]
                if not waiter.granted:  # granted already if an interrupt came between
                    waiter.granted = True
                    try:
                        slots.pop()
                    except IndexError:  # taken by a lock-free caller meanwhile
                        waiter.granted = False
                        break
                waiters.popleft()
                woken.append(waiter)
        for waiter in woken:
            if not waiter.wake():
                # Its event loop is gone: take the slot back for the next in line. The
                # waiter may still be closed later; it then finds nothing to give back.
                with self._lock:
                    waiter.granted = False
                self.release()

    def _after_fork_in_child(self) -> None:
        # Slots held and callers queued by the parent's other threads would never come
        # back in a child, which has only the forking thread: start with every slot
        # free and keep only the waiters whose thread lives on. The calls that held
        # the slots stay counted as admitted.
        for claim in (*self._live, *self._lost):  # their slots are free again below
            claim.held = False
        self._live.clear()
        self._lost.clear()
        missing = self.max_concurrent - len(self._slots)
        # Advanced in place, not replaced: the guards and runners bound this counter.
        collections.deque(itertools.islice(self._released, missing), maxlen=0)
        self._slots.extend(itertools.repeat(object=True, times=missing))
        alive = [waiter for waiter in self._waiters if waiter.survives_fork()]
        self._waiters.clear()
        self._waiters.extend(alive)
        if self._waiters:
            self._hand_off()

    def rejection(self) -> BulkheadFullError:
        """Build (and report) the error for a refused caller; its message is made when read."""
        error = bulkhead_full(self.name, (self, None))
        # EventSource.observed(), inlined: the path of every refused caller, priced at
        # <= 3x a bare raise (issue 16), where the call alone would cost 5%.
        if self._listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
            self.emit(CallRejected(self.name, KIND, error))
        return error

    def refusal(self) -> BulkheadFullError:
        """Count and build (and report) the refusal of a caller who may not wait.

        With ``max_wait`` 0, a caller that found the pool empty (a deque pop, atomic)
        is refused then, with no lock and no waiter; see :meth:`refuser`.
        """
        next(self._refused)
        return self.rejection()

    def refuser(self, new_waiter: Callable[[], Waiter]) -> Callable[[], Waiter]:
        """What a runner calls instead of ``new_waiter`` when it found no free slot.

        With ``max_wait`` 0 a caller never waits, so it is refused with no waiter, no
        lock and no second look at the pool: the pool was empty when it looked (a deque
        pop, atomic), and that is when it is refused. Slots of dropped ``with`` blocks
        are taken back the usual way, with a waiter (``new_waiter()``).
        """
        if self.max_wait != 0:
            return new_waiter
        lost, refused, listeners = self._lost, self._refused, self._listeners
        name, about, rejection = self.name, (self, None), self.rejection

        def refuse() -> Waiter:
            if lost:
                return new_waiter()
            next(refused)
            # EventSource.observed(), inlined, as in rejection(), and the error raised
            # as it is built, as rejection() would build it.
            if listeners or GLOBAL_LISTENERS or NOTABLE_LISTENERS:
                raise rejection()
            raise bulkhead_full(name, about)

        return refuse

    def refusal_text(self, error: BulkheadFullError, key: None) -> str:
        """The message of ``error``, a refusal of this bulkhead."""
        who = f"bulkhead {self.name!r}" if self.name is not None else "bulkhead"
        waited = f" within {self.max_wait:g}s" if self.max_wait else ""
        return (
            f"{who} is full: {self.max_concurrent} of {self.max_concurrent} slots in use, "
            f"none free{waited}"
        )

    def metrics(self) -> BulkheadMetrics:
        """A frozen snapshot of the counts."""
        if self._lost:
            self.take_back_lost()
        with self._lock:
            free = len(self._slots)
            waiting = len(self._waiters)
        return BulkheadMetrics(
            max_concurrent=self.max_concurrent,
            in_flight=self.max_concurrent - free,
            waiting=waiting,
            rejected=self.rejected + counted(self._refused),
            max_observed=self.max_concurrent - self._low_water,
            admitted=counted(self._released) + self.max_concurrent - free,
        )
