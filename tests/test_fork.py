"""Policies survive ``os.fork()``: a child can use every policy its parent made.

A forked child has only the thread that forked. Each test puts a policy in a state that
other threads of the parent hold (a lock, worker threads, bulkhead slots, a half-open
trial, queued waiters), forks, and checks in the child that the policy works. The child
reports through its exit code; a child that hangs is killed and fails the test, so a
deadlock cannot block the suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import resilient
from resilient import (
    Bulkhead,
    CircuitBreaker,
    CountWindow,
    Fallback,
    KeyedRateLimiter,
    RateLimiter,
    Registry,
    Retry,
    RetryBudget,
    RetryThrottle,
    Timeout,
)
from resilient._core import _events, _fork
from resilient._policies import _policy
from resilient._waiting import _timer
from resilient._waiting._workers import FINISHED, Job, WorkerPool
from resilient.testing import ManualClock, capture_events

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="os.fork() is not available on this platform"
)

HANG_LIMIT = 20.0  # seconds a child may take before it is deemed hung


def in_child(check: Callable[[], object]) -> None:
    """Run ``check`` in a forked child; fail if it raises or does not finish."""
    wait_for(fork_and_check(check))


def fork_and_check(check: Callable[[], object]) -> int:
    """Fork; the child runs ``check`` and exits (0 if it passed); the parent gets the pid."""
    with warnings.catch_warnings():
        # 3.12+ warns that forking a multi-threaded process may deadlock: that is
        # exactly what these tests check does not happen.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, whose coverage is not collected
        code = 1
        try:
            check()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)
    return pid


def wait_for(pid: int) -> None:
    """Wait for the child ``pid``: fail if its check failed, kill it if it hangs."""
    deadline = time.monotonic() + HANG_LIMIT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hung for {HANG_LIMIT}s")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed in the child (see stderr)"


def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (yielding between looks); fail after ``HANG_LIMIT`` seconds."""
    deadline = time.monotonic() + HANG_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        threading.Event().wait(0.001)


async def until_async(predicate: Callable[[], bool], sleep: Callable[[float], Any]) -> None:
    """Poll ``predicate`` from a task, yielding to its loop; fail after ``HANG_LIMIT``."""
    deadline = time.monotonic() + HANG_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the task to queue")
        await sleep(0)


@contextlib.contextmanager
def held_by_thread(lock: Any) -> Iterator[None]:
    """Hold ``lock`` from another thread for the duration of the block."""
    taken = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            release.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    taken.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()


@contextlib.contextmanager
def blocked_calls(
    policy_call: Callable[[Callable[[], None]], object], count: int
) -> Iterator[None]:
    """``count`` parent threads each inside ``policy_call``, blocked until the block ends."""
    entered = threading.Semaphore(0)
    release = threading.Event()

    def body() -> None:
        entered.release()
        release.wait()

    def run() -> None:
        with contextlib.suppress(resilient.ResilienceError):
            policy_call(body)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for _ in range(count):
        entered.acquire()
    try:
        yield
    finally:
        release.set()
        for thread in threads:
            thread.join()


# -- item 12.1: worker pools ------------------------------------------------------------


def test_sync_timeout_works_in_a_child_after_idle_workers() -> None:
    timeout = Timeout(2.0, max_workers=2)
    for _ in range(4):
        assert timeout.call(lambda: 1) == 1

    def check() -> None:
        for _ in range(5):
            assert timeout.call(lambda: 2) == 2
        metrics = timeout.metrics()
        assert (metrics.timeouts, metrics.rejected, metrics.workers) == (0, 0, 1)

    in_child(check)


def test_sync_timeout_works_in_a_child_after_busy_workers() -> None:
    timeout = Timeout(30.0, max_workers=2)
    with blocked_calls(timeout.call, 2):
        assert timeout.metrics().busy_workers == 2

        def check() -> None:
            before = timeout.metrics()
            assert (before.workers, before.busy_workers, before.abandoned_running) == (0, 0, 0)
            assert timeout.call(lambda: 3) == 3
            assert timeout.metrics().rejected == 0

        in_child(check)


def test_abandoned_calls_of_the_parent_are_not_counted_in_a_child() -> None:
    # Long enough that the child's call (which starts a worker thread in a freshly
    # forked process) never runs out of time on a loaded machine; the parent's call
    # waits it out once.
    timeout = Timeout(1.0, max_workers=1)
    release = threading.Event()
    with pytest.raises(resilient.TimeoutExceededError):
        timeout.call(release.wait)
    assert timeout.metrics().abandoned_running == 1
    try:

        def check() -> None:
            assert timeout.metrics().abandoned_running == 0
            assert timeout.call(lambda: 4) == 4

        in_child(check)
    finally:
        release.set()


def test_a_job_that_forks_can_use_its_timeout_in_the_child() -> None:
    # The child goes on in the worker thread that ran the job; the parent's other
    # worker (idle, and gone in the child) must not be handed the child's calls.
    timeout = Timeout(2.0, max_workers=2)
    with blocked_calls(timeout.call, 2):
        pass  # two workers now exist, both idle

    def check() -> None:
        for _ in range(3):
            assert timeout.call(lambda: 9) == 9
        assert timeout.metrics().workers == 1

    pid = timeout.call(fork_and_check, check)
    wait_for(pid)
    assert timeout.metrics().workers == 2  # the parent's pool is untouched


def test_a_worker_of_the_old_generation_settles_nothing_in_the_new_one() -> None:
    # What a child forked by a job sees: the worker that forked is the pool's only
    # survivor. Reset in-process, the old worker plays that part deterministically.
    pool = WorkerPool(2, "gen")
    started, release = threading.Event(), threading.Event()

    def job_body() -> None:
        started.set()
        release.wait()

    job = Job(job_body, (), {}, contextvars.copy_context())
    assert pool.submit(job)
    started.wait()
    pool._after_fork_in_child()
    assert pool.stats() == (0, 0, 0)
    release.set()
    assert job.wait(30.0)
    old = [t for t in threading.enumerate() if t.name == "resilient-timeout-gen"]
    for thread in old:
        thread.join(timeout=30.0)
        assert not thread.is_alive()  # it left instead of idling in the new generation
    assert pool.stats() == (0, 0, 0)
    done = Job(lambda: 5, (), {}, contextvars.copy_context())
    assert pool.submit(done)
    assert done.wait(30.0)
    assert done.result == 5


# -- item 12.4: locks held by other threads at fork ---------------------------------------


def test_breaker_with_its_lock_held_by_another_thread_works_in_a_child() -> None:
    breaker = CircuitBreaker("forked", minimum_calls=2, window=CountWindow(2))

    def fail() -> None:
        raise ValueError

    def check() -> None:
        assert breaker.metrics().calls == 0
        assert breaker.call(lambda: 1) == 1
        with pytest.raises(ValueError):
            breaker.call(fail)
        assert breaker.state is resilient.CircuitState.OPEN
        assert breaker.metrics().failed_calls == 1

    with held_by_thread(breaker._core._lock):
        in_child(check)


def _fail() -> None:
    raise ValueError


def _raises_value_error(call: Callable[[Callable[[], None]], object]) -> None:
    with pytest.raises(ValueError):
        call(_fail)


LOCK_CASES: list[tuple[str, Callable[[], tuple[Any, Callable[[], object]]]]] = [
    (
        "bulkhead",
        lambda: (b := Bulkhead(2, max_wait=0.5), b._core._lock, lambda: _fill_and_read(b)),
    ),
    ("rate_limiter", lambda: (r := RateLimiter(1e6), r._core._lock, lambda: r.call(lambda: 1))),
    (
        "keyed_rate_limiter",
        lambda: (
            k := KeyedRateLimiter(1e6, key=lambda: "k"),
            k._core._lock,
            lambda: k.call(lambda: 1),
        ),
    ),
    (
        "timeout",
        lambda: (t := Timeout(0.01), t._core._count_lock, lambda: _times_out(t)),
    ),
    (
        "fallback",
        lambda: (f := Fallback(lambda exc: 1), f._core._lock, lambda: f.call(_fail)),
    ),
    (
        "retry",
        lambda: (
            r := Retry(2, wait=0, on=ValueError),
            r._core._lock,
            lambda: _raises_value_error(r.call),
        ),
    ),
    (
        "retry_budget",
        lambda: (
            b := RetryBudget(),
            b._lock,
            lambda: _raises_value_error(Retry(2, wait=0, budget=b).call),
        ),
    ),
    (
        "retry_throttle",
        lambda: (
            b := RetryThrottle(),
            b._lock,
            lambda: _raises_value_error(Retry(2, wait=0, budget=b).call),
        ),
    ),
    (
        "registry",
        lambda: (r := Registry(), r._lock, lambda: r.circuit_breaker("made-in-child")),
    ),
    ("manual_clock", lambda: (c := ManualClock(), c._lock, lambda: c.advance(1))),
    ("policy_creation", lambda: (None, _policy._LIVE_LOCK, lambda: CircuitBreaker("child"))),
    ("first_context_manager_use", lambda: (None, _policy._CREATE_LOCK, _first_block)),
    (
        "global_listeners",
        lambda: (None, _events._global_lock, _capture),
    ),
]


def _times_out(timeout: Timeout) -> None:
    with pytest.raises(resilient.TimeoutExceededError):
        timeout.call(time.sleep, 1)


def _capture() -> None:
    with capture_events() as events:
        CircuitBreaker("captured").force_open()
    assert events


def _fill_and_read(bulkhead: Bulkhead) -> None:
    with bulkhead, bulkhead:
        assert bulkhead.metrics().in_flight == 2


def _first_block() -> None:
    with Bulkhead(1):
        pass


@pytest.mark.parametrize(("name", "make"), LOCK_CASES, ids=[name for name, _ in LOCK_CASES])
def test_a_lock_held_by_another_thread_does_not_hang_the_child(
    name: str, make: Callable[[], tuple[Any, Any, Callable[[], object]]]
) -> None:
    _owner, lock, use = make()
    with held_by_thread(lock):
        in_child(use)


def test_every_lock_of_the_library_is_reset_in_a_child() -> None:
    # Locks made directly escape the fork hook; only per-call objects (a job's lock, a
    # blocked thread's wake-up lock), which no child ever inherits in use, may do so.
    allowed = {"_fork.py": 1, "_workers.py": 2, "_waiters.py": 1}
    source = Path(resilient.__file__).parent
    pattern = re.compile(r"threading\.(Lock|RLock|Condition|Semaphore|BoundedSemaphore)\(")
    found = {
        path.name: len(pattern.findall(path.read_text(encoding="utf-8")))
        for path in source.rglob("*.py")
    }
    assert {name: count for name, count in found.items() if count} == allowed


# -- per-process structures: bulkhead slots, half-open trials, waiters, timers -----------


def test_bulkhead_full_in_the_parent_has_every_slot_free_in_a_child() -> None:
    bulkhead = Bulkhead(2)
    with blocked_calls(bulkhead.call, 2):
        assert bulkhead.metrics().in_flight == 2

        def check() -> None:
            assert bulkhead.metrics().in_flight == 0
            with bulkhead, bulkhead:
                assert bulkhead.metrics().in_flight == 2
                with pytest.raises(resilient.BulkheadFullError):
                    bulkhead.call(lambda: None)
            assert bulkhead.metrics().in_flight == 0

        in_child(check)


def test_bulkhead_waiters_of_the_parent_are_dropped_in_a_child() -> None:
    bulkhead = Bulkhead(1, max_wait=30.0)
    with blocked_calls(bulkhead.call, 1):
        waiter = threading.Thread(target=bulkhead.call, args=(lambda: None,), daemon=True)
        waiter.start()
        until(lambda: bulkhead.metrics().waiting == 1, "a thread to queue")

        def check() -> None:
            assert bulkhead.metrics().waiting == 0
            assert bulkhead.call(lambda: 6) == 6
            assert bulkhead.metrics().in_flight == 0

        in_child(check)
    waiter.join()


def test_a_slot_taken_before_the_fork_does_not_raise_the_limit_in_the_child() -> None:
    bulkhead = Bulkhead(1)
    bulkhead.__enter__()  # by hand, so that the child can give the slot back by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            bulkhead.__exit__(None, None, None)
            code = 0 if bulkhead.metrics().in_flight == 0 else 2
            with bulkhead:
                code = code or (0 if bulkhead.metrics().in_flight == 1 else 3)
        finally:
            os._exit(code)
    bulkhead.__exit__(None, None, None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_half_open_trial_held_by_a_parent_thread_is_free_in_a_child() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "trial",
        minimum_calls=1,
        window=CountWindow(1),
        open_duration=10.0,
        half_open_calls=1,
        clock=clock,
    )
    with pytest.raises(ValueError):
        breaker.call(_fail)
    clock.advance(10.0)
    with blocked_calls(breaker.call, 1):
        assert breaker.state is resilient.CircuitState.HALF_OPEN
        with pytest.raises(resilient.CircuitOpenError):
            breaker.call(lambda: None)

        def check() -> None:
            assert breaker.call(lambda: 7) == 7
            assert breaker.state is resilient.CircuitState.CLOSED

        in_child(check)
    assert breaker.state is resilient.CircuitState.CLOSED  # the parent's trial decided


def test_async_timeouts_work_in_a_child_of_a_process_with_a_loop_in_another_thread() -> None:
    timeout = Timeout(30.0)
    short = Timeout(0.01)
    loop = asyncio.new_event_loop()
    running = threading.Event()
    release: asyncio.Event | None = None

    async def parent_side() -> None:
        nonlocal release
        release = asyncio.Event()
        running.set()
        await timeout.call_async(release.wait)

    thread = threading.Thread(target=loop.run_until_complete, args=(parent_side(),))
    thread.start()
    running.wait()

    async def child_side() -> None:
        assert await timeout.call_async(asyncio.sleep, 0, 8) == 8
        with pytest.raises(resilient.TimeoutExceededError):
            await short.call_async(asyncio.sleep, 30)

    try:
        in_child(lambda: asyncio.run(child_side()))
    finally:
        assert release is not None
        loop.call_soon_threadsafe(release.set)
        thread.join()
        loop.close()


# -- the resets themselves, run in this process ------------------------------------------
# What a child runs is not measured by coverage, and a child cannot show that the
# forking thread's own leftovers are handled. Each reset is also driven here directly,
# from the thread that plays the one that forked.


def test_the_fork_hook_unlocks_owned_and_module_locks_then_resets_owners(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_fork, "_owned", {})
    monkeypatch.setattr(_fork, "_module_locks", [])
    monkeypatch.setattr(_fork, "_callbacks", [])
    order: list[str] = []

    class Owner:
        def __init__(self) -> None:
            self.first = _fork.new_lock(self)
            self.second = _fork.new_lock(self)

        def _after_fork_in_child(self) -> None:
            order.append(f"owner {self.first.locked()} {self.second.locked()}")

    class Failing:
        def __init__(self) -> None:
            self.lock = _fork.new_lock(self)

        def _after_fork_in_child(self) -> None:
            raise RuntimeError("a reset that fails")

    owner, failing, gone = Owner(), Failing(), Owner()
    module_lock = _fork.new_lock()
    _fork.on_fork_in_child(lambda: order.append(f"module {module_lock.locked()}"))
    assert len(_fork._owned) == 3
    del gone  # forgotten with its owner
    assert len(_fork._owned) == 2
    for lock in (owner.first, owner.second, failing.lock, module_lock):
        lock.acquire()
    _fork._after_fork_in_child()
    assert order == ["module False", "owner False False"]  # and the failure was logged
    assert not failing.lock.locked()


def test_a_job_that_resets_its_own_pool_is_settled_by_nobody() -> None:
    # The hook running in the worker that forked: its job's caller is gone, so the job
    # gets fresh primitives (nobody waits on them) and the worker leaves when it is done.
    pool = WorkerPool(1, "own")
    workers: list[threading.Thread] = []

    def reset_from_the_worker() -> None:
        workers.append(threading.current_thread())
        pool._after_fork_in_child()

    job = Job(reset_from_the_worker, (), {}, contextvars.copy_context())
    old_done = job._done
    assert pool.submit(job)
    until(lambda: bool(workers), "the job to start")
    workers[0].join(timeout=30.0)
    assert not workers[0].is_alive()
    assert job._done is not old_done
    assert job.state == FINISHED
    assert pool.stats() == (0, 0, 0)
    assert pool.retire(workers[0])  # type: ignore[arg-type]  # an old worker may always leave


def test_bulkhead_reset_frees_slots_drops_thread_waiters_and_absorbs_old_releases() -> None:
    bulkhead = Bulkhead(2, max_wait=0.05)
    with blocked_calls(bulkhead.call, 2):
        queued = threading.Thread(target=_rejected_or_done, args=(bulkhead,), daemon=True)
        queued.start()
        until(lambda: bulkhead.metrics().waiting == 1, "a thread to queue")
        admitted = bulkhead.metrics().admitted
        bulkhead._core._after_fork_in_child()
        metrics = bulkhead.metrics()
        assert (metrics.in_flight, metrics.waiting) == (0, 0)
        assert metrics.admitted == admitted  # the calls that held the slots still count
        queued.join()
    # The blocked calls returned their slots after the reset: absorbed, not added.
    assert bulkhead.metrics().in_flight == 0
    with bulkhead, bulkhead, pytest.raises(resilient.BulkheadFullError):
        bulkhead.call(lambda: None)


def _rejected_or_done(bulkhead: Bulkhead) -> None:
    with contextlib.suppress(resilient.BulkheadFullError):
        bulkhead.call(lambda: None)


async def _queue_then_reset(bulkhead: Bulkhead, spawn: Callable[..., Any]) -> list[int]:
    done: list[int] = []

    async def waiting_call() -> None:
        done.append(await bulkhead.call_async(_async_value))

    await spawn(waiting_call)
    bulkhead._core._after_fork_in_child()  # this thread's tasks live on: it is handed a slot
    return done


async def _async_value() -> int:
    return 10


def test_a_waiting_asyncio_task_of_the_forking_thread_gets_a_slot_after_the_reset() -> None:
    bulkhead = Bulkhead(1, max_wait=30.0)

    async def main() -> list[int]:
        tasks: list[asyncio.Task[None]] = []

        async def spawn(fn: Callable[[], Any]) -> None:
            tasks.append(asyncio.create_task(fn()))
            await until_async(lambda: bulkhead.metrics().waiting == 1, asyncio.sleep)

        done = await _queue_then_reset(bulkhead, spawn)
        await asyncio.gather(*tasks)
        return done

    with blocked_calls(bulkhead.call, 1):
        assert asyncio.run(main()) == [10]
    assert bulkhead.metrics().in_flight == 0


def test_a_waiting_trio_task_of_the_forking_thread_gets_a_slot_after_the_reset() -> None:
    trio = pytest.importorskip("trio")
    bulkhead = Bulkhead(1, max_wait=30.0)

    async def main() -> list[int]:
        async with trio.open_nursery() as nursery:

            async def spawn(fn: Callable[[], Any]) -> None:
                nursery.start_soon(fn)
                await until_async(lambda: bulkhead.metrics().waiting == 1, trio.sleep)

            return await _queue_then_reset(bulkhead, spawn)

    with blocked_calls(bulkhead.call, 1):
        assert trio.run(main) == [10]
    assert bulkhead.metrics().in_flight == 0


def test_half_open_reset_gives_new_trials_and_ignores_the_old_ones() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(
        "reset-trial", minimum_calls=1, window=CountWindow(1), half_open_calls=1, clock=clock
    )
    with pytest.raises(ValueError):
        breaker.call(_fail)
    clock.advance(60.0)
    old_trial_failed = threading.Event()

    def old_trial() -> None:
        old_trial_failed.wait()
        raise ValueError

    def run_old() -> None:
        with contextlib.suppress(ValueError):
            breaker.call(old_trial)

    thread = threading.Thread(target=run_old, daemon=True)
    thread.start()
    until(lambda: breaker.metrics().state is resilient.CircuitState.HALF_OPEN, "the old trial")
    breaker._core._after_fork_in_child()
    old_trial_failed.set()
    thread.join()
    assert breaker.state is resilient.CircuitState.HALF_OPEN  # the old trial decided nothing
    assert breaker.call(lambda: 11) == 11
    assert breaker.state is resilient.CircuitState.CLOSED


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the asyncio loop timer needs 3.11+")
def test_timer_reset_drops_loops_running_in_other_threads_only() -> None:
    here = asyncio.new_event_loop()
    there = asyncio.new_event_loop()
    running = threading.Event()
    release: list[asyncio.Event] = []

    async def pending() -> None:
        release.append(asyncio.Event())
        running.set()
        await Timeout(30.0).call_async(release[0].wait)

    thread = threading.Thread(target=there.run_until_complete, args=(pending(),))
    thread.start()
    running.wait()
    try:
        here.run_until_complete(Timeout(30.0).call_async(asyncio.sleep, 0))
        assert {here, there} <= set(_timer._timers)
        _timer._after_fork_in_child()
        assert here in _timer._timers
        assert there not in _timer._timers
    finally:
        there.call_soon_threadsafe(release[0].set)
        thread.join()
        here.close()
        there.close()


# -- issue 19: coalescing and caching ---------------------------------------------------


def test_a_child_does_not_wait_for_a_flight_of_the_parent() -> None:
    coalesce = resilient.Coalesce(key=lambda: "shared")
    with blocked_calls(coalesce.call, 1):
        assert coalesce.metrics().in_flight == 1  # the parent's thread leads a flight

        def check() -> None:
            # The leader's thread is not in the child: a caller there runs its own call.
            assert coalesce.metrics().in_flight == 0
            assert coalesce.call(lambda: "child") == "child"
            assert coalesce.metrics().in_flight == 0

        in_child(check)


def test_coalesce_and_cache_with_their_locks_held_by_another_thread_work_in_a_child() -> None:
    coalesce = resilient.Coalesce()
    cache = resilient.Cache(ttl=100, clock=ManualClock())
    cached = cache(lambda x: x * 2)
    assert cached(2) == 4
    with held_by_thread(coalesce._core._lock), held_by_thread(cache._core._lock):

        def check() -> None:
            assert coalesce.call(lambda x: x + 1, 1) == 2
            assert cached(2) == 4  # the parent's entries are kept: they are plain values
            assert cache.metrics().hits == 1
            assert cached(3) == 6

        in_child(check)
