"""The bulkhead's admission logic, sans I/O: slots, a FIFO queue of waiters, counts.

Free slots are tokens in a deque. ``deque.pop()`` and ``deque.append()`` are single C
calls, atomic under the GIL (and internally locked on free-threaded builds), so an
uncontended caller takes and returns its slot without the lock. The lock guards the
waiter queue, served in arrival order, in one of two ways:

* **Hand-off**: the releaser takes the freed slot for the longest waiter and wakes it.
  Used when waking it is cheap (a task of the releaser's own event loop: a callback, see
  ``Waiter.nearby``), for a waiter that already lost a race (below), and for every
  waiter of a ``fair`` bulkhead.
* **Wake to take** (the default for blocked threads): the slot stays in the pool and the
  longest waiter is woken to take it. A running caller may take it first (barging, as
  ``threading.Semaphore`` allows), rather than block behind a thread wake-up: a handed-
  off slot makes every later call wait for a context switch (a convoy). A woken waiter
  that finds its slot taken goes back to the head of the queue, marked ``lost``, and the
  next slot freed is handed to it: a waiter loses at most one race. One waiter is woken
  per free slot (``_woken``), so a release that finds every free slot spoken for costs
  no lock.

Every change to the queue or the pool under the lock ends by serving the queue again
(``_serve_locked``), and a releaser puts its slot back before it looks at the queue, while a
waiter queues itself (or gives up a wake-up) before its last look at the pool: one of
the two always sees the other, so no slot stays idle while a waiter sleeps.
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
# A low-water mark no pool falls below: while a shrink's debt is unpaid, every lock-free
# taker then calls took() (see resize()).
_OUT_OF_REACH: Final = 1 << 62


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
        "_debt",
        "_live",
        "_lock",
        "_lost",
        "_low_water",
        "_peak",
        "_refused",
        "_released",
        "_retired",
        "_saved_low_water",
        "_slots",
        "_tickets",
        "_to_wake",
        "_waiters",
        "_woken",
        "fair",
        "max_concurrent",
        "max_wait",
        "name",
        "rejected",
    )

    def __init__(
        self, max_concurrent: int, max_wait: object, name: str | None, fair: object = False
    ) -> None:
        super().__init__()
        self.name = check_name(name)
        self.max_concurrent = check_int("max_concurrent", max_concurrent)
        wait = check_duration("max_wait", max_wait)
        self.max_wait = wait
        if not isinstance(fair, bool):
            raise TypeError(f"fair must be True or False, not {type(fair).__name__}")
        self.fair = fair
        # Bounded: a slot taken before a fork and returned in the child (which starts
        # with every slot free) is dropped rather than raising the limit.
        self._slots: collections.deque[bool] = collections.deque(
            [True] * self.max_concurrent, maxlen=self.max_concurrent
        )
        # Waiters asleep, in order of arrival (those that lost a race at the head), and
        # those woken to take a free slot, not yet run.
        self._waiters: collections.deque[Waiter] = collections.deque()
        self._woken: set[Waiter] = set()
        self._tickets = itertools.count()
        # Waiters served under the lock, to wake once it is released.
        self._to_wake: collections.deque[Waiter] = collections.deque()
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
        # Reconfiguration (see resize()): slots still to take out of circulation after a
        # shrink, the pools replaced by a grow (a late release may land in one), and the
        # most calls in flight before the last resize.
        self._debt = 0
        self._retired: list[collections.deque[bool]] = []
        self._saved_low_water = self.max_concurrent
        self._peak = 0

    def took(self, free: int) -> None:
        """A caller took a slot and left ``free`` slots: keep the lowest count seen.

        The one place the low-water mark (``max_observed``) is written. Callers that
        take slots lock-free tell it only when ``free`` is below the mark, which only
        ever falls: at most ``max_concurrent`` times in a bulkhead's life.

        While a shrink's debt is unpaid the mark is out of reach (:meth:`resize`), so
        every lock-free taker comes here: the slot it took pays the debt instead, and
        ``IndexError`` sends the caller where a caller that found no free slot goes
        (the takers catch it from their ``pop()`` already).
        """
        if self._debt and self._owes():
            raise IndexError("the slot taken went to a smaller limit")
        if free < self._low_water:
            self._low_water = free

    def take(self) -> bool:
        """Take a free slot at once, lock-free; ``False`` if none is free."""
        slots = self._slots
        if not slots:  # a truth test, not an IndexError (~1 us) when the pool is empty
            return False
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
        with self._lock:
            if self._debt or self._retired:
                self._settle_locked()
            slots = self._slots
            # Each pop behind a truth test (no call): a contended caller pays for no
            # IndexError here, only for the one of the runner's lock-free look.
            if slots:
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
                waiter.ticket = next(self._tickets)
                self._waiters.append(waiter)
                if not slots:  # a last look: a slot freed meanwhile
                    return False
                waiter.granted = True
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
            self._drop(waiter)
            self._serve_locked()
        self._wake_all()

    def _drop(self, waiter: Waiter) -> None:
        # Under the lock. Whatever the waiter holds goes back: its slot, its place in the
        # queue, or the wake-up it was sent (which may now be owed to the next in line).
        if waiter.granted:
            waiter.granted = False
            self._slots.append(True)
            next(self._released)
        elif waiter in self._woken:
            self._woken.discard(waiter)
        elif waiter in self._waiters:  # not if refused at once, or revoked after a
            # failed wake-up; a test, not a suppressed ValueError, which costs a refused
            # caller ~1 us
            self._waiters.remove(waiter)

    def claim(self, waiter: Waiter) -> bool:
        """``waiter`` was woken: ``True`` if it holds a slot now.

        A waiter handed a slot holds it already. One woken to take a free slot takes it
        if it is still free; if a running caller took it first, the waiter goes back to
        the head of the queue, ahead of every waiter that came after it, and is handed
        the next slot freed: ``False``, wait again.
        """
        if waiter.granted:  # handed off: set under the lock before the wake-up
            return True
        with self._lock:  # woken to take: it is in _woken, where nothing grants it
            if self._debt or self._retired:
                self._settle_locked()
            slots = self._slots
            self._woken.discard(waiter)
            waiter.granted = True  # no call between this and the pop: see enqueue()
            try:
                slots.pop()
            except IndexError:
                waiter.granted = False
            else:
                if len(slots) < self._low_water:
                    self.took(len(slots))
                return True
            waiter.lost = True
            waiters = self._waiters
            at = 0  # behind those that lost a race before it and came before it
            while at < len(waiters) and waiters[at].lost and waiters[at].ticket < waiter.ticket:
                at += 1
            waiters.insert(at, waiter)
            self._serve_locked()  # a last look: a slot freed meanwhile
            if waiter.granted:  # served by its own last look: awake already
                with contextlib.suppress(ValueError):
                    self._to_wake.remove(waiter)
        self._wake_all()
        return waiter.granted

    def timed_out(self, waiter: Waiter) -> bool:
        """Withdraw ``waiter`` (its wait ran out); ``True`` if it holds a slot anyway.

        A waiter granted a slot just as it gave up keeps it, and one woken just then
        takes the free slot it was woken for, if it is still there; otherwise it leaves
        the queue and counts as rejected.
        """
        with self._lock:
            if waiter.granted:
                return True
            if self._debt or self._retired:
                self._settle_locked()
            slots = self._slots
            if waiter in self._woken:
                self._woken.discard(waiter)
                waiter.granted = True
                try:
                    slots.pop()
                except IndexError:
                    waiter.granted = False
                else:
                    return True
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            self.rejected += 1
            self._serve_locked()  # the wake-up it gives up may be owed to the next
        self._wake_all()
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
                if waiter is not None:
                    self._drop(waiter)
                live.discard(claim)
                lost.pop()
            self._serve_locked()
        self._wake_all()

    def release(self) -> None:
        """Return a slot; if callers are queued, serve them in order."""
        self._slots.append(True)
        next(self._released)
        # Slot first, queue second: a waiter queues itself before its last look at the
        # pool, so one of the two always sees the other (no slot is left idle).
        if self._waiters:
            self._hand_off()

    def _hand_off(self) -> None:
        """Serve the queue: the releasers' (and the runners') call after a release."""
        woken = self._woken
        if woken and len(woken) >= len(self._slots):
            # Every free slot has a waiter on its way to take it: nothing to do, and no
            # lock to take, unless the head lost a race (it is owed the slot).
            try:
                if not self._waiters[0].lost:
                    return
            except IndexError:
                return
        with self._lock:
            self._serve_locked()
        if self._to_wake:
            self._wake_all()

    def _serve_locked(self) -> None:
        # Under the lock: give free slots to the head of the queue, or wake the head to
        # take one, while slots are free that no woken waiter is on its way to. Who was
        # served is collected in _to_wake and woken after the lock (_wake_all).
        if self._debt or self._retired:
            self._settle_locked()
        slots, waiters, woken = self._slots, self._waiters, self._woken
        to_wake = self._to_wake
        while waiters and slots:
            waiter = waiters[0]
            if waiter.granted:  # granted already if an interrupt came before the popleft
                waiters.popleft()
                to_wake.append(waiter)
            elif len(woken) >= len(slots) and not waiter.lost:
                break  # every free slot is spoken for by a waiter woken before this one
            elif waiter.lost or self.fair or waiter.nearby():
                waiter.granted = True
                try:
                    slots.pop()
                except IndexError:  # taken by a lock-free caller meanwhile
                    waiter.granted = False
                    break
                waiters.popleft()
                to_wake.append(waiter)
            else:
                waiters.popleft()
                woken.add(waiter)
                to_wake.append(waiter)

    def _wake_all(self) -> None:
        # Outside the lock: waking a thread or another loop's task is a system call.
        to_wake = self._to_wake
        while to_wake:
            try:
                waiter = to_wake.popleft()
            except IndexError:  # emptied by another thread meanwhile
                return
            if waiter.wake():
                continue
            # Its event loop is gone: take back what it was given, for the next in line.
            # The waiter may still be closed later; it then finds nothing to give back.
            with self._lock:
                self._drop(waiter)
                self._serve_locked()

    def _after_fork_in_child(self) -> None:
        # Slots held and callers queued by the parent's other threads would never come
        # back in a child, which has only the forking thread: start with every slot
        # free and keep only the waiters whose thread lives on. The calls that held
        # the slots stay counted as admitted.
        for claim in (*self._live, *self._lost):  # their slots are free again below
            claim.held = False
        self._live.clear()
        self._lost.clear()
        self._retired.clear()
        if self._debt:
            self._debt = 0
            self._aim(self._saved_low_water)
        if self._slots.maxlen != self.max_concurrent:
            # Raised by a grow, or kept by a shrink: the bound must be the limit for a
            # late release to be absorbed (the runners read the pool from the core).
            self._slots = collections.deque(self._slots, maxlen=self.max_concurrent)
        missing = self.max_concurrent - len(self._slots)
        # Advanced in place, not replaced: the guards and runners bound this counter.
        collections.deque(itertools.islice(self._released, missing), maxlen=0)
        self._slots.extend(itertools.repeat(object=True, times=missing))
        alive = [waiter for waiter in self._waiters if waiter.survives_fork()]
        self._waiters.clear()
        self._waiters.extend(alive)
        woken = [waiter for waiter in self._woken if waiter.survives_fork()]
        self._woken.clear()
        self._woken.update(woken)
        to_wake = [waiter for waiter in self._to_wake if waiter.survives_fork()]
        self._to_wake.clear()
        self._to_wake.extend(to_wake)
        with self._lock:
            self._serve_locked()
        self._wake_all()

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
        lost, refused, listeners = self._lost, self._refused, self._listeners
        name, about, rejection = self.name, (self, None), self.rejection
        retired, core = self._retired, self

        def refuse() -> Waiter:
            # max_wait is read now: reconfigure() may change it after decoration. A pool
            # replaced by a grow may hold a late release: the locked way finds it.
            if lost or retired or core.max_wait:
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
            if self._debt or self._retired:
                self._settle_locked()
            limit = self.max_concurrent
            # Slots in circulation: the limit, and those a shrink has still to take back.
            in_flight = limit + self._debt - len(self._slots)
            waiting = len(self._waiters) + len(self._woken)
            low_water = self._saved_low_water if self._debt else self._low_water
        return BulkheadMetrics(
            max_concurrent=limit,
            in_flight=in_flight,
            waiting=waiting,
            rejected=self.rejected + counted(self._refused),
            max_observed=max(self._peak, limit - low_water),
            admitted=counted(self._released) + in_flight,
        )

    # -- reconfiguration ---------------------------------------------------------------

    def resize(self, limit: int) -> None:
        """Change ``max_concurrent`` in place; calls in flight keep their slots.

        A grow adds free slots (serving waiters at once). A shrink takes free slots out
        of circulation now, and owes the rest (a *debt*) until calls in flight give
        theirs back: until it is paid no caller is admitted, so once the calls that were
        in flight have finished, never more than ``limit`` run at once. The pool's
        ``maxlen`` is the most free slots it can hold (see ``_after_fork_in_child``); a
        grow beyond it replaces the pool (the runners read it from the core).
        """
        with self._lock:
            self._settle_locked()
            old = self.max_concurrent
            low_water = self._saved_low_water if self._debt else self._low_water
            self._peak = max(self._peak, old - low_water)
            grow = limit - old
            if grow > 0:
                paid = min(self._debt, grow)
                self._debt -= paid
                grow -= paid
                slots = self._slots
                if slots.maxlen is not None and slots.maxlen < limit:
                    self._slots = collections.deque(slots, maxlen=limit)
                    self._retired.append(slots)  # a release may still be on its way here
                    slots.clear()
                self._slots.extend(itertools.repeat(object=True, times=grow))
            else:
                self._debt -= grow
            self.max_concurrent = limit
            self._saved_low_water = limit  # nothing seen at this limit yet (see _peak)
            self._aim(_OUT_OF_REACH if self._debt else limit)
            self._settle_locked()
            self._serve_locked()
        self._wake_all()

    def _aim(self, mark: int) -> None:
        """Set the low-water mark for a new limit, or out of reach during a debt.

        The one writer of the mark besides ``took()`` (which only lowers it).
        """
        self._low_water = mark

    def _owes(self) -> bool:
        """A lock-free taker came during a debt: ``True`` if its slot paid some of it."""
        with self._lock:
            self._settle_locked()  # free slots pay first
            if not self._debt:
                return False
            self._debt -= 1
            if not self._debt:
                self._aim(self._saved_low_water)
            return True

    def _settle_locked(self) -> None:
        """Bring home the slots of replaced pools, and pay the debt from free slots."""
        slots = self._slots
        for old in self._retired:
            while old:
                try:
                    old.pop()
                except IndexError:  # pragma: no cover - emptied meanwhile
                    break
                slots.append(True)
        while self._debt and slots:
            try:
                slots.pop()
            except IndexError:  # pragma: no cover - taken by a lock-free caller meanwhile
                break
            self._debt -= 1
            if not self._debt:
                self._aim(self._saved_low_water)
