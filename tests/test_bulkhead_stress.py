"""Stress, ordering and model-based tests for ``Bulkhead``.

* Many threads and thousands of async tasks (asyncio and trio) share one bulkhead at the
  same time: the calls in flight, counted inside the calls under a lock, never exceed the
  limit, every caller either ran or was rejected, and every slot comes back.
* FIFO: waiters queued one at a time in a known order (threads, tasks, both mixed) are
  admitted in that order.
* Waiters cancelled at random (seeded) while they wait, and thread waiters that time out,
  leave no slot behind.
* Hypothesis: a state machine drives ``__enter__``/``__exit__``/``call`` against a
  counter model; a second property drives trio tasks (arrivals, releases, cancellations
  and the passing of time on trio's ``MockClock``) against a model with a FIFO queue.

State changes are awaited with Events/Barriers or by polling ``metrics()`` in bounded
loops that yield; no fixed sleep is used to let something happen.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import hypothesis
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from resilient import Bulkhead, BulkheadFullError, BulkheadMetrics, CallRejected, Event

WAIT = 10.0  # bound on every wait: reached only when something is broken
LIMIT = 8


class Boom(Exception):
    """The user's own failure."""


def wait_for(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` from a thread until it holds; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        pause.wait(0.001)


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll ``predicate`` from a task, yielding to the loop; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await anyio.sleep(0)


def waiting_is(bulkhead: Bulkhead, n: int) -> Callable[[], bool]:
    return lambda: bulkhead.metrics().waiting == n


class CallerThread(threading.Thread):
    """A thread making one call through a bulkhead and keeping what came of it."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._target_fn = target
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self._target_fn()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> None:
        self.join(WAIT)
        assert not self.is_alive(), "caller thread is stuck"


# -- many threads and many tasks on one bulkhead -------------------------------------------


@dataclass
class Probe:
    """Counts the calls in flight from inside them, under a lock of its own."""

    limit: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    now: int = 0
    peak: int = 0
    threads_in: int = 0
    tasks_in: int = 0
    overlapped: bool = False  # a thread and a task were in flight at the same moment
    over_limit: list[int] = field(default_factory=list)

    def enter(self, from_thread: bool) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            if self.now > self.limit:
                self.over_limit.append(self.now)
            if from_thread:
                self.threads_in += 1
            else:
                self.tasks_in += 1
            if self.threads_in and self.tasks_in:
                self.overlapped = True

    def leave(self, from_thread: bool) -> None:
        with self.lock:
            self.now -= 1
            if from_thread:
                self.threads_in -= 1
            else:
                self.tasks_in -= 1


@dataclass
class Tally:
    """What the callers saw, merged under a lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: int = 0
    ran: int = 0
    rejected: int = 0
    cancelled: int = 0
    unexpected: list[BaseException] = field(default_factory=list)

    def add(self, **counts: int) -> None:
        with self.lock:
            for key, value in counts.items():
                setattr(self, key, getattr(self, key) + value)


THREADS = 32
CALLS_PER_THREAD = 40  # at least; a thread keeps calling until the async side is done
MAX_CALLS_PER_THREAD = 2000
TASKS = 2000


def thread_caller(
    b: Bulkhead, probe: Probe, tally: Tally, go: threading.Event, done: threading.Event
) -> None:
    def work() -> str:
        probe.enter(from_thread=True)
        try:
            time.sleep(0)  # (work: lets other threads and the event loop run)
            time.sleep(0)
        finally:
            probe.leave(from_thread=True)
        return "done"

    decorated = b(work)
    attempts = ran = rejected = 0
    try:
        assert go.wait(WAIT)
        while attempts < CALLS_PER_THREAD or (
            not done.is_set() and attempts < MAX_CALLS_PER_THREAD
        ):
            attempts += 1
            try:
                if attempts % 3 == 0:
                    assert b.call(work) == "done"
                elif attempts % 3 == 1:
                    assert decorated() == "done"
                else:
                    with b:
                        work()
                ran += 1
            except BulkheadFullError:
                rejected += 1
    except BaseException as exc:
        tally.unexpected.append(exc)
    tally.add(attempts=attempts, ran=ran, rejected=rejected)


def run_threads_and_tasks(
    backend: str, b: Bulkhead, tasks: int, task_caller_factory: Callable[..., Any]
) -> tuple[Probe, Tally]:
    """Run ``THREADS`` thread callers and ``tasks`` async callers on ``b`` at once.

    The threads are started before the event loop and joined after it; they start calling
    when the async side sets ``go``, and keep calling until it is over.
    """
    probe = Probe(b.max_concurrent)
    tally = Tally()
    go = threading.Event()
    done = threading.Event()

    async def main() -> None:
        task_caller = task_caller_factory(b, probe, tally, go)
        try:
            async with anyio.create_task_group() as tg:
                for i in range(tasks):
                    tg.start_soon(task_caller, i)
        finally:
            go.set()
            done.set()

    threads = [
        threading.Thread(target=thread_caller, args=(b, probe, tally, go, done))
        for _ in range(THREADS)
    ]
    for t in threads:
        t.start()
    try:
        anyio.run(main, backend=backend)
    finally:
        go.set()
        done.set()
        for t in threads:
            t.join(WAIT)
    assert not any(t.is_alive() for t in threads), "a thread caller is stuck"
    return probe, tally


def plain_task_callers(
    b: Bulkhead, probe: Probe, tally: Tally, go: threading.Event
) -> Callable[[int], Any]:
    async def work(i: int) -> str:
        probe.enter(from_thread=False)
        try:
            await anyio.sleep(0)
            if not go.is_set():
                # The first call in lets the threads go, and stays until one of them is in
                # flight beside it (fail-fast threads could otherwise shut every task out).
                go.set()
                await until(lambda: probe.overlapped, "a thread and a task in flight")
            await anyio.sleep(0)
        finally:
            probe.leave(from_thread=False)
        return "done"

    decorated = b(work)

    async def task_caller(i: int) -> None:
        try:
            if i % 3 == 0:
                assert await b.call_async(work, i) == "done"
            elif i % 3 == 1:
                assert await decorated(i) == "done"
            else:
                async with b:
                    await work(i)
        except BulkheadFullError:
            tally.add(attempts=1, rejected=1)
        except BaseException as exc:
            tally.unexpected.append(exc)
            raise
        else:
            tally.add(attempts=1, ran=1)

    return task_caller


@pytest.mark.parametrize("max_wait", [5.0, 0.0], ids=["waiting", "fail-fast"])
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_threads_and_tasks_never_exceed_the_limit(
    backend: str, max_wait: float, fast_switching: None
) -> None:
    b = Bulkhead(LIMIT, max_wait=max_wait, name="stress")
    probe, tally = run_threads_and_tasks(backend, b, TASKS, plain_task_callers)

    assert tally.unexpected == []
    assert probe.over_limit == []
    assert 1 <= probe.peak <= LIMIT
    assert probe.overlapped
    assert tally.attempts >= THREADS * CALLS_PER_THREAD + TASKS
    assert tally.ran + tally.rejected == tally.attempts
    m = b.metrics()
    assert m.in_flight == 0
    assert m.waiting == 0
    assert m.rejected == tally.rejected
    assert probe.peak <= m.max_observed <= LIMIT
    if max_wait == 0:
        assert tally.rejected > 0  # fail-fast under this load must have refused someone
    else:
        assert tally.rejected == 0  # nobody waits anywhere near 5 s here


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_random_cancellations_under_load_return_every_slot(
    backend: str, fast_switching: None
) -> None:
    # Half the tasks are cancelled at random moments by a chaos task: before they start,
    # while they wait for a slot, or while they run. Threads call at the same time.
    b = Bulkhead(LIMIT, max_wait=WAIT, name="chaos")
    rng = random.Random(1234)
    tasks = 1000
    victims = rng.sample(range(tasks), tasks // 2)

    def chaos_task_callers(
        b: Bulkhead, probe: Probe, tally: Tally, go: threading.Event
    ) -> Callable[[int], Any]:
        scopes = {i: anyio.CancelScope() for i in range(tasks)}

        async def chaos() -> None:
            go.set()
            for i in victims:
                scopes[i].cancel()
                for _ in range(rng.randint(0, 4)):
                    await anyio.sleep(0)

        async def task_caller(i: int) -> None:
            if i == 0:
                await chaos()
                return
            started = False

            async def work() -> None:
                nonlocal started
                started = True
                probe.enter(from_thread=False)
                try:
                    for _ in range(3):
                        await anyio.sleep(0)
                finally:
                    probe.leave(from_thread=False)

            with scopes[i]:
                try:
                    await b.call_async(work)
                except BulkheadFullError:
                    tally.add(attempts=1, rejected=1)
                    return
            if started:
                tally.add(attempts=1, ran=1)
            else:
                assert scopes[i].cancelled_caught
                tally.add(attempts=1, cancelled=1)

        return task_caller

    probe, tally = run_threads_and_tasks(backend, b, tasks, chaos_task_callers)

    assert tally.unexpected == []
    assert probe.over_limit == []
    assert tally.attempts >= THREADS * CALLS_PER_THREAD + tasks - 1
    assert tally.ran + tally.rejected + tally.cancelled == tally.attempts
    assert tally.cancelled > 0
    assert tally.rejected == 0  # nobody waited anywhere near max_wait
    m = b.metrics()
    assert (m.in_flight, m.waiting, m.rejected) == (0, 0, 0)
    assert m.max_observed <= LIMIT
    # Every slot came back: LIMIT callers get in at once, nobody queues.
    for _ in range(LIMIT):
        b.__enter__()
    assert b.metrics() == BulkheadMetrics(LIMIT, LIMIT, 0, 0, LIMIT)
    for _ in range(LIMIT):
        b.__exit__(None, None, None)


# -- FIFO ----------------------------------------------------------------------------------


def test_thread_waiters_are_admitted_in_arrival_order() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    n = 12
    order: list[int] = []
    b.__enter__()  # hold the only slot
    callers = []
    try:
        for i in range(n):
            caller = CallerThread(lambda i=i: b.call(order.append, i))
            caller.start()
            callers.append(caller)
            wait_for(waiting_is(b, i + 1), f"thread {i} to queue")
    finally:
        b.__exit__(None, None, None)
    for caller in callers:
        caller.finish()
        assert caller.error is None
    assert order == list(range(n))
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_task_waiters_are_admitted_in_arrival_order() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    n = 25
    order: list[int] = []
    leave = anyio.Event()

    async def record(i: int) -> None:
        order.append(i)
        await anyio.sleep(0)

    async def holder() -> None:
        async with b:
            await leave.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await until(lambda: b.metrics().in_flight == 1)
        for i in range(n):
            tg.start_soon(b.call_async, record, i)
            await until(waiting_is(b, i + 1), f"task {i} to queue")
        leave.set()
    assert order == list(range(n))
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_threads_and_tasks_share_one_fifo_queue() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    rng = random.Random(7)
    kinds = ["thread"] * 8 + ["task"] * 8
    rng.shuffle(kinds)
    order: list[int] = []
    lock = threading.Lock()
    leave = anyio.Event()

    def record(i: int) -> None:
        with lock:
            order.append(i)

    async def record_async(i: int) -> None:
        record(i)
        await anyio.sleep(0)

    async def holder() -> None:
        async with b:
            await leave.wait()

    threads: list[CallerThread] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await until(lambda: b.metrics().in_flight == 1)
        for i, kind in enumerate(kinds):
            if kind == "thread":
                caller = CallerThread(lambda i=i: b.call(record, i))
                caller.start()
                threads.append(caller)
            else:
                tg.start_soon(b.call_async, record_async, i)
            await until(waiting_is(b, i + 1), f"{kind} {i} to queue")
        leave.set()
        await until(lambda: len(order) == len(kinds), "every waiter to run")
    for caller in threads:
        await anyio.to_thread.run_sync(caller.finish)
        assert caller.error is None
    assert order == list(range(len(kinds)))
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


# -- cancelling waiters at random ----------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("style", ["own-scopes", "task-group"])
async def test_cancelling_half_the_waiters_at_random_returns_every_slot(
    style: str, seed: int
) -> None:
    # Two slots, held; 24 waiters queue one by one; half of them (chosen by the seed) are
    # cancelled while releases happen in between, in a seeded random interleaving. After
    # every step the admissions so far must be exactly those of a FIFO queue.
    rng = random.Random(seed)
    limit, n = 2, 24
    b = Bulkhead(limit, max_wait=WAIT)
    ids = range(limit + n)  # 0 and 1 hold the slots first; then the waiters
    victims = set(rng.sample(range(limit, limit + n), n // 2))
    scopes = {i: anyio.CancelScope() for i in ids}
    leave = {i: anyio.Event() for i in ids}
    admitted: list[int] = []

    async def caller(i: int) -> None:
        with scopes[i]:
            async with b:
                admitted.append(i)
                await leave[i].wait()

    # The model: who holds a slot (oldest first), who waits (arrival order).
    holders: list[int] = []
    queue: list[int] = []
    expected_admitted: list[int] = []

    def free_one_slot() -> None:
        if queue:
            nxt = queue.pop(0)
            holders.append(nxt)
            expected_admitted.append(nxt)

    async def settled() -> None:
        await until(
            lambda: admitted == expected_admitted and b.metrics().waiting == len(queue),
            "the bulkhead to match the model",
        )
        m = b.metrics()
        assert (m.in_flight, m.waiting, m.rejected) == (len(holders), len(queue), 0)

    async def victim_host(*, task_status: anyio.abc.TaskStatus[anyio.abc.TaskGroup]) -> None:
        # A task group of its own, so that cancelling it cancels only the victims.
        async with anyio.create_task_group() as group:
            task_status.started(group)
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        victim_group = await tg.start(victim_host)
        for i in ids:
            group = victim_group if style == "task-group" and i in victims else tg
            group.start_soon(caller, i)
            if len(holders) < limit:
                holders.append(i)
                expected_admitted.append(i)
            else:
                queue.append(i)
            await settled()

        ops = ["release"] * (n // 2)
        if style == "task-group":
            ops.insert(rng.randrange(len(ops) + 1), "cancel-group")
        else:
            ops += ["cancel"] * len(victims)
            rng.shuffle(ops)
        pending_victims = sorted(victims)
        rng.shuffle(pending_victims)
        for op in ops:
            if op == "release":
                if not holders:
                    continue
                i = holders.pop(rng.randrange(len(holders)))
                leave[i].set()
                free_one_slot()
            elif op == "cancel":
                i = pending_victims.pop()
                scopes[i].cancel()
                if i in queue:
                    queue.remove(i)  # leaves the queue, takes no slot
                elif i in holders:
                    holders.remove(i)  # admitted meanwhile: its slot goes to the next
                    free_one_slot()
            else:
                # All victims are cancelled at once: a slot freed by one of them goes to
                # the first waiter that is not a victim.
                victim_group.cancel_scope.cancel()
                queue[:] = [i for i in queue if i not in victims]
                for i in victims & set(holders):
                    holders.remove(i)
                    free_one_slot()
            await settled()

        # Let everyone still holding or queued through.
        for event in leave.values():
            event.set()
        victim_group.cancel_scope.cancel()
    m = b.metrics()
    assert (m.in_flight, m.waiting, m.rejected, m.max_observed) == (0, 0, 0, limit)
    assert not victims & set(admitted[len(expected_admitted) :])

    # Later calls are admitted at once: `limit` of them get in together, nobody queues.
    inside = 0
    go = anyio.Event()

    async def later() -> None:
        nonlocal inside
        async with b:
            inside += 1
            await go.wait()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for _ in range(limit):
                tg.start_soon(later)
            await until(lambda: inside == limit)
            assert b.metrics().waiting == 0
            go.set()
    assert b.metrics() == BulkheadMetrics(limit, 0, 0, 0, limit)


@pytest.mark.parametrize("seed", [0, 1])
def test_thread_waiters_timing_out_at_random_return_every_slot(seed: int) -> None:
    # Threads cannot be cancelled: half the thread waiters (chosen by the seed) are left
    # to time out instead, the others are let in. Consecutive waiters of the same fate
    # queue together; a group to be let in gets one freed slot and passes through it in
    # arrival order before its (short) max_wait runs out.
    rng = random.Random(seed)
    fates = ["time out"] * 6 + ["admit"] * 6
    rng.shuffle(fates)
    groups: list[list[int]] = []
    for i, fate in enumerate(fates):
        if groups and fates[groups[-1][0]] == fate:
            groups[-1].append(i)
        else:
            groups.append([i])

    b = Bulkhead(2, max_wait=0.15)
    order: list[int] = []
    b.__enter__()
    b.__enter__()
    rejected = 0
    try:
        for group in groups:
            callers = []
            for n, i in enumerate(group, start=1):
                caller = CallerThread(lambda i=i: b.call(order.append, i))
                caller.start()
                callers.append(caller)
                # (a waiter of a "time out" group may already be gone when the next queues)
                wait_for(
                    lambda n=n, before=rejected: (
                        b.metrics().waiting + b.metrics().rejected - before >= n
                    ),
                    f"waiter {i} to queue",
                )
            if fates[group[0]] == "time out":
                rejected += len(group)
                wait_for(
                    lambda total=rejected: b.metrics().rejected == total, "the waiters to time out"
                )
                for caller in callers:
                    caller.finish()
                    assert isinstance(caller.error, BulkheadFullError)
            else:
                before = len(order)
                b.__exit__(None, None, None)
                for caller in callers:
                    caller.finish()
                    assert caller.error is None, "an admitted waiter timed out"
                assert order[before:] == group
                b.__enter__()  # the slot is free again: taken back at once
            m = b.metrics()
            assert (m.in_flight, m.waiting, m.rejected) == (2, 0, rejected)
    finally:
        b.__exit__(None, None, None)
        b.__exit__(None, None, None)
    assert sorted(order) == [i for i, fate in enumerate(fates) if fate == "admit"]
    assert b.metrics() == BulkheadMetrics(2, 0, 0, 6, 2)


# -- Hypothesis: enter/exit/call on one thread against a counter model ---------------------


class BulkheadMachine(RuleBasedStateMachine):
    """``__enter__``/``__exit__``/``call`` with ``max_wait=0``, checked against counters."""

    def __init__(self) -> None:
        super().__init__()
        self.b = Bulkhead(1)
        self.limit = 1
        self.held = 0
        self.rejected = 0
        self.peak = 0
        self.events: list[Event] = []

    @initialize(limit=st.integers(min_value=1, max_value=4), name=st.sampled_from([None, "m"]))
    def configure(self, limit: int, name: str | None) -> None:
        self.b = Bulkhead(limit, name=name)
        self.b.add_listener(self.events.append)
        self.limit = limit

    def _admits(self) -> bool:
        if self.held < self.limit:
            return True
        self.rejected += 1
        return False

    @rule()
    def enter(self) -> None:
        if self._admits():
            self.b.__enter__()
            self.held += 1
            self.peak = max(self.peak, self.held)
        else:
            with pytest.raises(BulkheadFullError):
                self.b.__enter__()

    @precondition(lambda self: self.held > 0)
    @rule(with_error=st.booleans())
    def exit(self, with_error: bool) -> None:
        if with_error:
            error = Boom()
            assert self.b.__exit__(Boom, error, None) is False  # never swallows
        else:
            assert self.b.__exit__(None, None, None) is False
        self.held -= 1

    @rule(outcome=st.sampled_from(["return", "raise", "interrupt"]))
    def call(self, outcome: str) -> None:
        seen: list[int] = []

        def fn() -> str:
            seen.append(self.b.metrics().in_flight)
            if outcome == "raise":
                raise Boom
            if outcome == "interrupt":
                raise KeyboardInterrupt
            return "ok"

        if not self._admits():
            with pytest.raises(BulkheadFullError):
                self.b.call(fn)
            assert seen == []
            return
        self.peak = max(self.peak, self.held + 1)
        if outcome == "return":
            assert self.b.call(fn) == "ok"
        else:
            with pytest.raises(Boom if outcome == "raise" else KeyboardInterrupt):
                self.b.call(fn)
        assert seen == [self.held + 1]  # inside the call, it counted as in flight

    @invariant()
    def matches_the_model(self) -> None:
        assert self.b.metrics() == BulkheadMetrics(
            max_concurrent=self.limit,
            in_flight=self.held,
            waiting=0,
            rejected=self.rejected,
            max_observed=self.peak,
        )
        rejections = [e for e in self.events if isinstance(e, CallRejected)]
        assert len(rejections) == self.rejected
        assert all(e.kind == "bulkhead" for e in rejections)

    def teardown(self) -> None:
        for _ in range(self.held):
            self.b.__exit__(None, None, None)
        assert self.b.metrics().in_flight == 0


BulkheadMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
)
TestBulkheadStateMachine = BulkheadMachine.TestCase


# -- Hypothesis: trio tasks, cancellations and time, against a FIFO model ------------------

# Times are multiples of 0.25 s, so the model's deadlines and the mock clock agree exactly.
MAX_WAIT = 1.0

Op = tuple[str, int]
# Arrivals are drawn more often than the rest, so that queues build up.
ops_strategy = st.lists(
    st.tuples(
        st.sampled_from(["arrive", "arrive", "arrive", "release", "cancel", "jump"]),
        st.integers(min_value=0, max_value=15),
    ),
    min_size=5,
    max_size=50,
)
JUMPS = (1, 2, 4)  # quarter seconds


@dataclass
class QueueModel:
    """The contract, restated: slots, a FIFO queue with deadlines, counts."""

    limit: int
    max_wait: float
    now: float = 0.0
    holders: list[int] = field(default_factory=list)
    queue: list[tuple[int, float]] = field(default_factory=list)  # (caller, deadline)
    admitted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    peak: int = 0

    def admit(self, i: int) -> None:
        self.holders.append(i)
        self.admitted.append(i)
        self.peak = max(self.peak, len(self.holders))

    def arrive(self, i: int) -> None:
        if len(self.holders) < self.limit:
            self.admit(i)
        elif self.max_wait == 0:
            self.rejected.append(i)
        else:
            self.queue.append((i, self.now + self.max_wait))

    def free_slot(self) -> None:
        if self.queue:
            self.admit(self.queue.pop(0)[0])

    def leave(self, i: int) -> None:
        """``i`` ends its call (returns or is cancelled) or, if waiting, gives up."""
        if i in self.holders:
            self.holders.remove(i)
            self.free_slot()
        else:
            self.queue = [(j, d) for j, d in self.queue if j != i]

    def jump(self, seconds: float) -> None:
        self.now += seconds
        expired = [j for j, deadline in self.queue if deadline <= self.now]
        self.queue = [(j, d) for j, d in self.queue if d > self.now]
        self.rejected += expired

    def live(self) -> list[int]:
        return sorted(self.holders + [j for j, _ in self.queue])


@settings(
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    limit=st.integers(min_value=1, max_value=3),
    max_wait=st.sampled_from([0.0, MAX_WAIT, MAX_WAIT]),
    ops=ops_strategy,
)
def test_trio_tasks_against_a_fifo_model(limit: int, max_wait: float, ops: list[Op]) -> None:
    model = QueueModel(limit, max_wait)
    b = Bulkhead(limit, max_wait=max_wait, name="model")
    events: list[Event] = []
    b.add_listener(events.append)
    clock = trio.testing.MockClock()

    async def main() -> None:
        admitted: list[int] = []
        rejected: list[int] = []
        scopes: dict[int, trio.CancelScope] = {}
        leave: dict[int, trio.Event] = {}

        async def caller(i: int) -> None:
            with scopes[i]:
                try:
                    async with b:
                        admitted.append(i)
                        await leave[i].wait()
                except BulkheadFullError:
                    rejected.append(i)

        async def settle() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()

        async with trio.open_nursery() as nursery:
            next_id = 0
            for op, arg in ops:
                if op == "arrive":
                    i = next_id
                    next_id += 1
                    scopes[i] = trio.CancelScope()
                    leave[i] = trio.Event()
                    nursery.start_soon(caller, i)
                    model.arrive(i)
                elif op == "release":
                    if not model.holders:
                        continue
                    i = model.holders[arg % len(model.holders)]
                    leave[i].set()
                    if model.queue:
                        hypothesis.event("hand a slot to a waiter")
                    model.leave(i)
                elif op == "cancel":
                    live = model.live()
                    if not live:
                        continue
                    i = live[arg % len(live)]
                    scopes[i].cancel()
                    hypothesis.event("cancel a holder" if i in model.holders else "cancel a waiter")
                    model.leave(i)
                else:
                    seconds = JUMPS[arg % len(JUMPS)] * 0.25
                    clock.jump(seconds)
                    before = len(model.rejected)
                    model.jump(seconds)
                    if len(model.rejected) > before:
                        hypothesis.event("a waiter timed out")
                await settle()

                assert admitted == model.admitted
                assert sorted(rejected) == sorted(model.rejected)
                assert b.metrics() == BulkheadMetrics(
                    max_concurrent=limit,
                    in_flight=len(model.holders),
                    waiting=len(model.queue),
                    rejected=len(model.rejected),
                    max_observed=model.peak,
                )
                assert len(events) == len(model.rejected)
            nursery.cancel_scope.cancel()
        m = b.metrics()
        assert (m.in_flight, m.waiting) == (0, 0)
        assert m.rejected == len(model.rejected)

    trio.run(main, clock=clock)
