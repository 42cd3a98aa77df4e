"""How a bulkhead serves its waiters when a slot frees: hand-off, or wake to take.

* The core, driven directly with waiters that record their wake-ups (no threads, no
  loops): a blocked thread is woken to take the freed slot, which a running caller may
  take first; a waiter that loses that race is handed the next slot; a task of the
  releaser's own loop, a waiter that lost once and every waiter of a ``fair`` bulkhead
  are handed the slot directly.
* Hypothesis: a state machine drives arrivals, releases, wake-ups, timeouts and
  cancellations against the contract: never more than N holders, every slot accounted
  for, no slot idle while a waiter sleeps, waiters first served in arrival order, and a
  waiter loses at most one race.
* Stress: threads in tight loops and asyncio tasks of another thread's loop share
  ``Bulkhead(1)``; the calls in flight never exceed 1, nobody is refused, every slot
  comes back.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient import Bulkhead, BulkheadMetrics
from resilient._core._bulkhead import BulkheadCore
from resilient._core._waiter import Waiter
from resilient._waiting._waiters import AsyncioWaiter, ThreadWaiter, TrioWaiter

WAIT = 10.0  # bound on every wait: reached only when something is broken


class FakeWaiter(Waiter):
    """A waiter that records its wake-ups; ``near`` says whether it is in our thread."""

    __slots__ = ("core", "name", "near", "overwoken", "wakes")

    def __init__(
        self, name: str = "w", *, near: bool = False, core: BulkheadCore | None = None
    ) -> None:
        super().__init__()
        self.name = name
        self.near = near
        self.wakes = 0
        self.core = core  # if given, each wake-up to take a slot checks the free slots
        self.overwoken = False

    def wake(self) -> bool:
        self.wakes += 1
        core = self.core
        if core is not None and not self.granted:
            # Woken to take a slot: one free slot for each waiter on its way to one.
            self.overwoken = self.overwoken or len(core._woken) > len(core._slots)
        return True

    def nearby(self) -> bool:
        return self.near

    def survives_fork(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<{self.name} wakes={self.wakes} granted={self.granted} lost={self.lost}>"


def full_core(limit: int = 1, *, fair: bool = False) -> BulkheadCore:
    core = BulkheadCore(limit, WAIT, "t", fair)
    for _ in range(limit):
        assert core.take()
    return core


# -- the core, step by step -----------------------------------------------------------------


def test_a_running_caller_takes_a_slot_freed_while_a_thread_waits() -> None:
    core = full_core()
    waiter = FakeWaiter()
    assert core.enqueue(waiter) is False
    core.release()
    # The thread is woken, the slot stays in the pool: a caller already running takes it
    # rather than block behind the thread's wake-up.
    assert (waiter.wakes, waiter.granted) == (1, False)
    assert core.take()
    # The woken thread finds the slot gone: it goes back to the head of the queue...
    assert core.claim(waiter) is False
    assert waiter.lost
    assert core.metrics().waiting == 1
    # ...and the next slot freed is handed to it, not left for another runner.
    core.release()
    assert (waiter.wakes, waiter.granted) == (2, True)
    assert not core.take()
    assert core.claim(waiter) is True
    waiter.granted = False  # the slot passes to the call, as the runner does
    core.release()
    assert core.metrics() == BulkheadMetrics(1, 0, 0, 0, 1, admitted=3)


def test_a_woken_thread_takes_the_free_slot_when_nobody_barged() -> None:
    core = full_core()
    waiter = FakeWaiter()
    core.enqueue(waiter)
    core.release()
    assert core.claim(waiter) is True
    assert (waiter.granted, waiter.lost, waiter.wakes) == (True, False, 1)
    assert core.metrics().in_flight == 1


def test_one_thread_is_woken_per_free_slot_and_releases_then_take_no_lock() -> None:
    core = full_core(2)
    first, second, third = FakeWaiter("a"), FakeWaiter("b"), FakeWaiter("c")
    for waiter in (first, second, third):
        core.enqueue(waiter)
    core.release()
    assert [w.wakes for w in (first, second, third)] == [1, 0, 0]
    assert core.take()  # a runner takes the freed slot and gives it back
    core.release()  # the slot is spoken for by `first`: nobody else is woken
    assert [w.wakes for w in (first, second, third)] == [1, 0, 0]
    core.release()  # a second free slot: the next in line is woken
    assert [w.wakes for w in (first, second, third)] == [1, 1, 0]
    assert core.claim(second)
    assert core.claim(first)
    assert core.metrics().waiting == 1


def test_waiters_that_lost_a_race_keep_their_order() -> None:
    core = full_core(2)
    first, second, third = FakeWaiter("a"), FakeWaiter("b"), FakeWaiter("c")
    for waiter in (first, second, third):
        core.enqueue(waiter)
    core.release()
    core.release()
    assert core.take()  # runners barge in on both slots
    assert core.take()
    assert core.claim(second) is False  # the later one finds out first
    assert core.claim(first) is False
    assert list(core._waiters) == [first, second, third]
    core.release()
    assert (first.granted, second.granted, third.wakes) == (True, False, 0)
    core.release()
    assert (second.granted, third.wakes) == (True, 0)


def test_a_task_of_the_releasers_own_loop_is_handed_the_slot() -> None:
    core = full_core()
    waiter = FakeWaiter(near=True)  # waking it is a callback of our own loop
    core.enqueue(waiter)
    core.release()
    assert (waiter.wakes, waiter.granted) == (1, True)
    assert not core.take()


def test_a_fair_bulkhead_hands_every_slot_to_the_longest_waiter() -> None:
    core = full_core(fair=True)
    waiter = FakeWaiter()
    core.enqueue(waiter)
    core.release()
    assert (waiter.wakes, waiter.granted) == (1, True)
    assert not core.take()
    assert Bulkhead(1, fair=True).fair is True
    assert Bulkhead(1).fair is False


def test_fair_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="fair must be True or False, not int"):
        Bulkhead(1, fair=1)  # type: ignore[arg-type]


def test_a_woken_waiter_that_times_out_takes_its_slot_or_passes_the_wake_on() -> None:
    core = full_core()
    first, second = FakeWaiter("a"), FakeWaiter("b")
    core.enqueue(first)
    core.enqueue(second)
    core.release()
    assert core.timed_out(first) is True  # woken as it gave up: the slot is free, it runs
    assert first.granted
    first.granted = False
    core.release()
    assert second.wakes == 1
    assert core.take()  # barged
    third = FakeWaiter("c")
    core.enqueue(third)
    assert core.timed_out(second) is False  # nothing left to take: refused
    assert core.metrics().rejected == 1
    core.release()  # the wake-up `second` gave up goes to the next in line
    assert third.wakes == 1


def test_a_woken_waiter_that_is_cancelled_passes_the_wake_on() -> None:
    core = full_core(2)
    first, second = FakeWaiter("a"), FakeWaiter("b")
    core.enqueue(first)
    core.enqueue(second)
    core.release()
    assert (first.wakes, second.wakes) == (1, 0)
    core.leave(first)  # cancelled before it ran: its wake-up goes to `second`
    assert second.wakes == 1
    assert core.claim(second)
    assert core.metrics().waiting == 0


class ThreadOfTheParent(FakeWaiter):
    """A waiter whose thread does not exist in a forked child."""

    def survives_fork(self) -> bool:
        return False


def test_a_child_keeps_only_the_woken_waiters_whose_thread_forked() -> None:
    # What the fork hook does in a child (called directly: no fork needed to check the
    # core's bookkeeping; tests/test_fork.py forks for real).
    core = full_core(2)
    gone, kept = ThreadOfTheParent("gone"), FakeWaiter("kept")
    core.enqueue(gone)
    core.enqueue(kept)
    core.release()
    core.release()
    assert (gone.wakes, kept.wakes) == (1, 1)
    assert core.take()  # a runner holds a slot, which the child will not inherit
    core._after_fork_in_child()
    assert core._woken == {kept}
    assert core.metrics().waiting == 1
    assert core.claim(kept)
    assert core.metrics() == BulkheadMetrics(2, 1, 0, 0, 2, admitted=4)


class DeadWaiter(FakeWaiter):
    """A waiter whose event loop is gone: it cannot be woken."""

    def wake(self) -> bool:
        self.wakes += 1
        return False


def test_a_waiter_that_cannot_be_woken_passes_its_turn_on() -> None:
    core = full_core()
    dead, alive = DeadWaiter("dead"), FakeWaiter("alive")
    core.enqueue(dead)
    core.enqueue(alive)
    core.release()
    assert (dead.wakes, alive.wakes) == (1, 1)
    assert core.claim(alive)
    assert core.metrics().waiting == 0


# -- Hypothesis: the core against the contract ----------------------------------------------


class HandOffMachine(RuleBasedStateMachine):
    """Arrivals, releases, wake-ups, timeouts, cancellations, barging, on one core."""

    def __init__(self) -> None:
        super().__init__()
        self.core = BulkheadCore(2, WAIT, "m", False)
        self.limit = 2
        self.running = 0  # callers holding a slot
        self.waiters: list[FakeWaiter] = []  # queued, in order of arrival
        self.first_served: list[int] = []  # tickets, in the order of first wake-ups
        self.losses: dict[int, int] = {}
        self.count = 0

    @rule(limit=st.integers(1, 3), fair=st.booleans())
    def reset(self, limit: int, fair: bool) -> None:
        if self.running or self.waiters:
            return
        self.core = BulkheadCore(limit, WAIT, "m", fair)
        self.limit = limit
        self.first_served.clear()  # tickets start again with the new core
        self.losses.clear()

    @rule(near=st.booleans())
    def arrive(self, near: bool) -> None:
        if self.core.take():  # a runner: lock-free, barging if a slot is free
            self.running += 1
            return
        waiter = FakeWaiter(f"w{self.count}", near=near, core=self.core)
        self.count += 1
        if self.core.enqueue(waiter):
            self.running += 1
        else:
            self.waiters.append(waiter)
            self.losses[waiter.ticket] = 0

    @precondition(lambda self: self.running > 0)
    @rule()
    def release(self) -> None:
        self.running -= 1
        self.core.release()

    def _woken(self) -> list[FakeWaiter]:
        return [w for w in self.waiters if w.wakes and (w.granted or w in self.core._woken)]

    def _admit(self, waiter: FakeWaiter) -> None:
        self.waiters.remove(waiter)
        waiter.granted = False  # the slot passes to the call
        self.running += 1

    @precondition(lambda self: any(w.wakes for w in self.waiters))
    @rule(data=st.data())
    def woken_waiter_runs(self, data: st.DataObject) -> None:
        woken = self._woken()
        if not woken:
            return
        waiter = data.draw(st.sampled_from(woken))
        if self.core.claim(waiter):
            self._admit(waiter)
        else:
            self.losses[waiter.ticket] += 1

    @precondition(lambda self: bool(self.waiters))
    @rule(data=st.data(), cancel=st.booleans())
    def waiter_gives_up(self, data: st.DataObject, cancel: bool) -> None:
        waiter = data.draw(st.sampled_from(self.waiters))
        if cancel:
            self.core.leave(waiter)
            self.waiters.remove(waiter)
        elif self.core.timed_out(waiter):
            self._admit(waiter)
        else:
            self.waiters.remove(waiter)

    @invariant()
    def never_more_than_the_limit_and_every_slot_accounted_for(self) -> None:
        core = self.core
        granted = sum(w.granted for w in self.waiters)
        assert self.running + granted + len(core._slots) == self.limit
        assert core.metrics().waiting == len(self.waiters) - granted

    @invariant()
    def no_slot_idle_while_a_waiter_sleeps(self) -> None:
        core = self.core
        if core._waiters:
            assert len(core._slots) <= len(core._woken)
            assert not (core._waiters[0].lost and core._slots)

    @invariant()
    def those_that_lost_a_race_lead_the_queue_in_order(self) -> None:
        queue = list(self.core._waiters)
        lost = [w.ticket for w in queue if w.lost]
        assert [w.ticket for w in queue[: len(lost)]] == sorted(lost)

    @invariant()
    def a_waiter_is_woken_to_take_a_slot_only_for_a_free_one(self) -> None:
        assert not any(w.overwoken for w in self.waiters)

    @invariant()
    def first_served_in_arrival_order_and_at_most_one_race_lost(self) -> None:
        for waiter in self.waiters:
            if waiter.wakes and waiter.ticket not in self.first_served:
                self.first_served.append(waiter.ticket)
        assert self.first_served == sorted(self.first_served)
        assert all(n <= 1 for n in self.losses.values())
        assert all(w.wakes <= 2 for w in self.waiters)

    def teardown(self) -> None:
        for waiter in list(self.waiters):
            self.core.leave(waiter)
        for _ in range(self.running):
            self.core.release()
        m = self.core.metrics()
        assert (m.in_flight, m.waiting) == (0, 0)


HandOffMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=50, derandomize=True, database=None, deadline=None
)
TestHandOffMachine = HandOffMachine.TestCase


# -- stress: threads and another thread's asyncio tasks on one slot ------------------------


@pytest.mark.usefixtures("fast_switching")
def test_threads_and_a_loop_in_tight_loops_never_exceed_one_slot() -> None:
    bulkhead = Bulkhead(1, max_wait=WAIT)
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    def work() -> None:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0)  # let the other threads run while the slot is held
        with lock:
            in_flight[0] -= 1

    async def awork() -> None:
        work()
        await asyncio.sleep(0)

    guarded, aguarded = bulkhead(work), bulkhead(awork)
    calls = 2_000

    def thread_loop() -> None:
        for _ in range(calls):
            guarded()

    def loop_thread() -> None:
        async def main() -> None:
            async def task() -> None:
                for _ in range(calls // 20):
                    await aguarded()

            await asyncio.gather(*(task() for _ in range(20)))

        asyncio.run(main())

    errors: list[BaseException] = []

    def catching(fn: object) -> threading.Thread:
        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            except BaseException as exc:  # reported below
                errors.append(exc)

        return threading.Thread(target=run, daemon=True)

    threads = [catching(thread_loop) for _ in range(4)] + [catching(loop_thread)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive(), "stuck"
    assert errors == []
    assert in_flight == [0, 1]
    m = bulkhead.metrics()
    assert (m.in_flight, m.waiting, m.rejected, m.max_observed) == (0, 0, 0, 1)
    assert m.admitted == 5 * calls


# -- waiters that wait again after a wake-up that brought no slot --------------------------


def test_a_thread_waiter_waits_again_for_what_is_left_of_its_wait() -> None:
    waiter = ThreadWaiter()
    waiter.wake()
    assert waiter.wait(0.05) is True
    assert waiter.wait(0.05) is False  # not woken again: runs out at the first deadline
    waiter.wake()
    assert waiter.wait(0.05) is True  # past the deadline, a wake-up sent is still seen


def test_an_asyncio_waiter_waits_again_for_what_is_left_of_its_wait() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = AsyncioWaiter(loop)
        loop.call_soon(waiter.wake)
        assert await waiter.wait(0.05) is True
        assert await waiter.wait(0.05) is False  # not woken again: out at the deadline
        thread = threading.Thread(target=waiter.wake)  # from another thread, this time
        thread.start()
        thread.join()
        assert await waiter.wait(0.05) is True

    asyncio.run(main())


def test_asyncio_waiters_of_one_wait_length_share_one_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiters = [AsyncioWaiter(loop) for _ in range(5)]
        waits = [asyncio.ensure_future(w.wait(0.05)) for w in waiters]  # type: ignore[arg-type]
        await asyncio.sleep(0)
        waiters[1].wake()
        waiters[3].wake()
        assert await asyncio.gather(*waits) == [False, True, False, True, False]

    asyncio.run(main())


def test_a_trio_waiter_waits_again_for_what_is_left_of_its_wait() -> None:
    async def main() -> None:
        waiter = TrioWaiter()
        waiter.wake()
        assert await waiter.wait(WAIT) is True
        waiter.wake()  # sent before the next wait begins: it is for that wait
        assert await waiter.wait(WAIT) is True
        other = TrioWaiter()
        other.wake()
        assert await other.wait(0.05) is True
        assert await other.wait(0.05) is False  # not woken again: out at the deadline

    trio.run(main)
