"""Stress and model-based tests for ``AdaptiveLimiter``.

* Hypothesis drives the core (admissions, refusals, releases with every outcome and
  round trip, partitions) against a small model that keeps its own count of permits
  and its own AIMD arithmetic: every admission and refusal, and the limit after each
  sample, must match.
* Many threads and many tasks (asyncio and trio) share one limiter: with a fixed limit,
  the calls in flight (counted inside the calls) never exceed it; with a moving limit
  (drops at random, seeded), never the highest limit reached; every call was admitted
  or refused, and every permit comes back, through errors, ``BaseException`` and
  cancellation alike.
* The sync and async waits are twins (``tests/twins.py``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resilient import AIMD, AdaptiveLimiter, BulkheadFullError, LimitChanged
from resilient._core._adaptive import DROPPED, IGNORED, SUCCESS, AdaptiveCore
from resilient._policies._adaptive import _AdaptiveStep
from resilient.testing import ManualClock
from twins import assert_twins

WAIT = 10.0  # bound on every wait: reached only when something is broken


class Overload(Exception):
    """A dependency's way of saying it is overloaded (a drop)."""


class Bug(Exception):
    """Any other failure (no sample)."""


# -- the core against a model ------------------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    """The core with AIMD, one sample per window, a 50% partition; the model beside it."""

    MIN_RTT = 0.001

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.core = AdaptiveCore(
            AIMD(initial_limit=4, min_limit=1, max_limit=12, backoff_ratio=0.75),
            max_wait=0.0,
            name="model",
            clock=self.clock,
            window_samples=1,
            window_duration=0.0,
            min_rtt=self.MIN_RTT,
            drop_on=Overload,
            partitions={"p": 0.5},
        )
        self.limit = 4
        self.tokens: list[tuple[Any, int]] = []  # (token, partition)
        self.in_flight = 0
        self.busy = 0  # partition "p"
        self.admitted = self.rejected = self.dropped = 0

    def guaranteed(self) -> int:
        return max(1, -(-self.limit // 2))  # ceil(limit * 0.5)

    def model_limit(self, rtt: float, inflight: int, dropped: bool) -> int:
        # AIMD as the reference writes it, here written on its own (timeout: 5 s).
        if dropped or rtt > 5.0:
            new = min(self.limit - 1, int(self.limit * 0.75))
        elif inflight * 2 >= self.limit:
            new = self.limit + 1
        else:
            new = self.limit
        return max(1, min(12, new))

    @rule(part=st.sampled_from([-1, 0]))
    def acquire(self, part: int) -> None:
        may = self.in_flight < self.limit or (part == 0 and self.busy < self.guaranteed())
        token = self.core.acquire(part)
        assert (token is not None) == may
        if token is None:
            with pytest.raises(BulkheadFullError):
                raise self.core.refuse(part)
            self.rejected += 1
            return
        self.in_flight += 1
        self.busy += part == 0
        self.admitted += 1
        assert token[1] == self.in_flight
        self.tokens.append((token, part))

    @precondition(lambda self: self.tokens)
    @rule(
        data=st.data(),
        outcome=st.sampled_from([SUCCESS, DROPPED, IGNORED]),
        rtt=st.sampled_from([0.0, 0.0005, 0.001, 0.05, 2.0]),
    )
    def release(self, data: st.DataObject, outcome: int, rtt: float) -> None:
        token, part = self.tokens.pop(data.draw(st.integers(0, len(self.tokens) - 1)))
        self.clock.advance(rtt)
        elapsed = self.clock.monotonic() - token[0]
        self.core.release(token, outcome)
        self.in_flight -= 1
        self.busy -= part == 0
        self.dropped += outcome == DROPPED
        if outcome != IGNORED and elapsed >= self.MIN_RTT:
            self.limit = self.model_limit(elapsed, token[1], outcome == DROPPED)

    @rule(seconds=st.sampled_from([0.001, 1.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_match(self) -> None:
        m = self.core.metrics()
        assert (m.limit, m.in_flight, m.admitted, m.rejected, m.dropped) == (
            self.limit,
            self.in_flight,
            self.admitted,
            self.rejected,
            self.dropped,
        )
        part = m.partitions["p"]
        assert (part.in_flight, part.guaranteed) == (self.busy, self.guaranteed())


TestCoreAgainstModel = CoreMachine.TestCase
TestCoreAgainstModel.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)


# -- threads and tasks ---------------------------------------------------------------------


class Probe:
    """Counts the calls in flight from inside them, under a lock of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.ran = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.ran += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def work(probe: Probe, rng: random.Random) -> Callable[[], None]:
    """A call that ends at random (seeded): returns, a drop, another error, an interrupt."""
    roll = rng.random()

    def call() -> None:
        probe.enter()
        try:
            time.sleep(0)  # let other threads in while this call holds its permit
            if roll < 0.15:
                raise Overload
            if roll < 0.25:
                raise Bug
            if roll < 0.3:
                raise KeyboardInterrupt  # a BaseException through the call
        finally:
            probe.leave()

    return call


def highest_limit(lim: AdaptiveLimiter) -> Callable[[], int]:
    """The highest limit the limiter reaches from now on (from its LimitChanged events)."""
    seen = [lim.limit]

    def listener(event: object) -> None:
        if isinstance(event, LimitChanged):
            seen.append(event.to_limit)

    lim.add_listener(listener)
    return lambda: max(seen)


@pytest.mark.parametrize("moving", [False, True], ids=["fixed", "moving"])
@pytest.mark.usefixtures("fast_switching")
def test_threads_never_exceed_the_limit_and_return_every_permit(moving: bool) -> None:
    limit = 6
    algorithm = (
        AIMD(initial_limit=limit, min_limit=2, max_limit=12)
        if moving
        else AIMD(initial_limit=limit, min_limit=limit, max_limit=limit)
    )
    lim = AdaptiveLimiter(
        algorithm, max_wait=0.001, window_samples=1, window_duration=0, min_rtt=0, drop_on=Overload
    )
    highest = highest_limit(lim)
    probe = Probe()
    outcomes: list[str] = []
    out_lock = threading.Lock()

    def caller(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(150):
            try:
                lim.call(work(probe, rng))
                what = "ok"
            except BulkheadFullError:
                what = "refused"
            except (Overload, Bug, KeyboardInterrupt):
                what = "failed"
            with out_lock:
                outcomes.append(what)

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 6)
        assert not thread.is_alive()
    m = lim.metrics()
    assert m.in_flight == 0
    assert m.waiting == 0
    assert len(outcomes) == 12 * 150
    assert m.admitted == probe.ran == outcomes.count("ok") + outcomes.count("failed")
    assert m.rejected == outcomes.count("refused")
    assert probe.peak <= (highest() if moving else limit)
    if moving:
        assert m.updates > 0
        assert m.dropped > 0


async def test_tasks_never_exceed_the_limit_and_cancelled_ones_return_their_permits() -> None:
    limit = 5
    lim = AdaptiveLimiter(
        AIMD(initial_limit=limit, min_limit=2, max_limit=10),
        max_wait=WAIT,
        window_samples=1,
        window_duration=0,
        min_rtt=0,
        drop_on=Overload,
    )
    highest = highest_limit(lim)
    probe = Probe()
    rng = random.Random(7)
    refused = 0

    async def call(roll: float) -> None:
        probe.enter()
        try:
            await anyio.sleep(0)
            if roll < 0.2:
                raise Overload
            await anyio.sleep(0)
        finally:
            probe.leave()

    async def one(roll: float, cancel: bool) -> None:
        nonlocal refused
        with anyio.CancelScope() as scope:
            if cancel:
                scope.cancel()  # cancelled at its first wait: queued, or in the call
            try:
                await lim.call_async(call, roll)
            except Overload:
                pass
            except BulkheadFullError:
                refused += 1

    async with anyio.create_task_group() as tg:
        for _ in range(400):
            tg.start_soon(one, rng.random(), rng.random() < 0.2)
    m = lim.metrics()
    assert (m.in_flight, m.waiting) == (0, 0)
    assert probe.now == 0
    assert probe.peak <= highest()
    assert m.admitted >= probe.ran  # some were cancelled after admission, before the call
    assert refused == m.rejected == 0  # max_wait is long: every caller got its turn
    assert m.updates > 0


@pytest.mark.usefixtures("fast_switching")
def test_thread_and_task_callers_mixed_share_the_permits() -> None:
    lim = AdaptiveLimiter(
        AIMD(initial_limit=3, min_limit=3, max_limit=3), max_wait=WAIT, window_samples=1
    )
    probe = Probe()

    def sync_call() -> None:
        probe.enter()
        try:
            time.sleep(0)
        finally:
            probe.leave()

    async def async_call() -> None:
        probe.enter()
        try:
            await anyio.sleep(0)
        finally:
            probe.leave()

    def threads_side() -> None:
        for _ in range(200):
            lim.call(sync_call)

    async def tasks_side() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(lim.call_async, async_call)

    threads = [threading.Thread(target=threads_side) for _ in range(3)]
    for thread in threads:
        thread.start()
    anyio.run(tasks_side)
    for thread in threads:
        thread.join(WAIT * 6)
        assert not thread.is_alive()
    m = lim.metrics()
    assert (m.in_flight, m.waiting, m.admitted) == (0, 0, 800)
    assert probe.peak <= 3


def test_the_waits_are_twins() -> None:
    assert_twins(
        _AdaptiveStep.enter_wait,
        _AdaptiveStep.enter_wait_async,
        renames={"async_waiter": "ThreadWaiter"},
    )
