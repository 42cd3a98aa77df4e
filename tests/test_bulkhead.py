"""Unit tests for ``Bulkhead``: admission, waiting, release, context managers, options.

Every state change is awaited with Events or by polling ``metrics()`` in a bounded loop
that yields (``threading.Event.wait`` between looks in threads, ``anyio.sleep(0)`` in
tasks); no test sleeps for a fixed time to let something happen. The only timed
waits are the ``max_wait`` timeouts under test themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio
import trio

import resilient
from resilient import (
    Bulkhead,
    BulkheadFullError,
    BulkheadMetrics,
    CallRejected,
    RejectedError,
    ResilienceError,
    Timeout,
    TimeoutExceededError,
    compose,
)
from resilient.testing import capture_events

WAIT = 10.0  # bound on every wait: reached only when something is broken

# Created at import time, outside any event loop; used by several loops further down.
IMPORTED = Bulkhead(1, max_wait=WAIT, name="imported")


class Boom(Exception):
    """The user's own failure."""


# -- helpers -------------------------------------------------------------------------------


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


def metrics_are(bulkhead: Bulkhead, **expected: int) -> Callable[[], bool]:
    """A predicate: every named field of ``bulkhead.metrics()`` has the expected value."""

    def check() -> bool:
        m = bulkhead.metrics()
        return all(getattr(m, key) == value for key, value in expected.items())

    return check


class Holder:
    """A thread that holds one slot of a bulkhead until told to let go."""

    def __init__(self, bulkhead: Bulkhead) -> None:
        self.bulkhead = bulkhead
        self.entered = threading.Event()
        self.leave = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with self.bulkhead:
                self.entered.set()
                assert self.leave.wait(WAIT)
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        assert self.entered.wait(WAIT), "holder never got its slot"

    def stop(self) -> None:
        self.leave.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        assert self.error is None


@contextlib.contextmanager
def holding(bulkhead: Bulkhead) -> Iterator[Holder]:
    """Hold one slot of ``bulkhead`` from another thread for the ``with`` block."""
    holder = Holder(bulkhead)
    holder.start()
    try:
        yield holder
    finally:
        holder.stop()


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


async def hold_async(bulkhead: Bulkhead, entered: anyio.Event, leave: anyio.Event) -> None:
    """Hold one slot of ``bulkhead`` from a task until ``leave`` is set."""
    async with bulkhead:
        entered.set()
        await leave.wait()


# -- construction and options --------------------------------------------------------------


def test_properties_and_defaults() -> None:
    b = Bulkhead(3)
    assert b.max_concurrent == 3
    assert b.max_wait == 0.0
    assert b.name is None
    named = Bulkhead(2, max_wait=datetime.timedelta(milliseconds=250), name="db")
    assert named.name == "db"
    assert named.max_wait == 0.25
    assert isinstance(named.max_wait, float)
    assert Bulkhead(1, max_wait=2).max_wait == 2.0


@pytest.mark.parametrize(
    ("kwargs", "error", "option"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent"),
        ({"max_concurrent": -1}, ValueError, "max_concurrent"),
        ({"max_concurrent": 1.5}, TypeError, "max_concurrent"),
        ({"max_concurrent": True}, TypeError, "max_concurrent"),
        ({"max_concurrent": "2"}, TypeError, "max_concurrent"),
        ({"max_concurrent": None}, TypeError, "max_concurrent"),
        ({"max_concurrent": 2, "max_wait": -1}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": -0.001}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": "1"}, TypeError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": math.nan}, ValueError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": None}, TypeError, "max_wait"),
        ({"max_concurrent": 2, "max_wait": True}, TypeError, "max_wait"),
        (
            {"max_concurrent": 2, "max_wait": datetime.timedelta(seconds=-1)},
            ValueError,
            "max_wait",
        ),
        ({"max_concurrent": 2, "name": 7}, TypeError, "name"),
    ],
)
def test_bad_options_raise_naming_the_option(
    kwargs: dict[str, Any], error: type[Exception], option: str
) -> None:
    with pytest.raises(error, match=option):
        Bulkhead(**kwargs)


def test_options_beyond_max_concurrent_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Bulkhead(2, 0.5)  # type: ignore[misc]


# -- fail fast (max_wait=0) ----------------------------------------------------------------


def test_fail_fast_names_the_bulkhead_and_counts_rejections() -> None:
    b = Bulkhead(2, name="db-pool")
    ran: list[str] = []

    @b
    def decorated() -> None:
        ran.append("decorated")

    b.__enter__()
    b.__enter__()
    with pytest.raises(BulkheadFullError) as first:
        b.call(ran.append, "call")
    with pytest.raises(BulkheadFullError):
        decorated()
    with pytest.raises(BulkheadFullError):  # noqa: SIM117 -- the inner block is the subject
        with b:
            ran.append("with")

    assert ran == []
    error = first.value
    assert isinstance(error, RejectedError)
    assert isinstance(error, ResilienceError)
    assert "db-pool" in str(error)
    assert error.policy == "db-pool"
    assert b.metrics() == BulkheadMetrics(
        max_concurrent=2, in_flight=2, waiting=0, rejected=3, max_observed=2
    )
    b.__exit__(None, None, None)
    assert b.call(lambda: "ok") == "ok"
    b.__exit__(None, None, None)
    assert b.metrics().in_flight == 0


def test_fail_fast_unnamed_bulkhead() -> None:
    b = Bulkhead(1)
    with b, pytest.raises(BulkheadFullError, match="bulkhead") as info:
        b.call(print)
    assert info.value.policy is None
    assert b.metrics().rejected == 1


async def test_fail_fast_async() -> None:
    b = Bulkhead(1, name="async-pool")
    ran: list[str] = []

    @b
    async def decorated() -> None:
        ran.append("decorated")

    async def fn() -> None:
        ran.append("call_async")

    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        with pytest.raises(BulkheadFullError, match="async-pool"):
            await b.call_async(fn)
        with pytest.raises(BulkheadFullError, match="async-pool"):
            await decorated()
        with pytest.raises(BulkheadFullError, match="async-pool"):
            async with b:
                ran.append("async with")
        assert b.metrics().rejected == 3
        assert b.metrics().in_flight == 1
        leave.set()
    assert ran == []
    assert await b.call_async(fn) is None
    assert ran == ["call_async"]
    assert b.metrics().in_flight == 0


def test_rejection_is_a_fresh_error_each_time() -> None:
    b = Bulkhead(1)
    errors = []
    with b:
        for _ in range(3):
            try:
                b.call(print)
            except BulkheadFullError as exc:
                errors.append(exc)
    assert len({id(e) for e in errors}) == 3


# -- waiting up to max_wait ----------------------------------------------------------------


def test_thread_waits_up_to_max_wait_then_is_rejected() -> None:
    b = Bulkhead(1, max_wait=0.1, name="slow")
    with holding(b):
        started = time.monotonic()
        with pytest.raises(BulkheadFullError, match="slow"):
            b.call(pytest.fail, "must not run")
        waited = time.monotonic() - started
        assert waited >= 0.09
        assert waited < WAIT
        assert b.metrics() == BulkheadMetrics(1, 1, 0, 1, 1)
    assert b.metrics().in_flight == 0


async def test_task_waits_up_to_max_wait_then_is_rejected() -> None:
    b = Bulkhead(1, max_wait=0.1, name="slow")

    async def never() -> None:
        pytest.fail("must not run")

    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        started = time.monotonic()
        with pytest.raises(BulkheadFullError, match="slow"):
            await b.call_async(never)
        waited = time.monotonic() - started
        assert waited >= 0.09
        assert b.metrics() == BulkheadMetrics(1, 1, 0, 1, 1)
        started = time.monotonic()
        with pytest.raises(BulkheadFullError):
            async with b:
                pytest.fail("must not run")
        assert time.monotonic() - started >= 0.09
        assert b.metrics().rejected == 2
        leave.set()
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 2, 1)


def test_thread_waiter_is_admitted_when_a_slot_frees() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    with holding(b):
        caller = CallerThread(lambda: b.call(lambda x: x * 2, 21))
        caller.start()
        wait_for(metrics_are(b, waiting=1), "the caller to queue")
        assert caller.is_alive()
        assert b.metrics().in_flight == 1
    caller.finish()
    assert caller.error is None
    assert caller.result == 42
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_task_waiter_is_admitted_when_a_slot_frees() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    results: list[int] = []

    async def double(x: int) -> int:
        return x * 2

    async def waiter() -> None:
        results.append(await b.call_async(double, 21))

    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        tg.start_soon(waiter)
        await until(metrics_are(b, waiting=1), "the waiter to queue")
        assert results == []
        leave.set()
    assert results == [42]
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_slot_freed_by_a_thread_wakes_a_task() -> None:
    # The releaser is another thread: the wake-up must cross into this event loop.
    b = Bulkhead(1, max_wait=WAIT)
    admitted = anyio.Event()
    with holding(b) as holder:

        async def waiter() -> None:
            async with b:
                admitted.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await until(metrics_are(b, waiting=1), "the task to queue")
            holder.leave.set()
            with anyio.fail_after(WAIT):
                await admitted.wait()
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_slot_freed_by_a_task_wakes_a_thread() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        caller = CallerThread(lambda: b.call(lambda: "thread ran"))
        caller.start()
        await until(metrics_are(b, waiting=1), "the thread to queue")
        leave.set()
    await anyio.to_thread.run_sync(caller.finish)
    assert caller.error is None
    assert caller.result == "thread ran"
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


# -- release on every kind of exit ---------------------------------------------------------


def test_slot_released_on_success_and_on_exception() -> None:
    b = Bulkhead(1)

    @b
    def fails() -> None:
        raise Boom

    assert b.call(lambda a, *, k: (a, k), 1, k=2) == (1, 2)
    assert b.metrics().in_flight == 0
    boom = Boom()

    def raise_it() -> None:
        raise boom

    with pytest.raises(Boom) as info:
        b.call(raise_it)
    assert info.value is boom  # propagated unchanged
    with pytest.raises(Boom):
        fails()
    with pytest.raises(Boom), b:
        raise Boom
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_slot_released_on_success_and_on_exception_async() -> None:
    b = Bulkhead(1)

    @b
    async def fails() -> None:
        raise Boom

    async def echo(a: int, *, k: int) -> tuple[int, int]:
        await anyio.sleep(0)
        return a, k

    assert await b.call_async(echo, 1, k=2) == (1, 2)
    with pytest.raises(Boom):
        await fails()
    with pytest.raises(Boom):
        async with b:
            raise Boom
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


def test_slot_released_on_keyboard_interrupt() -> None:
    b = Bulkhead(1)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.call(interrupted)
    assert b.metrics().in_flight == 0
    with pytest.raises(KeyboardInterrupt):
        b(interrupted)()
    assert b.metrics().in_flight == 0
    with pytest.raises(KeyboardInterrupt), b:
        raise KeyboardInterrupt
    assert b.metrics().in_flight == 0
    with pytest.raises(SystemExit), b:
        raise SystemExit(3)
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


@pytest.fixture
def interrupt_main_thread() -> Iterator[Callable[[], None]]:
    """Give a callable that raises KeyboardInterrupt in the main thread, as Ctrl-C does."""
    if not hasattr(signal, "pthread_kill") or threading.current_thread() is not (
        threading.main_thread()
    ):
        pytest.skip("needs POSIX signals delivered to the main thread")

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, handler)
    main = threading.main_thread().ident
    assert main is not None
    try:
        yield lambda: signal.pthread_kill(main, signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_keyboard_interrupt_while_waiting_leaves_the_queue(
    interrupt_main_thread: Callable[[], None],
) -> None:
    b = Bulkhead(1, max_wait=WAIT)
    with holding(b):

        def interrupter() -> None:
            wait_for(metrics_are(b, waiting=1), "the main thread to queue")
            interrupt_main_thread()

        helper = CallerThread(interrupter)
        helper.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            b.call(pytest.fail, "must not run")
        assert time.monotonic() - started < WAIT
        helper.finish()
        assert helper.error is None
        # Left the queue, took no slot, and was not counted as a rejection.
        assert b.metrics() == BulkheadMetrics(1, 1, 0, 0, 1)
    assert b.metrics().in_flight == 0
    assert b.call(lambda: "next") == "next"


async def test_slot_released_when_cancelled_in_flight() -> None:
    b = Bulkhead(2)
    running = anyio.Event()

    async def forever() -> None:
        running.set()
        await anyio.sleep_forever()

    scope = anyio.CancelScope()

    async def cancellable_call() -> None:
        with scope:
            await b.call_async(forever)

    async with anyio.create_task_group() as tg:
        tg.start_soon(cancellable_call)
        await running.wait()
        assert b.metrics().in_flight == 1
        scope.cancel()
    assert scope.cancelled_caught
    assert b.metrics() == BulkheadMetrics(2, 0, 0, 0, 1)

    # The same through `async with` and a decorated function, cancelled by the group.
    inside = 0

    @b
    async def decorated() -> None:
        nonlocal inside
        inside += 1
        await anyio.sleep_forever()

    async def block() -> None:
        nonlocal inside
        async with b:
            inside += 1
            await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        tg.start_soon(decorated)
        tg.start_soon(block)
        await until(lambda: inside == 2, "both calls to run")
        assert b.metrics().in_flight == 2
        tg.cancel_scope.cancel()
    assert b.metrics() == BulkheadMetrics(2, 0, 0, 0, 2)


async def test_slot_released_on_deadline_timeout() -> None:
    b = Bulkhead(1)

    async def slow() -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.01) as scope:
        await b.call_async(slow)
    assert scope.cancelled_caught
    assert b.metrics().in_flight == 0

    guarded = compose(Timeout(0.01), b)
    with pytest.raises(TimeoutExceededError):
        await guarded.call_async(slow)
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


async def test_cancelled_waiter_leaves_the_queue_without_a_slot() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    entered, leave = anyio.Event(), anyio.Event()
    waiter_scope = anyio.CancelScope()
    ran: list[str] = []

    async def waiter() -> None:
        with waiter_scope:
            async with b:
                ran.append("waiter")

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        tg.start_soon(waiter)
        await until(metrics_are(b, waiting=1), "the waiter to queue")
        waiter_scope.cancel()
        await until(metrics_are(b, waiting=0), "the waiter to leave")
        # The holder still has the only slot, and a cancellation is not a rejection.
        assert b.metrics() == BulkheadMetrics(1, 1, 0, 0, 1)
        leave.set()
    assert ran == []
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)
    assert await b.call_async(anyio.sleep, 0) is None


async def test_waiter_cancelled_by_a_timeout_policy_leaves_the_queue() -> None:
    b = Bulkhead(1, max_wait=WAIT)
    guarded = compose(Timeout(0.02), b)
    entered, leave = anyio.Event(), anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, b, entered, leave)
        await entered.wait()
        with pytest.raises(TimeoutExceededError):
            await guarded.call_async(anyio.sleep, 0)
        m = b.metrics()
        assert (m.in_flight, m.waiting) == (1, 0)
        leave.set()
    assert b.metrics().in_flight == 0
    assert await guarded.call_async(anyio.sleep, 0) is None


# -- context managers ----------------------------------------------------------------------


def test_with_blocks_nest() -> None:
    b = Bulkhead(2)
    with b:
        assert b.metrics().in_flight == 1
        with b:
            assert b.metrics().in_flight == 2
            with pytest.raises(BulkheadFullError), b:
                pytest.fail("a third block must not run")
            assert b.metrics().in_flight == 2
        assert b.metrics().in_flight == 1
    assert b.metrics() == BulkheadMetrics(2, 0, 0, 1, 2)


def test_with_block_gives_no_value_and_does_not_swallow() -> None:
    b = Bulkhead(1)
    with b as value:
        assert value is None
    with pytest.raises(Boom), b:
        raise Boom
    assert b.metrics().in_flight == 0


def test_exit_without_enter_does_not_free_a_phantom_slot() -> None:
    b = Bulkhead(1)
    with pytest.raises(RuntimeError):
        b.__exit__(None, None, None)
    assert b.metrics().in_flight == 0
    with holding(b):  # another thread's block does not pair with this thread's exit
        with pytest.raises(RuntimeError):
            b.__exit__(None, None, None)
        assert b.metrics().in_flight == 1
        with pytest.raises(BulkheadFullError):
            b.call(print)
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 1, 1)


async def test_async_with_blocks_nest() -> None:
    b = Bulkhead(2)
    async with b:
        assert b.metrics().in_flight == 1
        async with b:
            assert b.metrics().in_flight == 2
            with pytest.raises(BulkheadFullError):
                async with b:
                    pytest.fail("a third block must not run")
            with pytest.raises(BulkheadFullError), b:  # a sync block is the same bulkhead
                pytest.fail("must not run")
        assert b.metrics().in_flight == 1
    assert b.metrics() == BulkheadMetrics(2, 0, 0, 2, 2)


async def test_async_with_blocks_in_many_tasks_keep_their_own_stack() -> None:
    # Blocks of different tasks interleave; each exit must pair with its own enter.
    b = Bulkhead(4)
    inside = 0
    go = anyio.Event()

    async def nested() -> None:
        nonlocal inside
        async with b:
            async with b:
                inside += 1
                await go.wait()
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(nested)
        tg.start_soon(nested)
        await until(lambda: inside == 2, "both tasks to nest")
        assert b.metrics().in_flight == 4
        go.set()
    assert b.metrics() == BulkheadMetrics(4, 0, 0, 0, 4)


def _yield_at_every_library_line() -> Callable[..., Any]:
    """A trace function that gives up the GIL before each line of ``resilient``'s code.

    Installed in worker threads, it makes them interleave inside the library far more
    often than the interpreter's switch interval would, so races show up every time.
    """
    package = str(Path(resilient.__file__).parent)

    def local(frame: Any, event: str, arg: object) -> Any:
        if event == "line":
            time.sleep(0)  # (not a wait for anything: a GIL release)
        return local

    def tracer(frame: Any, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename.startswith(package) else None

    return tracer


def test_with_blocks_from_many_threads_on_first_use() -> None:
    # Each round uses a fresh bulkhead whose first `with` blocks are entered by 8
    # threads at once: their enters and exits must pair up per thread from the start.
    threads_per_round = 8
    tracer = _yield_at_every_library_line()
    failures: list[str] = []
    for round_no in range(20):
        b = Bulkhead(threads_per_round, name=f"round-{round_no}")
        start = threading.Barrier(threads_per_round)
        inside = threading.Barrier(threads_per_round)
        errors: list[BaseException] = []

        def worker(
            b: Bulkhead = b,
            start: threading.Barrier = start,
            inside: threading.Barrier = inside,
            errors: list[BaseException] = errors,
        ) -> None:
            previous = sys.gettrace()
            sys.settrace(tracer)
            try:
                start.wait(WAIT)
                with b:
                    inside.wait(WAIT)  # every thread holds a slot at this point
            except BaseException as exc:
                errors.append(exc)
            finally:
                sys.settrace(previous)

        threads = [threading.Thread(target=worker) for _ in range(threads_per_round)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
        m = b.metrics()
        if errors or m.in_flight != 0:
            failures.append(f"round {round_no}: {errors[:1]!r}, {m}")
    assert failures == []


def test_with_blocks_from_many_threads_respect_the_limit() -> None:
    b = Bulkhead(3, max_wait=WAIT)
    lock = threading.Lock()
    now = peak = 0
    errors: list[BaseException] = []
    start = threading.Barrier(12)

    def worker() -> None:
        nonlocal now, peak
        try:
            start.wait(WAIT)
            for _ in range(100):
                with b:
                    with lock:
                        now += 1
                        peak = max(peak, now)
                    time.sleep(0)  # (work: gives other threads the interpreter)
                    with lock:
                        now -= 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert errors == []
    assert 1 <= peak <= 3
    m = b.metrics()
    assert (m.in_flight, m.waiting, m.rejected) == (0, 0, 0)
    assert m.max_observed <= 3


# -- decorating ----------------------------------------------------------------------------


def test_decorates_functions_and_methods() -> None:
    b = Bulkhead(1)

    @b
    def add(a: int, b_: int = 0) -> int:
        """Add."""
        return a + b_

    class Service:
        def __init__(self) -> None:
            self.calls = 0

        @b
        def method(self, x: int) -> int:
            self.calls += 1
            return x

        @b
        @staticmethod
        def static(x: int) -> int:
            return -x

    assert add(1, b_=2) == 3
    assert add.__name__ == "add"
    assert add.__doc__ == "Add."
    s = Service()
    assert s.method(5) == 5
    assert s.calls == 1
    assert Service.static(4) == -4
    with b, pytest.raises(BulkheadFullError):
        s.method(1)
    assert s.calls == 1
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 1, 1)


async def test_decorates_coroutine_functions() -> None:
    b = Bulkhead(1)

    @b
    async def fetch(key: str) -> str:
        await anyio.sleep(0)
        return key.upper()

    assert await fetch("a") == "A"
    async with b:
        with pytest.raises(BulkheadFullError):
            await fetch("b")
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 1, 1)


# -- events --------------------------------------------------------------------------------


def test_rejection_emits_call_rejected() -> None:
    b = Bulkhead(1, name="events")
    with capture_events() as events, b, pytest.raises(BulkheadFullError) as info:
        b.call(print)
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert len(rejected) == 1
    event = rejected[0]
    assert event.kind == "bulkhead"
    assert event.policy == "events"
    assert event.error is info.value
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind = "other"  # type: ignore[misc]


def test_rejection_after_waiting_emits_call_rejected() -> None:
    b = Bulkhead(1, max_wait=0.02, name="events")
    seen: list[object] = []
    b.add_listener(seen.append)
    with holding(b), capture_events() as events, pytest.raises(BulkheadFullError) as info:
        b.call(print)
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [e.kind for e in rejected] == ["bulkhead"]
    assert rejected[0].error is info.value
    assert seen == rejected
    b.remove_listener(seen.append)


async def test_rejection_emits_call_rejected_async() -> None:
    b = Bulkhead(1, name="events")
    with capture_events() as events:
        async with b:
            with pytest.raises(BulkheadFullError):
                await b.call_async(anyio.sleep, 0)
    rejected = [e for e in events if isinstance(e, CallRejected)]
    assert [(e.kind, e.policy) for e in rejected] == [("bulkhead", "events")]


async def test_cancelled_waiter_emits_no_rejection() -> None:
    b = Bulkhead(1, max_wait=WAIT, name="events")
    with capture_events() as events:
        async with b:
            with anyio.CancelScope() as scope:

                async def cancel_when_queued() -> None:
                    await until(metrics_are(b, waiting=1))
                    scope.cancel()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel_when_queued)
                    await b.call_async(anyio.sleep, 0)
            assert scope.cancelled_caught
    assert [e for e in events if isinstance(e, CallRejected)] == []
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


def test_listener_that_raises_does_not_change_the_rejection() -> None:
    b = Bulkhead(1)

    def bad_listener(event: object) -> None:
        raise ValueError(event)

    b.add_listener(bad_listener)
    with b, pytest.raises(BulkheadFullError):
        b.call(print)
    assert b.listener_errors == 1


# -- metrics and repr ----------------------------------------------------------------------


def test_metrics_fields() -> None:
    b = Bulkhead(3, max_wait=WAIT)
    m = b.metrics()
    assert m == BulkheadMetrics(
        max_concurrent=3, in_flight=0, waiting=0, rejected=0, max_observed=0
    )
    assert [f.name for f in dataclasses.fields(BulkheadMetrics)] == [
        "max_concurrent",
        "in_flight",
        "waiting",
        "rejected",
        "max_observed",
        "admitted",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.in_flight = 1  # type: ignore[misc]

    b.__enter__()
    b.__enter__()
    assert b.metrics() == BulkheadMetrics(3, 2, 0, 0, 2)
    b.__exit__(None, None, None)
    assert b.metrics() == BulkheadMetrics(3, 1, 0, 0, 2)  # max_observed keeps the peak
    b.__enter__()
    b.__enter__()
    assert b.metrics() == BulkheadMetrics(3, 3, 0, 0, 3)
    waiter = CallerThread(lambda: b.call(lambda: None))
    waiter.start()
    wait_for(metrics_are(b, waiting=1), "a thread to queue")
    assert b.metrics() == BulkheadMetrics(3, 3, 1, 0, 3)
    for _ in range(3):
        b.__exit__(None, None, None)
    waiter.finish()
    assert waiter.error is None
    assert b.metrics() == BulkheadMetrics(3, 0, 0, 0, 3)


def test_repr_names_the_bulkhead_and_its_load() -> None:
    b = Bulkhead(3, name="db")
    assert "Bulkhead" in repr(b)
    assert "db" in repr(b)
    assert "0/3" in repr(b)
    with b:
        assert "1/3" in repr(b)
    assert "Bulkhead" in repr(Bulkhead(2))


# -- event loops: import time, several loops one after another and at once ---------------


async def _through_imported(expected_library: str) -> object:
    """Make a waiter queue on ``IMPORTED`` in the running loop, then admit it."""
    assert sniffio.current_async_library() == expected_library
    assert IMPORTED.metrics().in_flight == 0
    entered, leave = anyio.Event(), anyio.Event()
    order: list[str] = []

    async def waiter() -> None:
        order.append(await IMPORTED.call_async(_tag, "waiter"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold_async, IMPORTED, entered, leave)
        await entered.wait()
        tg.start_soon(waiter)
        await until(metrics_are(IMPORTED, waiting=1), "the waiter to queue")
        order.append("released")
        leave.set()
    assert order == ["released", "waiter"]
    assert IMPORTED.metrics().in_flight == 0
    assert IMPORTED.metrics().waiting == 0
    if expected_library == "asyncio":
        return asyncio.get_running_loop()
    return trio.lowlevel.current_trio_token()


async def _tag(value: str) -> str:
    await anyio.sleep(0)
    return value


def test_created_at_import_time_then_used_by_asyncio_twice_and_trio() -> None:
    first = asyncio.run(_through_imported("asyncio"))
    second = asyncio.run(_through_imported("asyncio"))
    assert first is not second  # two different event loops, one after the other
    assert trio.run(_through_imported, "trio") is not None
    assert asyncio.run(_through_imported("asyncio")) is not None  # and back again
    m = IMPORTED.metrics()
    assert (m.in_flight, m.waiting, m.rejected, m.max_observed) == (0, 0, 0, 1)


def test_import_time_bulkhead_shared_by_asyncio_trio_and_threads_at_once() -> None:
    # A trio task holds the only slot; an asyncio task (another thread's loop) and then a
    # plain thread queue behind it; the slot travels trio -> asyncio -> thread, in order.
    b = IMPORTED
    held = threading.Event()
    let_go = threading.Event()
    order: list[str] = []

    async def trio_holder() -> None:
        async with b:
            held.set()
            await anyio.to_thread.run_sync(let_go.wait, WAIT)
            order.append("trio")

    async def asyncio_waiter() -> None:
        assert await anyio.to_thread.run_sync(held.wait, WAIT)
        order.append(await b.call_async(_tag, "asyncio"))

    trio_thread = CallerThread(lambda: trio.run(trio_holder))
    asyncio_thread = CallerThread(lambda: asyncio.run(asyncio_waiter()))
    sync_thread = CallerThread(lambda: order.append(b.call(lambda: "thread")))
    trio_thread.start()
    asyncio_thread.start()
    wait_for(metrics_are(b, in_flight=1, waiting=1), "the asyncio task to queue")
    sync_thread.start()
    wait_for(metrics_are(b, waiting=2), "the thread to queue")
    let_go.set()
    for t in (trio_thread, asyncio_thread, sync_thread):
        t.finish()
        assert t.error is None
    assert order == ["trio", "asyncio", "thread"]
    m = b.metrics()
    assert (m.in_flight, m.waiting) == (0, 0)


def test_release_survives_a_waiter_whose_asyncio_loop_was_closed() -> None:
    # A task queued on a loop that was then closed without running it to the end, and a
    # live thread queued behind it. The caller that frees the slot must exit normally,
    # and the slot must not be stranded with the dead waiter: the thread gets it.
    b = Bulkhead(1, max_wait=WAIT)
    loop = asyncio.new_event_loop()
    task = None
    live = CallerThread(lambda: b.call(lambda: "live"))
    try:
        b.__enter__()

        async def waiter() -> None:
            async with b:
                pytest.fail("a waiter of a closed loop must not run")

        task = loop.create_task(waiter())

        async def until_queued() -> None:
            await until(metrics_are(b, waiting=1), "the task to queue")

        loop.run_until_complete(until_queued())
        loop.close()
        live.start()
        wait_for(metrics_are(b, waiting=2), "the thread to queue behind the task")
        b.__exit__(None, None, None)  # must not raise RuntimeError('Event loop is closed')
        live.finish()
        assert live.error is None
        assert live.result == "live"
    finally:
        if not loop.is_closed():
            loop.close()
        # Close the abandoned coroutine now rather than in some later garbage collection.
        # Outside its loop, its cancel scope cannot exit cleanly; the waiter still leaves.
        assert task is not None
        with contextlib.suppress(RuntimeError):
            task.get_coro().close()  # type: ignore[union-attr]
        del task
        if live.ident is not None:
            live.join(WAIT)
    assert b.metrics() == BulkheadMetrics(1, 0, 0, 0, 1)


def test_the_low_water_mark_is_written_in_one_place() -> None:
    # Issue 14: the mark behind max_observed was written by every fast path (the step,
    # the with block, both guards, the compose template). The core keeps it, in took();
    # the fast paths only compare against it, and tell the core when below.
    import ast  # noqa: PLC0415 -- this test alone parses the sources

    src = Path(resilient.__file__).parent
    writers = []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                for inner in ast.walk(node):
                    targets = (
                        inner.targets
                        if isinstance(inner, ast.Assign)
                        else [inner.target]
                        if isinstance(inner, (ast.AugAssign, ast.AnnAssign))
                        else []
                    )
                    writers.extend(
                        f"{path.relative_to(src).as_posix()}:{node.name}"
                        for target in targets
                        if isinstance(target, ast.Attribute) and target.attr == "_low_water"
                    )
        # The generated runners' source is text: it may read the mark, never set it.
        if path.relative_to(src).as_posix() != "_core/_bulkhead.py":
            assert "_low_water =" not in text, path
    assert sorted(writers) == [
        "_core/_bulkhead.py:__init__",
        "_core/_bulkhead.py:_aim",  # reconfigure(): a new limit, or a shrink's debt
        "_core/_bulkhead.py:took",
    ]
    b = Bulkhead(3)
    with b, b:
        pass
    assert b.metrics().max_observed == 2
