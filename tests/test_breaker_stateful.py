"""Stateful property tests: the CircuitBreaker against a small reference model.

A Hypothesis ``RuleBasedStateMachine`` draws a configuration, then drives one breaker
(on a ``ManualClock``) with successes, failures, ignored exceptions, slow calls, clock
advances and the manual controls, and after every step compares the breaker with
``Model``: a plain-Python restatement of the contract in DESIGN.md section 3, written
from the contract and not from the library's code. All times are multiples of 0.25 s,
so every sum and difference of times is exact and compared with ``==``.

Concurrent half-open trials cannot be held "in flight" by a single-threaded state
machine, so they get their own deterministic tests at the end, with threads.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient import (
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    StateTransition,
    TimeWindow,
)
from resilient._core._breaker_state import TRANSITIONS
from resilient.testing import ManualClock, capture_events

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED
METRICS_ONLY = CircuitState.METRICS_ONLY
ALLOWED = {(state, to) for state, row in TRANSITIONS.items() for to in row.values()}


class Boom(Exception):
    """Matches ``record``: a failure."""


class Ignored(Boom):
    """Matches ``record`` *and* ``ignore``: ignore wins, so neither success nor failure."""


class Other(Exception):
    """Matches neither ``record`` nor ``ignore``: counts as a success."""


BAD = "bad result"  # a failure when the configuration sets record_result
OK = "ok"

# What a call does: return OK, return BAD, or raise one of the exceptions above.
KINDS = ("ok", "bad_result", "fail", "ignored", "other")
RAISED = {Boom: "fail", Ignored: "ignored", Other: "other"}


def quarters(low: int, high: int) -> st.SearchStrategy[float]:
    """Multiples of 0.25 s between low/4 and high/4: exact in binary floating point."""
    return st.integers(low, high).map(lambda k: k / 4)


@dataclass(frozen=True)
class Backoff:
    """A callable ``open_duration``: linear or (capped) exponential in ``attempt``."""

    base: float
    exponential: bool

    def __call__(self, attempt: int) -> float:
        if self.exponential:
            return min(self.base * 2 ** (attempt - 1), 16.0)
        return self.base * attempt


@dataclass(frozen=True)
class Config:
    window: tuple[str, int] | tuple[str, float, int]  # ("count", n) | ("time", s, b)
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_duration: float | None
    minimum_calls: int
    open_duration: float | Backoff
    half_open_calls: int
    half_open_max_duration: float | None
    record_result: bool

    def make_window(self) -> CountWindow | TimeWindow:
        if self.window[0] == "count":
            return CountWindow(self.window[1])
        _, seconds, buckets = self.window
        return TimeWindow(seconds, buckets=buckets)

    def make_breaker(self, name: str, clock: ManualClock) -> CircuitBreaker:
        return CircuitBreaker(
            name,
            failure_rate_threshold=self.failure_rate_threshold,
            slow_call_rate_threshold=self.slow_call_rate_threshold,
            slow_call_duration=self.slow_call_duration,
            window=self.make_window(),
            minimum_calls=self.minimum_calls,
            open_duration=self.open_duration,
            half_open_calls=self.half_open_calls,
            half_open_max_duration=self.half_open_max_duration,
            record=Boom,
            ignore=Ignored,
            record_result=(lambda result: result == BAD) if self.record_result else None,
            clock=clock,
        )


# Thresholds k/d for small d, so that a rate lands exactly on the threshold often
# (that is where ">=" and ">" differ).
RATES = sorted({k / d for d in range(1, 7) for k in range(1, d + 1)}, reverse=True)

count_windows = st.tuples(st.just("count"), st.integers(1, 6))
time_windows = st.tuples(
    st.just("time"), st.sampled_from([1.0, 2.0, 3.0, 4.0, 6.0]), st.sampled_from([1, 2, 4])
)
open_durations = st.one_of(
    quarters(0, 24),
    st.builds(Backoff, st.sampled_from([0.5, 1.0, 2.5]), st.booleans()),
)
configs = st.builds(
    Config,
    window=st.one_of(count_windows, time_windows),
    failure_rate_threshold=st.sampled_from(RATES),
    slow_call_rate_threshold=st.sampled_from(RATES),
    slow_call_duration=st.none() | quarters(0, 8),
    minimum_calls=st.integers(1, 8),
    open_duration=open_durations,
    half_open_calls=st.integers(1, 4),
    half_open_max_duration=st.none() | quarters(1, 12),
    record_result=st.booleans(),
)


class RefWindow:
    """The outcomes a window holds, kept naively as a list and filtered on demand."""

    def __init__(self, config: Config, *, trials: bool = False) -> None:
        # A half-open window holds the trials only, whatever the configured window.
        self.kind = "trials" if trials else config.window[0]
        self.size = config.window[1] if self.kind == "count" else None
        if self.kind == "time":
            _, seconds, buckets = config.window
            self.width = seconds / buckets
            self.buckets = buckets
        self.entries: list[tuple[int, bool, bool]] = []  # (bucket number, failed, slow)

    def add(self, now: float, failed: bool, slow: bool) -> None:
        bucket = math.floor(now / self.width) if self.kind == "time" else 0
        self.entries.append((bucket, failed, slow))

    def view(self, now: float) -> list[tuple[int, bool, bool]]:
        if self.kind == "count":
            return self.entries[-self.size :]
        if self.kind == "time":
            current = math.floor(now / self.width)
            return [e for e in self.entries if e[0] > current - self.buckets]
        return self.entries

    def counts(self, now: float) -> tuple[int, int, int]:
        entries = self.view(now)
        return (
            len(entries),
            sum(1 for _, failed, _ in entries if failed),
            sum(1 for _, _, slow in entries if slow),
        )


@dataclass
class Admitted:
    result: str


@dataclass
class Rejected:
    retry_after: float | None
    state: CircuitState  # the state the breaker refused the call in


class Model:
    """The contract as a plain state machine; no threads, so one call at a time."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = CLOSED
        self.window = RefWindow(config)
        self.not_permitted = 0
        self.openings = 0  # consecutive openings since the breaker last closed
        self.open_until = 0.0
        self.half_open_since = 0.0
        self.now = 0.0  # the time the rates are read at
        self.transitions: list[tuple[CircuitState, CircuitState]] = []

    def go(self, state: CircuitState) -> None:
        if state is not self.state:
            self.transitions.append((self.state, state))
        self.state = state

    def open(self, at: float) -> None:
        """Trip to OPEN from ``at``, keeping the current window."""
        self.openings += 1
        duration = self.config.open_duration
        if callable(duration):
            duration = duration(self.openings)
        self.open_until = at + duration
        self.go(OPEN)

    def close(self) -> None:
        self.openings = 0
        self.window = RefWindow(self.config)
        self.not_permitted = 0
        self.go(CLOSED)

    def observe(self, now: float) -> None:
        """Apply half_open_max_duration (the library does it lazily, on any access)."""
        limit = self.config.half_open_max_duration
        if self.state is HALF_OPEN and limit is not None:
            deadline = self.half_open_since + limit
            if now >= deadline:
                self.open(deadline)

    def too_high(self, minimum: int) -> bool:
        calls, failed, slow = self.window.counts(self.now)
        if calls == 0 or calls < minimum:
            return False
        return (
            failed / calls >= self.config.failure_rate_threshold
            or slow / calls >= self.config.slow_call_rate_threshold
        )

    def call(self, now: float, duration: float, kind: str) -> Admitted | Rejected:
        self.now = now
        self.observe(now)
        if self.state is OPEN and now >= self.open_until:
            self.window = RefWindow(self.config, trials=True)
            self.not_permitted = 0
            self.half_open_since = now
            self.go(HALF_OPEN)
        if self.state is OPEN:
            self.not_permitted += 1
            return Rejected(self.open_until - now, OPEN)
        if self.state is FORCED_OPEN:
            self.not_permitted += 1
            return Rejected(None, FORCED_OPEN)
        # Admitted (in HALF_OPEN there is always a free trial slot: one call at a time).
        started_in = self.state
        self.now = end = now + duration
        result = {"ok": OK, "bad_result": BAD}.get(kind, kind)
        if kind == "ignored" or started_in is DISABLED:
            return Admitted(result)  # counted nowhere; an ignored trial frees its slot
        failed = kind == "fail" or (kind == "bad_result" and self.config.record_result)
        slow_after = self.config.slow_call_duration
        slow = slow_after is not None and duration > slow_after
        if started_in is HALF_OPEN:
            self.observe(end)
            if self.state is not HALF_OPEN:
                return Admitted(result)  # out of time: the late trial decides nothing
            self.window.add(end, failed, slow)
            if len(self.window.entries) == self.config.half_open_calls:
                if self.too_high(1):
                    self.open(end)
                else:
                    self.close()
        elif started_in is CLOSED:
            self.window.add(end, failed, slow)
            minimum = self.config.minimum_calls
            if self.window.kind == "count":
                minimum = min(minimum, self.window.size)
            if self.too_high(minimum):
                self.open(end)
        else:  # METRICS_ONLY
            self.window.add(end, failed, slow)
        return Admitted(result)

    def manual(self, target: CircuitState) -> None:
        # reset() always starts an empty window; asking for the manual state the breaker
        # is already in changes nothing (no transition, and the window is kept).
        if target is CLOSED:
            self.close()
        elif self.state is not target:
            self.window = RefWindow(self.config)
            self.not_permitted = 0
            self.go(target)


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.name = f"stateful-{id(self):x}"
        self._capture = capture_events()
        self.events = self._capture.__enter__()

    def teardown(self) -> None:
        self._capture.__exit__(None, None, None)

    @initialize(config=configs, start=quarters(0, 40))
    def configure(self, config: Config, start: float) -> None:
        self.clock.advance(start)
        self.config = config
        self.breaker = config.make_breaker(self.name, self.clock)
        self.model = Model(config)
        # What callers saw, for the totals since creation (any state, recorded or not).
        self.seen: Counter[str] = Counter()

    # -- rules -------------------------------------------------------------------------

    def check_call(self, kind: str, duration: float) -> None:
        clock = self.clock
        before = self.breaker.state
        expected = self.model.call(clock.monotonic(), duration, kind)

        def fn() -> str:
            clock.advance(duration)  # the call takes `duration`: slow calls are real
            if kind == "fail":
                raise Boom
            if kind == "ignored":
                raise Ignored
            if kind == "other":
                raise Other
            return BAD if kind == "bad_result" else OK

        try:
            got: Admitted | Rejected = Admitted(self.breaker.call(fn))
        except CircuitOpenError as error:
            got = Rejected(error.retry_after, error.state)
        except (Boom, Other) as error:
            got = Admitted(RAISED[type(error)])
        assert got == expected
        if isinstance(got, Rejected):
            self.seen["rejected"] += 1
        elif kind == "ignored":
            self.seen["ignored"] += 1
        elif kind == "fail" or (kind == "bad_result" and self.config.record_result):
            self.seen["failed"] += 1
        else:
            self.seen["succeeded"] += 1  # "other" is not recorded as a failure: a success
        if before is METRICS_ONLY:
            assert self.breaker.state is METRICS_ONLY
        if before is FORCED_OPEN:
            assert got == Rejected(None, FORCED_OPEN)

    # Calls get three rules of five, so that runs reach the automatic transitions.
    @rule(kind=st.sampled_from(KINDS), duration=quarters(0, 12))
    def call(self, kind: str, duration: float) -> None:
        self.check_call(kind, duration)

    @rule(duration=quarters(0, 4))
    def succeed(self, duration: float) -> None:
        self.check_call("ok", duration)

    @rule(duration=quarters(0, 4))
    def fail(self, duration: float) -> None:
        self.check_call("fail", duration)

    @rule(seconds=st.one_of(quarters(0, 16), quarters(16, 200)))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(wanted=st.sampled_from([FORCED_OPEN, DISABLED, METRICS_ONLY, CLOSED]))
    def manual(self, wanted: CircuitState) -> None:
        control = {
            FORCED_OPEN: self.breaker.force_open,
            DISABLED: self.breaker.disable,
            METRICS_ONLY: self.breaker.metrics_only,
            CLOSED: self.breaker.reset,
        }[wanted]
        control()
        self.model.manual(wanted)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        now = self.clock.monotonic()
        self.model.now = now
        self.model.observe(now)
        assert self.breaker.state is self.model.state
        metrics = self.breaker.metrics()
        calls, failed, slow = self.model.window.counts(now)
        assert metrics.state is self.model.state
        assert (
            metrics.calls,
            metrics.failed_calls,
            metrics.slow_calls,
            metrics.not_permitted_calls,
        ) == (calls, failed, slow, self.model.not_permitted)
        assert metrics.failure_rate == (failed / calls if calls else 0.0)
        assert metrics.slow_call_rate == (slow / calls if calls else 0.0)
        if metrics.state is DISABLED:
            assert (metrics.calls, metrics.not_permitted_calls) == (0, 0)
        transitions = [
            (event.from_state, event.to_state)
            for event in self.events
            if isinstance(event, StateTransition) and event.policy == self.name
        ]
        assert transitions == self.model.transitions
        assert set(transitions) <= ALLOWED  # the core changes state only as its table says
        seen = self.seen
        assert (
            metrics.total_successful_calls,
            metrics.total_failed_calls,
            metrics.total_ignored_calls,
            metrics.total_not_permitted_calls,
        ) == (seen["succeeded"], seen["failed"], seen["ignored"], seen["rejected"])


BreakerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerStateMachine = BreakerMachine.TestCase


# -- TimeWindow eviction, on its own, against brute force -------------------------------


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    seconds=st.sampled_from([1.0, 2.0, 3.0, 5.0, 8.0]),
    buckets=st.sampled_from([1, 2, 3, 4, 8]),
    start=quarters(0, 100),
    steps=st.lists(st.tuples(quarters(0, 40), st.booleans()), max_size=40),
)
def test_time_window_evicts_whole_buckets(seconds, buckets, start, steps) -> None:
    """METRICS_ONLY records every call and never opens: a window seen through the API."""
    clock = ManualClock(start)
    breaker = CircuitBreaker(window=TimeWindow(seconds, buckets=buckets), clock=clock)
    breaker.metrics_only()
    width = seconds / buckets
    recorded: list[tuple[int, bool]] = []  # (bucket number, failed)

    def fail() -> None:
        raise Boom

    for wait, failed in steps:
        clock.advance(wait)
        if failed:
            with pytest.raises(Boom):
                breaker.call(fail)
        else:
            breaker.call(lambda: None)
        recorded.append((math.floor(clock.monotonic() / width), failed))
        current = math.floor(clock.monotonic() / width)
        kept = [failed for bucket, failed in recorded if current - bucket < buckets]
        metrics = breaker.metrics()
        assert (metrics.calls, metrics.failed_calls) == (len(kept), sum(kept))
    assert breaker.state is METRICS_ONLY


# -- concurrent half-open trials, with threads ------------------------------------------

WAIT = 10.0  # seconds a thread waits for another before the test gives up


def open_breaker(half_open_calls: int, **options) -> tuple[CircuitBreaker, ManualClock]:
    """A breaker tripped to OPEN by one failure and made ready for trials."""
    clock = ManualClock()
    breaker = CircuitBreaker(
        "threads",
        window=CountWindow(1),
        minimum_calls=1,
        open_duration=5.0,
        half_open_calls=half_open_calls,
        ignore=Ignored,
        clock=clock,
        **options,
    )
    with pytest.raises(Boom):
        breaker.call(_raise, Boom)
    assert breaker.state is OPEN
    clock.advance(5.0)
    return breaker, clock


def _raise(exc_type: type[Exception]) -> None:
    raise exc_type


class Trials:
    """Start ``callers`` threads at once; admitted ones block until told how to end."""

    def __init__(self, breaker: CircuitBreaker, callers: int) -> None:
        self.breaker = breaker
        self.arrived = threading.Semaphore(0)  # released on admission or on rejection
        self.lock = threading.Lock()
        self.admitted: list[int] = []
        self.rejected: list[CircuitOpenError] = []
        self.endings = {i: threading.Event() for i in range(callers)}
        self.raises: dict[int, type[Exception] | None] = {}
        self.threads = [threading.Thread(target=self._caller, args=(i,)) for i in range(callers)]
        for thread in self.threads:
            thread.start()
        for _ in range(callers):
            assert self.arrived.acquire(timeout=WAIT)

    def _trial(self, i: int) -> None:
        with self.lock:
            self.admitted.append(i)
        self.arrived.release()
        assert self.endings[i].wait(WAIT)
        exc_type = self.raises.get(i)
        if exc_type is not None:
            raise exc_type

    def _caller(self, i: int) -> None:
        try:
            self.breaker.call(self._trial, i)
        except CircuitOpenError as error:
            with self.lock:
                self.rejected.append(error)
            self.arrived.release()
        except (Boom, Other):
            pass

    def finish(self, i: int, exc_type: type[Exception] | None = None) -> None:
        self.raises[i] = exc_type
        self.endings[i].set()
        self.threads[i].join(WAIT)
        assert not self.threads[i].is_alive()

    def finish_all(self, exc_type: type[Exception] | None = None) -> None:
        for i in list(self.admitted):
            if not self.endings[i].is_set():
                self.finish(i, exc_type)
        for thread in self.threads:
            thread.join(WAIT)


@pytest.mark.parametrize(("half_open_calls", "callers"), [(1, 1), (1, 6), (3, 8), (4, 4)])
@pytest.mark.parametrize("trials_fail", [False, True])
def test_half_open_admits_exactly_half_open_calls(half_open_calls, callers, trials_fail):
    breaker, _ = open_breaker(half_open_calls)
    with capture_events() as events:
        trials = Trials(breaker, callers)
        try:
            assert len(trials.admitted) == half_open_calls
            assert len(trials.rejected) == callers - half_open_calls
            for error in trials.rejected:
                assert error.retry_after is None
                assert error.state is HALF_OPEN
            assert breaker.state is HALF_OPEN
            metrics = breaker.metrics()
            assert (metrics.calls, metrics.not_permitted_calls) == (0, len(trials.rejected))
            # All trials but the last finished: still undecided.
            *first, last = trials.admitted
            for i in first:
                trials.finish(i, Boom if trials_fail else None)
            assert breaker.state is HALF_OPEN
            assert breaker.metrics().calls == half_open_calls - 1
            trials.finish(last, Boom if trials_fail else None)
        finally:
            trials.finish_all()
    expected = OPEN if trials_fail else CLOSED
    assert breaker.state is expected
    assert [(e.from_state, e.to_state) for e in events if isinstance(e, StateTransition)] == [
        (OPEN, HALF_OPEN),
        (HALF_OPEN, expected),
    ]


def test_an_ignored_trial_gives_its_slot_back():
    breaker, _ = open_breaker(2)
    trials = Trials(breaker, 5)
    try:
        assert len(trials.admitted) == 2
        assert len(trials.rejected) == 3
        first, second = trials.admitted
        trials.finish(first, Ignored)
        assert breaker.state is HALF_OPEN
        assert breaker.metrics().calls == 0
        # The slot is free again: one more trial is admitted, then none.
        assert breaker.call(lambda: OK) == OK
        with pytest.raises(CircuitOpenError) as rejected:
            breaker.call(lambda: OK)
        assert rejected.value.retry_after is None
        assert breaker.state is HALF_OPEN
        trials.finish(second)
    finally:
        trials.finish_all()
    assert breaker.state is CLOSED


def test_a_trial_that_never_returns_reopens_after_half_open_max_duration():
    breaker, clock = open_breaker(1, half_open_max_duration=3.0)
    trials = Trials(breaker, 3)
    try:
        assert len(trials.admitted) == 1
        clock.advance(2.75)
        assert breaker.state is HALF_OPEN
        clock.advance(0.25)  # 3.0 s in HALF_OPEN: back to OPEN, from then, for 5.0 s
        assert breaker.state is OPEN
        clock.advance(1.0)
        with pytest.raises(CircuitOpenError) as rejected:
            breaker.call(lambda: OK)
        assert rejected.value.retry_after == 4.0
        trials.finish(trials.admitted[0])  # the late trial decides nothing
        assert breaker.state is OPEN
        assert breaker.metrics().calls == 0
    finally:
        trials.finish_all()
    clock.advance(4.0)
    assert breaker.call(lambda: OK) == OK  # the new half-open's only trial closes it
    assert breaker.state is CLOSED
