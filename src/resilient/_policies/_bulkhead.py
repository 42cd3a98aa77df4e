"""The public bulkhead and its step: admission by the core, waiting by the adapters."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from resilient._core._bulkhead import KIND, BulkheadCore, BulkheadMetrics, SlotClaim
from resilient._core._outcome import PASS
from resilient._core._validate import Duration
from resilient._policies._block import DONE, ENTERED, FINISHED, Block, block_exits
from resilient._policies._pipeline import WAIT, Wait
from resilient._policies._policy import CorePolicy
from resilient._waiting._waiters import AsyncioWaiter, ThreadWaiter, TrioWaiter, async_waiter

__all__ = ["Bulkhead"]


class _BulkheadStep:
    """Take a slot on enter, give it back on every kind of exit."""

    __slots__ = ("_core", "_release", "pool")
    defers = False

    def __init__(self, core: BulkheadCore) -> None:
        self._core = core
        self._release = core.release
        self.pool = core  # the runner takes and returns slots itself (see SlotPool)

    def slot_hooks(self, is_async: bool) -> tuple[Callable[..., Any], ...]:
        """What a runner needs besides the pool: (new waiter, wait for it, leave)."""
        # With max_wait=0, a caller that finds no free slot is refused by the first.
        if is_async:
            return self._core.refuser(async_waiter), self.wait_for_async, self._core.leave
        return self._core.refuser(ThreadWaiter), self.wait_for, self._core.leave

    def enter(self) -> Any:
        return None if self._core.take() else WAIT

    # wait_for/wait_for_async and enter_wait/enter_wait_async are twins, the same code
    # apart from async/await (tests/test_twins.py): change both or neither.

    def wait_for(self, waiter: ThreadWaiter) -> None:
        """Return once ``waiter`` holds a slot (``waiter.granted``), or raise the rejection.

        Whatever interrupts it, ``waiter.granted`` tells the caller whether to give a
        slot back (with :meth:`BulkheadCore.leave`).
        """
        core = self._core
        if core.enqueue(waiter):
            return
        while waiter.wait(core.max_wait):
            if core.claim(waiter):  # woken with a slot, or to take a free one
                return
        if core.timed_out(waiter):
            return
        raise core.rejection()

    async def wait_for_async(self, waiter: AsyncioWaiter | TrioWaiter) -> None:
        """As :meth:`wait_for`, as a task."""
        core = self._core
        if core.enqueue(waiter):
            return
        while await waiter.wait(core.max_wait):
            if core.claim(waiter):  # woken with a slot, or to take a free one
                return
        if core.timed_out(waiter):
            return
        raise core.rejection()

    def enter_wait(self, wait: Wait = WAIT) -> None:
        waiter = ThreadWaiter()
        try:
            self.wait_for(waiter)
        except BaseException:  # KeyboardInterrupt while blocked: leave the queue
            self._core.leave(waiter)
            raise

    async def enter_wait_async(self, wait: Wait = WAIT) -> None:
        waiter = async_waiter()
        try:
            await self.wait_for_async(waiter)
        except BaseException:  # cancelled while queued: leave without taking a slot
            self._core.leave(waiter)
            raise

    def exit_ok(self, token: None, result: Any) -> Any:
        self._release()
        return result

    def exit_error(self, token: None, exc: Exception) -> Any:
        self._release()
        return PASS

    def exit_cancel(self, token: None, exc: BaseException) -> BaseException:
        self._release()
        return exc


class _SlotBlock(Block):
    """A ``with`` block of a bulkhead: it holds a slot through a :class:`SlotClaim`.

    The claim is a weak reference to this block, kept by the core: if the block is
    dropped with its slot held (an interrupt at the first line of its exit, which `with`
    never calls again), the slot comes back when the block is collected.
    """

    __slots__ = ("_claim",)
    _claim: SlotClaim | None

    def _take(self) -> SlotClaim | None:
        """Take a free slot for the block; else return its claim, to wait for one with."""
        core: BulkheadCore = self._policy._core  # type: ignore[attr-defined]
        lost = core._lost
        if lost:
            core.take_back_lost()
        claim = self._claim = SlotClaim(self, lost.append)
        core._live.add(claim)
        slots = core._slots
        if not slots:  # a truth test, not an IndexError (~1 us) when the pool is empty
            return claim
        claim.held = True  # no call between this and the pop: see SlotClaim
        try:
            slots.pop()
            if len(slots) < core._low_water:
                core.took(len(slots))
        except IndexError:
            claim.held = False
            if core.max_wait or lost:
                return claim
        except BaseException:  # pragma: no cover - tests/test_interrupts.py (no tracer)
            # An interrupt at a call after the pop: give the slot back at once rather
            # than when the block is collected.
            claim.held = False
            slots.append(True)
            raise
        else:
            self._state = ENTERED
            return None
        # No slot, and max_wait=0: refused at once, with no waiter and no lock (raised
        # here, not in the handler, so that the pool's IndexError is not its context).
        core._live.discard(claim)
        self._claim = None
        raise core.refusal()

    # The sync and async twins below differ only in async/await and names
    # (tests/test_twins.py).

    def enter(self) -> None:
        claim = self._take()
        if claim is None:
            return None
        return self._wait_for_slot(claim)

    def aenter(self) -> Awaitable[None]:
        claim = self._take()
        if claim is None:
            return FINISHED
        return self._wait_for_slot_async(claim)

    def _wait_for_slot(self, claim: SlotClaim) -> None:
        waiter = claim.waiter = ThreadWaiter()  # the claim answers for the waiter too
        try:
            self._policy._step.wait_for(waiter)  # type: ignore[attr-defined]
        except BaseException:
            self._policy._core.leave(waiter)  # type: ignore[attr-defined]
            # Left: nothing for the claim to answer for (were leave() interrupted, the
            # claim, still kept, would have the core do it when the block is collected).
            self._policy._core._live.discard(claim)  # type: ignore[attr-defined]
            raise
        # The slot passes from the waiter to the claim, with no call in between.
        claim.held = True
        waiter.granted = False
        self._state = ENTERED

    async def _wait_for_slot_async(self, claim: SlotClaim) -> None:
        waiter = claim.waiter = async_waiter()
        try:
            await self._policy._step.wait_for_async(waiter)  # type: ignore[attr-defined]
        except BaseException:
            self._policy._core.leave(waiter)  # type: ignore[attr-defined]
            self._policy._core._live.discard(claim)  # type: ignore[attr-defined]
            raise
        claim.held = True
        waiter.granted = False
        self._state = ENTERED

    def exit(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._state != ENTERED:
            return self._unpaired_exit(exc_type, exc, tb)
        # Up to the append, no call: an interrupt lands either before this function's
        # first line (the claim, still held, returns the slot when the block is
        # collected) or after the slot is back.
        self._state = DONE
        core: BulkheadCore = self._policy._core  # type: ignore[attr-defined]
        claim: SlotClaim = self._claim  # type: ignore[assignment]
        claim.held = False
        core._slots.append(True)
        next(core._released)
        core._live.discard(claim)
        self._claim = None  # the claim goes before the block: its callback never runs
        if core._waiters:
            core._hand_off()
        return False


class Bulkhead(CorePolicy[BulkheadCore]):
    """Limit how many calls run at once; callers beyond the limit wait briefly or fail fast.

    At most ``max_concurrent`` calls are in flight across every caller of one instance:
    threads and async tasks (asyncio or trio) alike. A caller that finds no free slot
    waits up to ``max_wait`` seconds, in FIFO order with the other waiters, then gets
    [`BulkheadFullError`][resilient.BulkheadFullError]. A slot freed while a thread
    waits may be taken first by a caller that is running (as with
    ``threading.Semaphore``) rather than left idle while the thread wakes; a waiter
    loses at most one such race, then is handed the next slot (``fair=True``: every
    slot is handed to the longest waiter). A slot is released however the call ends:
    return, exception, cancellation or timeout; a waiter that is cancelled leaves the
    queue without taking a slot.

    A bulkhead binds to no event loop: it can be created at import time and used from
    several event loops over a process's life, and from threads at the same time.

    Args:
        max_concurrent: The most calls in flight at once (>= 1).
        max_wait: Seconds a caller may wait for a slot (default 0: fail at once).
        name: A name for errors, events and metrics.
        fair: Hand every freed slot to the longest waiter, never to a running caller,
            even when the waiter is a blocked thread that must be woken first (each
            call then waits for a thread wake-up under contention: several times
            slower). Default ``False``: see the bulkhead page.
    """

    __slots__ = ("_step",)
    kind = KIND

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_wait: Duration = 0.0,
        name: str | None = None,
        fair: bool = False,
    ) -> None:
        self._core = BulkheadCore(max_concurrent, max_wait, name, fair)
        self._step = _BulkheadStep(self._core)
        self._config = {"max_concurrent": max_concurrent, "max_wait": max_wait, "fair": fair}

    def _prepare_reconfigure(
        self, merged: dict[str, Any], changed: frozenset[str]
    ) -> Callable[[], None]:
        # Checked as construction checks them (a throwaway core, whose pool is not used).
        fresh = BulkheadCore(merged["max_concurrent"], merged["max_wait"], None, merged["fair"])
        core = self._core

        def commit() -> None:
            # Waiters read max_wait and fair when they next look; the limit is resized
            # under the lock with the slots in flight kept (see BulkheadCore.resize).
            core.max_wait = fresh.max_wait
            core.fair = fresh.fair
            if fresh.max_concurrent != core.max_concurrent:
                core.resize(fresh.max_concurrent)

        return commit

    if not TYPE_CHECKING:
        __exit__, __aexit__ = block_exits(_SlotBlock)

    def _sync_step(self) -> _BulkheadStep:
        return self._step

    def _async_step(self) -> _BulkheadStep:
        return self._step

    # Alone, as in a composition, the bulkhead runs the code compose generates from
    # its step (_pipeline._slot_level): a deque pop and append in the runner's own frame,
    # one source for sync and async. A signal handler may raise at any call
    # (KeyboardInterrupt, a SIGALRM timeout), so a slot is taken and given back by a C
    # call inside the frame's `try`, not by a Python function, whose first line could be
    # interrupted before it acted.

    @property
    def max_concurrent(self) -> int:
        """The configured limit."""
        return self._core.max_concurrent

    @property
    def max_wait(self) -> float:
        """Seconds a caller may wait for a slot."""
        return self._core.max_wait

    @property
    def fair(self) -> bool:
        """Whether every freed slot is handed to the longest waiter (see ``fair=``)."""
        return self._core.fair

    def metrics(self) -> BulkheadMetrics:
        """In flight, waiting, rejected and the most ever in flight, as a frozen snapshot."""
        return self._core.metrics()

    def __repr__(self) -> str:
        m = self._core.metrics()
        return f"<Bulkhead {self.name!r} {m.in_flight}/{m.max_concurrent} in flight>"
