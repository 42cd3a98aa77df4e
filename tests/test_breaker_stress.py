"""Stress tests: one circuit breaker shared by many threads and many async tasks at once.

Threads start together on a ``threading.Barrier``; async tasks run in event loops of
their own (asyncio and trio) in other threads at the same time, so sync and async
callers really are mixed on one breaker. State changes are awaited with Events,
Barriers and Semaphores only, never with sleeps; every wait has a bounded timeout so a
bug shows up as a failed assertion instead of a hung test run.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel
import pytest

from resilient import (
    CallFailed,
    CallRejected,
    CallSucceeded,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    Event,
    StateTransition,
)
from resilient.testing import ManualClock

WAIT = 10.0  # bound on every wait: reached only when something is broken
OPEN_DURATION = 30.0


class Boom(Exception):
    """The user's own failure."""


@dataclass
class Tally:
    """What one worker (thread or task) did and saw; merged only after all are done."""

    attempts: int = 0
    ran: int = 0
    failures_raised: int = 0
    succeeded: int = 0
    rejections: list[CircuitOpenError] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.attempts += other.attempts
        self.ran += other.ran
        self.failures_raised += other.failures_raised
        self.succeeded += other.succeeded
        self.rejections += other.rejections
        self.unexpected += other.unexpected


def sync_work(tally: Tally, fail: bool) -> str:
    tally.ran += 1
    if fail:
        tally.failures_raised += 1
        raise Boom
    return "ok"


async def async_work(tally: Tally, fail: bool) -> str:
    tally.ran += 1
    # Suspend inside the breaker so that many async calls are in flight at once.
    await anyio.lowlevel.checkpoint()
    if fail:
        tally.failures_raised += 1
        raise Boom
    return "ok"


def run_mixed_load(
    breaker: CircuitBreaker,
    *,
    threads: int,
    calls_per_thread: int,
    backends: tuple[str, ...],
    tasks_per_loop: int,
    calls_per_task: int,
    should_fail: Callable[[int, int], bool],
    between_calls: Callable[[int, int], None] | None = None,
) -> Tally:
    """Hammer ``breaker`` from threads and from async tasks at once; return the totals.

    ``should_fail(worker, i)`` decides whether call ``i`` of a worker raises ``Boom``;
    ``between_calls(worker, i)`` runs before each call (to move a clock, say).
    Sync workers alternate between the decorator and ``breaker.call``; async workers
    between the decorator and ``breaker.call_async``.
    """
    guarded_sync = breaker(sync_work)
    guarded_async = breaker(async_work)
    start = threading.Barrier(threads + len(backends))
    tallies: list[Tally] = []
    harness_errors: list[BaseException] = []

    def attempt_sync(tally: Tally, worker: int, i: int) -> None:
        fail = should_fail(worker, i)
        tally.attempts += 1
        try:
            result = guarded_sync(tally, fail) if i % 2 else breaker.call(sync_work, tally, fail)
        except Boom:
            pass
        except CircuitOpenError as exc:
            tally.rejections.append(exc)
        except BaseException as exc:
            tally.unexpected.append(exc)
        else:
            assert result == "ok"
            tally.succeeded += 1

    def thread_main(worker: int) -> None:
        tally = Tally()
        tallies.append(tally)
        try:
            start.wait(timeout=WAIT)
            for i in range(calls_per_thread):
                if between_calls is not None:
                    between_calls(worker, i)
                attempt_sync(tally, worker, i)
        except BaseException as exc:
            harness_errors.append(exc)

    async def task_main(tally: Tally, worker: int, go: anyio.Event) -> None:
        await go.wait()
        for i in range(calls_per_task):
            if between_calls is not None:
                between_calls(worker, i)
            fail = should_fail(worker, i)
            tally.attempts += 1
            try:
                if i % 2:
                    result = await guarded_async(tally, fail)
                else:
                    result = await breaker.call_async(async_work, tally, fail)
            except Boom:
                pass
            except CircuitOpenError as exc:
                tally.rejections.append(exc)
            except Exception as exc:
                tally.unexpected.append(exc)
            else:
                assert result == "ok"
                tally.succeeded += 1

    async def loop_main(first_worker: int) -> None:
        go = anyio.Event()
        async with anyio.create_task_group() as tg:
            for n in range(tasks_per_loop):
                tally = Tally()
                tallies.append(tally)
                tg.start_soon(task_main, tally, first_worker + n, go)
            # Every task is parked on `go`; start them all while the threads run.
            await anyio.to_thread.run_sync(lambda: start.wait(timeout=WAIT))
            go.set()

    def loop_thread(backend: str, first_worker: int) -> None:
        try:
            anyio.run(loop_main, first_worker, backend=backend)
        except BaseException as exc:
            harness_errors.append(exc)

    workers = [threading.Thread(target=thread_main, args=(n,)) for n in range(threads)]
    workers += [
        threading.Thread(target=loop_thread, args=(backend, 10_000 * (k + 1)))
        for k, backend in enumerate(backends)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers), "a worker hung"
    assert harness_errors == []
    total = Tally()
    for tally in tallies:
        total.merge(tally)
    return total


def listen(breaker: CircuitBreaker) -> list[Event]:
    events: list[Event] = []
    breaker.add_listener(events.append)  # list.append is atomic: safe from any thread
    return events


def trip(breaker: CircuitBreaker, calls: int) -> None:
    """Open ``breaker`` with ``calls`` failures."""

    def fail() -> None:
        raise Boom

    for _ in range(calls):
        with pytest.raises(Boom):
            breaker.call(fail)
    assert breaker.state is CircuitState.OPEN


def tripped_breaker(half_open_calls: int) -> tuple[CircuitBreaker, ManualClock, list[Event]]:
    """A breaker that has just tripped, its clock, and its events from now on."""
    clock = ManualClock()
    breaker = CircuitBreaker(
        "stress",
        window=CountWindow(4),
        minimum_calls=4,
        open_duration=OPEN_DURATION,
        half_open_calls=half_open_calls,
        clock=clock,
    )
    trip(breaker, 4)
    return breaker, clock, listen(breaker)


def transitions(events: list[Event]) -> list[tuple[CircuitState, CircuitState]]:
    return [(e.from_state, e.to_state) for e in events if isinstance(e, StateTransition)]


# -- counts add up under mixed sync/async load ------------------------------------------


@pytest.mark.usefixtures("fast_switching")
def test_counts_add_up_with_16_threads_and_2000_async_tasks() -> None:
    total_calls = 16 * 1_500 + 2 * 1_000 * 4
    # A window that holds every call, and a minimum it never reaches: it never opens.
    breaker = CircuitBreaker("stress", window=CountWindow(50_000), minimum_calls=50_000)
    events = listen(breaker)

    tally = run_mixed_load(
        breaker,
        threads=16,
        calls_per_thread=1_500,
        backends=("asyncio", "trio"),
        tasks_per_loop=1_000,
        calls_per_task=4,
        should_fail=lambda worker, i: (worker + i) % 3 == 0,
    )

    assert tally.unexpected == []
    assert tally.rejections == []
    assert tally.attempts == tally.ran == total_calls
    assert tally.succeeded + tally.failures_raised == total_calls
    assert 0 < tally.failures_raised < total_calls

    metrics = breaker.metrics()
    assert metrics.state is CircuitState.CLOSED
    assert metrics.calls == total_calls
    assert metrics.failed_calls == tally.failures_raised
    assert metrics.successful_calls == tally.succeeded
    assert metrics.not_permitted_calls == 0

    # One event per call, each recorded, and nothing else.
    kinds = Counter(type(e) for e in events)
    assert kinds == Counter({CallSucceeded: tally.succeeded, CallFailed: tally.failures_raised})
    assert all(e.recorded for e in events if isinstance(e, (CallSucceeded, CallFailed)))
    assert all(isinstance(e.exception, Boom) for e in events if isinstance(e, CallFailed))


@pytest.mark.usefixtures("fast_switching")
def test_small_window_stays_consistent_under_mixed_load() -> None:
    # The window wraps thousands of times: the lock-free success path and the locked
    # failure path write the same ring concurrently.
    breaker = CircuitBreaker(
        "stress", window=CountWindow(64), minimum_calls=64, failure_rate_threshold=1.0
    )
    events = listen(breaker)

    tally = run_mixed_load(
        breaker,
        threads=16,
        calls_per_thread=1_000,
        backends=("asyncio",),
        tasks_per_loop=1_000,
        calls_per_task=2,
        # Only worker 0 ever fails, and only on odd calls: the rate never reaches 1.0.
        should_fail=lambda worker, i: worker == 0 and i % 2 == 1,
    )

    assert tally.unexpected == []
    assert tally.rejections == []
    metrics = breaker.metrics()
    assert metrics.state is CircuitState.CLOSED
    assert metrics.calls == 64
    assert 0 <= metrics.failed_calls <= min(tally.failures_raised, 64)
    assert metrics.successful_calls + metrics.failed_calls == metrics.calls
    assert metrics.failure_rate == metrics.failed_calls / 64
    kinds = Counter(type(e) for e in events)
    assert kinds == Counter({CallSucceeded: tally.succeeded, CallFailed: tally.failures_raised})


@pytest.mark.usefixtures("fast_switching")
def test_breaker_cycling_through_states_under_mixed_load() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "stress",
        window=CountWindow(20),
        minimum_calls=10,
        failure_rate_threshold=0.5,
        open_duration=1.0,
        half_open_calls=3,
        clock=clock,
    )
    events = listen(breaker)

    def advance_now_and_then(worker: int, i: int) -> None:
        if (worker + i) % 50 == 0:
            clock.advance(1.0)  # lets an OPEN breaker try HALF_OPEN

    tally = run_mixed_load(
        breaker,
        threads=16,
        calls_per_thread=1_000,
        backends=("asyncio", "trio"),
        tasks_per_loop=500,
        calls_per_task=4,
        should_fail=lambda worker, i: (worker * 7 + i) % 5 < 3,  # 60 % failures
        between_calls=advance_now_and_then,
    )

    # Only the user's exception or a rejection ever reaches a caller.
    assert tally.unexpected == []
    assert tally.attempts == tally.ran + len(tally.rejections)
    assert tally.ran == tally.succeeded + tally.failures_raised
    assert tally.rejections, "the breaker never opened"
    for rejection in tally.rejections:
        assert rejection.state in {CircuitState.OPEN, CircuitState.HALF_OPEN}
        if rejection.state is CircuitState.OPEN:
            assert rejection.retry_after is not None
            assert 0.0 < rejection.retry_after <= 1.0
        else:
            assert rejection.retry_after is None
    assert len({id(r) for r in tally.rejections}) == len(tally.rejections)

    # One event per call: a success, a failure or a rejection.
    kinds = Counter(type(e) for e in events)
    assert kinds[CallSucceeded] == tally.succeeded
    assert kinds[CallFailed] == tally.failures_raised
    assert kinds[CallRejected] == len(tally.rejections)
    rejected_errors = [e.error for e in events if isinstance(e, CallRejected)]
    assert {id(e) for e in rejected_errors} == {id(r) for r in tally.rejections}

    # Transitions may be delivered out of order across threads, but they form one path
    # from CLOSED to the final state over legal edges only.
    edges = transitions(events)
    assert edges, "the breaker never changed state"
    legal = {
        (CircuitState.CLOSED, CircuitState.OPEN),
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    }
    assert set(edges) <= legal
    final = breaker.state
    balance: Counter[CircuitState] = Counter()
    for source, target in edges:
        balance[source] -= 1
        balance[target] += 1
    expected: Counter[CircuitState] = Counter()
    expected[CircuitState.CLOSED] -= 1
    expected[final] += 1
    assert {s: n for s, n in balance.items() if n} == {s: n for s, n in expected.items() if n}

    metrics = breaker.metrics()
    assert metrics.successful_calls + metrics.failed_calls == metrics.calls
    assert metrics.calls <= 20


# -- HALF_OPEN admits exactly half_open_calls concurrent trials --------------------------


@pytest.mark.parametrize("half_open_calls", [1, 3, 8])
@pytest.mark.usefixtures("fast_switching")
def test_half_open_admits_exactly_half_open_calls_threads(half_open_calls: int) -> None:
    breaker, clock, events = tripped_breaker(half_open_calls)
    clock.advance(OPEN_DURATION)
    callers = 24
    start = threading.Barrier(callers)
    release = threading.Event()
    lock = threading.Lock()
    inside = 0
    arrived = threading.Semaphore(0)  # one release per caller inside or rejected
    results: list[str] = []
    rejections: list[CircuitOpenError] = []
    unexpected: list[BaseException] = []

    def dependency() -> str:
        nonlocal inside
        with lock:
            inside += 1
        arrived.release()
        if not release.wait(timeout=WAIT):
            raise RuntimeError("never released")
        return "ok"

    def caller() -> None:
        try:
            start.wait(timeout=WAIT)
            result = breaker.call(dependency)
        except CircuitOpenError as exc:
            rejections.append(exc)
            arrived.release()
        except BaseException as exc:
            unexpected.append(exc)
            arrived.release()
        else:
            results.append(result)

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    try:
        for thread in threads:
            thread.start()
        for _ in range(callers):
            assert arrived.acquire(timeout=WAIT), "a caller neither got in nor was rejected"
        # Every caller is now either blocked inside the dependency or rejected.
        assert unexpected == []
        assert inside == half_open_calls
        assert len(rejections) == callers - half_open_calls
        for rejection in rejections:
            assert rejection.retry_after is None
            assert rejection.state is CircuitState.HALF_OPEN
        assert breaker.state is CircuitState.HALF_OPEN
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=WAIT)
    assert results == ["ok"] * half_open_calls
    assert breaker.state is CircuitState.CLOSED
    assert transitions(events) == [
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]
    assert breaker.metrics().calls == 0  # CLOSED starts from a fresh window


@pytest.mark.parametrize("half_open_calls", [1, 5])
async def test_half_open_admits_exactly_half_open_calls_tasks(half_open_calls: int) -> None:
    breaker, clock, events = tripped_breaker(half_open_calls)
    clock.advance(OPEN_DURATION)
    callers = 250
    go = anyio.Event()
    release = anyio.Event()
    all_arrived = anyio.Event()
    inside = 0
    arrived = 0
    results: list[str] = []
    rejections: list[CircuitOpenError] = []

    def mark_arrived() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == callers:
            all_arrived.set()

    async def dependency() -> str:
        nonlocal inside
        inside += 1
        mark_arrived()
        await release.wait()
        return "ok"

    async def caller() -> None:
        await go.wait()
        try:
            results.append(await breaker.call_async(dependency))
        except CircuitOpenError as exc:
            rejections.append(exc)
            mark_arrived()

    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)
        await anyio.lowlevel.checkpoint()
        go.set()
        with anyio.fail_after(WAIT):
            await all_arrived.wait()
        assert inside == half_open_calls
        assert len(rejections) == callers - half_open_calls
        assert all(r.retry_after is None for r in rejections)
        assert all(r.state is CircuitState.HALF_OPEN for r in rejections)
        release.set()

    assert results == ["ok"] * half_open_calls
    assert breaker.state is CircuitState.CLOSED
    assert transitions(events) == [
        (CircuitState.OPEN, CircuitState.HALF_OPEN),
        (CircuitState.HALF_OPEN, CircuitState.CLOSED),
    ]


@pytest.mark.usefixtures("fast_switching")
def test_half_open_admits_exactly_half_open_calls_threads_and_tasks_together() -> None:
    half_open_calls = 4
    breaker, clock, events = tripped_breaker(half_open_calls)
    clock.advance(OPEN_DURATION)
    n_threads, n_tasks = 20, 200
    start = threading.Barrier(n_threads + 1)
    release = threading.Event()
    lock = threading.Lock()
    inside = 0
    arrived = threading.Semaphore(0)
    results: list[str] = []
    rejections: list[CircuitOpenError] = []
    unexpected: list[BaseException] = []

    def entered() -> None:
        nonlocal inside
        with lock:
            inside += 1
        arrived.release()

    def sync_dependency() -> str:
        entered()
        if not release.wait(timeout=WAIT):
            raise RuntimeError("never released")
        return "sync"

    async def async_dependency() -> str:
        entered()
        # Block the task (not its loop) until the test releases the trials.
        await anyio.to_thread.run_sync(release.wait, WAIT)
        return "async"

    def thread_caller() -> None:
        try:
            start.wait(timeout=WAIT)
            result = breaker.call(sync_dependency)
        except CircuitOpenError as exc:
            rejections.append(exc)
            arrived.release()
        except BaseException as exc:
            unexpected.append(exc)
            arrived.release()
        else:
            results.append(result)

    async def task_caller(go: anyio.Event) -> None:
        await go.wait()
        try:
            result = await breaker.call_async(async_dependency)
        except CircuitOpenError as exc:
            rejections.append(exc)
            arrived.release()
        else:
            results.append(result)

    async def loop_main() -> None:
        go = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(n_tasks):
                tg.start_soon(task_caller, go)
            await anyio.to_thread.run_sync(lambda: start.wait(timeout=WAIT))
            go.set()

    def loop_thread() -> None:
        try:
            anyio.run(loop_main, backend="asyncio")
        except BaseException as exc:
            unexpected.append(exc)

    threads = [threading.Thread(target=thread_caller) for _ in range(n_threads)]
    threads.append(threading.Thread(target=loop_thread))
    try:
        for thread in threads:
            thread.start()
        for _ in range(n_threads + n_tasks):
            assert arrived.acquire(timeout=WAIT), "a caller neither got in nor was rejected"
        assert unexpected == []
        assert inside == half_open_calls
        assert len(rejections) == n_threads + n_tasks - half_open_calls
        assert all(r.retry_after is None for r in rejections)
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=WAIT)
    assert unexpected == []
    assert len(results) == half_open_calls
    assert breaker.state is CircuitState.CLOSED
    assert transitions(events)[-1] == (CircuitState.HALF_OPEN, CircuitState.CLOSED)


@pytest.mark.parametrize("half_open_calls", [1, 3])
def test_half_open_admission_is_exact_round_after_round(half_open_calls: int) -> None:
    # The race that matters is two callers both seeing OPEN expire and both entering
    # HALF_OPEN (each resetting the permits), so it is run many times with the
    # interpreter switching threads as often as it can.
    rounds, callers = 200, 16
    clock = ManualClock()
    breaker = CircuitBreaker(
        "stress",
        window=CountWindow(1),
        minimum_calls=1,
        open_duration=1.0,
        half_open_calls=half_open_calls,
        clock=clock,
    )
    events = listen(breaker)
    start = threading.Barrier(callers + 1, timeout=WAIT)
    arrived = threading.Barrier(callers + 1, timeout=WAIT)  # everyone in, or rejected
    done = threading.Barrier(callers + 1, timeout=WAIT)  # every call has returned
    lock = threading.Lock()
    inside = 0
    errors: list[BaseException] = []
    retry_afters: set[float | None] = set()

    def dependency() -> None:
        nonlocal inside
        with lock:
            inside += 1
        arrived.wait()

    def caller() -> None:
        try:
            for _ in range(rounds):
                start.wait()
                try:
                    breaker.call(dependency)
                except CircuitOpenError as exc:
                    retry_afters.add(exc.retry_after)
                    arrived.wait()
                done.wait()
        except BaseException as exc:
            errors.append(exc)

    def fail() -> None:
        raise Boom

    threads = [threading.Thread(target=caller) for _ in range(callers)]
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for n in range(rounds):
            with pytest.raises(Boom):
                breaker.call(fail)
            assert breaker.state is CircuitState.OPEN
            clock.advance(1.0)
            inside = 0
            start.wait()
            arrived.wait()
            assert inside == half_open_calls, f"round {n}"
            done.wait()
            assert breaker.state is CircuitState.CLOSED, f"round {n}"
    except BaseException:
        for barrier in (start, arrived, done):
            barrier.abort()  # free the callers at once
        raise
    finally:
        sys.setswitchinterval(old)
        for thread in threads:
            thread.join(timeout=WAIT)
    assert errors == []
    assert retry_afters == {None}  # rejected in HALF_OPEN, never OPEN
    edges = Counter(transitions(events))
    assert edges == Counter(
        {
            (CircuitState.CLOSED, CircuitState.OPEN): rounds,
            (CircuitState.OPEN, CircuitState.HALF_OPEN): rounds,
            (CircuitState.HALF_OPEN, CircuitState.CLOSED): rounds,
        }
    )


# -- cancellation gives half-open permits back and records nothing -----------------------


async def test_cancelled_trials_release_their_permits() -> None:
    half_open_calls = 3
    breaker, clock, events = tripped_breaker(half_open_calls)
    clock.advance(OPEN_DURATION)
    inside = 0
    all_inside = anyio.Event()

    async def hang() -> None:
        nonlocal inside
        inside += 1
        if inside == half_open_calls:
            all_inside.set()
        await anyio.sleep_forever()

    async def ok() -> str:
        return "ok"

    async with anyio.create_task_group() as tg:
        for _ in range(half_open_calls):
            tg.start_soon(breaker.call_async, hang)
        with anyio.fail_after(WAIT):
            await all_inside.wait()
        with pytest.raises(CircuitOpenError) as info:
            await breaker.call_async(ok)  # every permit is taken
        assert info.value.retry_after is None
        tg.cancel_scope.cancel()

    # The cancelled trials decided nothing and recorded nothing ...
    metrics = breaker.metrics()
    assert metrics.state is CircuitState.HALF_OPEN
    assert metrics.calls == 0
    assert metrics.failed_calls == 0
    assert not any(isinstance(e, (CallFailed, CallSucceeded)) for e in events)
    # ... and gave their permits back: new trials are admitted and decide.
    for _ in range(half_open_calls):
        assert await breaker.call_async(ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


async def test_cancelled_trial_is_not_a_failure_in_the_decision() -> None:
    # Two trials: one cancelled, one successful. Had the cancellation counted as a
    # failure, the rate would be 1/2 >= 0.5 and the breaker would reopen.
    breaker, clock, events = tripped_breaker(half_open_calls=2)
    clock.advance(OPEN_DURATION)
    entered = anyio.Event()

    async def hang() -> None:
        entered.set()
        await anyio.sleep_forever()

    async def ok() -> str:
        return "ok"

    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(breaker.call_async, hang)
            with anyio.fail_after(WAIT):
                await entered.wait()
            assert await breaker.call_async(ok) == "ok"  # trial 2 of 2
            scope.cancel()
    assert scope.cancelled_caught
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.metrics().calls == 1
    assert await breaker.call_async(ok) == "ok"  # takes the cancelled trial's permit
    assert breaker.state is CircuitState.CLOSED
    assert not any(isinstance(e, CallFailed) for e in events)


async def rush_and_cancel(breaker: CircuitBreaker, callers: int) -> int:
    """Let ``callers`` tasks call at once, cancel those admitted; return how many were."""
    inside = 0
    rejected = 0
    retry_afters: set[float | None] = set()
    everyone = anyio.Event()

    def arrive() -> None:
        if inside + rejected == callers:
            everyone.set()

    async def hang() -> None:
        nonlocal inside
        inside += 1
        arrive()
        await anyio.sleep_forever()

    async def caller() -> None:
        nonlocal rejected
        try:
            await breaker.call_async(hang)
        except CircuitOpenError as exc:
            retry_afters.add(exc.retry_after)
            rejected += 1
            arrive()

    async with anyio.create_task_group() as tg:
        for _ in range(callers):
            tg.start_soon(caller)
        with anyio.fail_after(WAIT):
            await everyone.wait()
        tg.cancel_scope.cancel()
    assert retry_afters == {None}  # HALF_OPEN with every trial taken
    return inside


async def test_cancellation_rounds_with_200_tasks() -> None:
    # Round after round, 200 tasks rush a HALF_OPEN breaker; the few admitted are
    # cancelled. A leaked permit would shrink the next round's admissions.
    half_open_calls = 5
    breaker, clock, events = tripped_breaker(half_open_calls)
    clock.advance(OPEN_DURATION)
    callers = 200

    for _ in range(10):
        assert await rush_and_cancel(breaker, callers) == half_open_calls

    metrics = breaker.metrics()
    assert metrics.state is CircuitState.HALF_OPEN
    assert metrics.calls == 0
    assert metrics.failed_calls == 0
    assert metrics.not_permitted_calls == 10 * (callers - half_open_calls)
    assert not any(isinstance(e, CallFailed) for e in events)


async def test_cancelled_call_in_closed_is_not_recorded() -> None:
    breaker = CircuitBreaker("stress", window=CountWindow(10), minimum_calls=1)
    events = listen(breaker)
    entered = anyio.Event()

    async def hang() -> None:
        entered.set()
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(breaker.call_async, hang)
        with anyio.fail_after(WAIT):
            await entered.wait()
        tg.cancel_scope.cancel()

    # With minimum_calls=1, one recorded failure would have opened the breaker.
    assert breaker.state is CircuitState.CLOSED
    assert breaker.metrics().calls == 0
    assert events == []


def test_interrupted_sync_trial_releases_its_permit() -> None:
    breaker, clock, events = tripped_breaker(half_open_calls=1)
    clock.advance(OPEN_DURATION)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        breaker.call(interrupted)
    assert breaker.metrics().calls == 0
    assert breaker.call(lambda: "ok") == "ok"  # the permit came back
    assert breaker.state is CircuitState.CLOSED
    assert not any(isinstance(e, CallFailed) for e in events)


def test_interrupt_while_announcing_half_open_releases_the_permit() -> None:
    # A KeyboardInterrupt can land anywhere, for instance in the listener (or the log
    # handler) announcing OPEN -> HALF_OPEN, after the call has taken its trial permit
    # but before the user's function started. The permit must come back.
    breaker, clock, _ = tripped_breaker(half_open_calls=1)

    def interrupt_on_half_open(event: Event) -> None:
        if isinstance(event, StateTransition) and event.to_state is CircuitState.HALF_OPEN:
            raise KeyboardInterrupt

    breaker.add_listener(interrupt_on_half_open)
    clock.advance(OPEN_DURATION)
    started: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        breaker.call(started.append, 1)
    assert started == []  # the interrupted call never ran
    breaker.remove_listener(interrupt_on_half_open)

    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.retry_after == 0.0  # the trial permit is free again
    assert breaker.call(lambda: "ok") == "ok"
    assert breaker.state is CircuitState.CLOSED
