"""Stateful property test of ``BreakerCore`` itself, driven with plain times.

Beside ``test_breaker_stateful.py`` (the public class on a ``ManualClock``), this machine
drives the sans-I/O core as an adapter does, with no adapter: it admits calls
(``_free``, else ``admit_checked()``), holds their tickets, and reports outcomes
(``on_success`` / ``on_error`` / ``on_cancel``) in any order, later or never. So calls are
in flight across transitions, something a single-threaded run through the public class
cannot do: several half-open trials at once, an outcome of a stay that is over, a
trial cancelled or ignored while others run, a fork in the middle of half-open. Time is a
number the machine advances (multiples of 0.25 s, so every sum is exact).

``Model`` restates the contract (DESIGN.md section 3) for a count window, from the
contract and not from the core's code: rates over the last ``size`` outcomes once
``minimum_calls`` are there; OPEN for ``open_duration``; HALF_OPEN admits exactly
``half_open_calls`` trials at once and decides when they have all finished; an outcome
counts only in the stay it was admitted in. Every state change the core makes must also
be one that ``TRANSITIONS`` lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from resilient import CircuitOpenError, CircuitState, CountWindow, StateTransition
from resilient._core._breaker import BreakerCore
from resilient._core._breaker_state import TRANSITIONS, Trigger

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED
METRICS_ONLY = CircuitState.METRICS_ONLY
CONTROLS = {
    Trigger.RESET: CLOSED,
    Trigger.FORCE_OPEN: FORCED_OPEN,
    Trigger.DISABLE: DISABLED,
    Trigger.RECORD_ONLY: METRICS_ONLY,
}
# Every (from, to) pair the table allows.
ALLOWED = {(state, to) for state, row in TRANSITIONS.items() for to in row.values()}


class Boom(Exception):
    """Matches ``record``: a failure."""


class Ignored(Boom):
    """Matches ``ignore`` (which wins over ``record``): neither success nor failure."""


class Other(Exception):
    """Matches neither: a success."""


KINDS = ("ok", "bad_result", "fail", "other", "ignored", "cancel")
BAD = "bad result"  # a failure when the configuration sets record_result


class FakeTime:
    """The time source: ``monotonic()`` returns whatever the machine last set."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def quarters(low: int, high: int) -> st.SearchStrategy[float]:
    return st.integers(low, high).map(lambda k: k / 4)


@dataclass(frozen=True)
class Config:
    size: int
    failure_rate_threshold: float
    slow_call_rate_threshold: float
    slow_call_duration: float | None
    minimum_calls: int
    open_duration: float | tuple[float]  # a 1-tuple: the base of a linear backoff
    half_open_calls: int
    half_open_max_duration: float | None
    record_result: bool

    def duration(self, attempt: int) -> float:
        if isinstance(self.open_duration, tuple):
            return self.open_duration[0] * attempt
        return self.open_duration

    def core(self, time: FakeTime) -> BreakerCore:
        backoff = self.open_duration
        open_duration: Any = backoff if not isinstance(backoff, tuple) else self.duration
        return BreakerCore(
            "core-machine",
            failure_rate_threshold=self.failure_rate_threshold,
            slow_call_rate_threshold=self.slow_call_rate_threshold,
            slow_call_duration=self.slow_call_duration,
            window=CountWindow(self.size),
            minimum_calls=self.minimum_calls,
            open_duration=open_duration,
            half_open_calls=self.half_open_calls,
            half_open_max_duration=self.half_open_max_duration,
            record=Boom,
            ignore=Ignored,
            record_result=(lambda result: result == BAD) if self.record_result else None,
            clock=time,  # a core only reads the time
        )


RATES = sorted({k / d for d in range(1, 5) for k in range(1, d + 1)}, reverse=True)
configs = st.builds(
    Config,
    size=st.integers(1, 5),
    failure_rate_threshold=st.sampled_from(RATES),
    slow_call_rate_threshold=st.sampled_from(RATES),
    slow_call_duration=st.none() | quarters(0, 4),
    minimum_calls=st.integers(1, 6),
    open_duration=quarters(0, 12) | st.tuples(st.sampled_from([0.5, 1.0, 2.0])),
    half_open_calls=st.integers(1, 4),
    half_open_max_duration=st.none() | quarters(1, 12),
    record_result=st.booleans(),
)


@dataclass
class Call:
    """A call in flight: its ticket from the core, and what the model knows of it."""

    ticket: Any
    stay: int  # the model's stay it was admitted in
    trial: bool
    live: bool = True  # a trial still holding its half-open permit


@dataclass
class Model:
    """The contract, with calls in flight; one stay = one visit to one state."""

    config: Config
    now: float
    state: CircuitState = CLOSED
    stay: int = 0
    window: list[tuple[bool, bool]] = field(default_factory=list)  # (failed, slow)
    size: int = 0
    not_permitted: int = 0
    openings: int = 0
    open_until: float = 0.0
    half_open_since: float = 0.0
    taken: int = 0
    done: int = 0
    transitions: list[tuple[CircuitState, CircuitState]] = field(default_factory=list)
    totals: dict[str, int] = field(
        default_factory=lambda: {"ok": 0, "failed": 0, "ignored": 0, "rejected": 0}
    )

    def __post_init__(self) -> None:
        self.size = self.config.size

    def go(self, state: CircuitState, *, window: int | None = None) -> None:
        """Start a new stay in ``state``; a fresh window of ``window`` slots, if given."""
        if state is not self.state:
            self.transitions.append((self.state, state))
        self.state = state
        self.stay += 1
        if window is not None:
            self.window, self.size = [], window
            self.not_permitted = 0

    def open(self, at: float) -> None:
        self.openings += 1
        self.open_until = at + self.config.duration(self.openings)
        self.go(OPEN)  # the window that tripped it stays, and so do its rejections

    def close(self) -> None:
        self.openings = 0
        self.go(CLOSED, window=self.config.size)

    def observe(self) -> None:
        limit = self.config.half_open_max_duration
        if self.state is HALF_OPEN and limit is not None:
            deadline = self.half_open_since + limit
            if self.now >= deadline:
                self.open(deadline)

    def counts(self) -> tuple[int, int, int]:
        kept = self.window[-self.size :]
        return len(kept), sum(f for f, _ in kept), sum(s for _, s in kept)

    def too_high(self, minimum: int) -> bool:
        calls, failed, slow = self.counts()
        if calls == 0 or calls < minimum:
            return False
        return (
            failed / calls >= self.config.failure_rate_threshold
            or slow / calls >= self.config.slow_call_rate_threshold
        )

    def admit(self) -> tuple[int, bool] | tuple[float | None, CircuitState]:
        """(stay, trial) if admitted, else (retry_after, state) of the rejection."""
        self.observe()
        if self.state is OPEN and self.now >= self.open_until:
            self.half_open_since = self.now
            self.taken = self.done = 0
            self.go(HALF_OPEN, window=self.config.half_open_calls)
        state = self.state
        if state in (CLOSED, DISABLED, METRICS_ONLY):
            return self.stay, False
        if state is HALF_OPEN and self.taken < self.config.half_open_calls:
            self.taken += 1
            return self.stay, True
        self.not_permitted += 1
        self.totals["rejected"] += 1
        return (self.open_until - self.now if state is OPEN else None), state

    def give_back(self, call: Call) -> None:
        if call.trial and call.live and call.stay == self.stay and self.state is HALF_OPEN:
            self.taken -= 1
        call.live = False

    def finish(self, call: Call, kind: str, duration: float) -> None:
        if kind == "cancel":
            self.give_back(call)
            return
        if kind == "ignored":
            self.totals["ignored"] += 1
            self.give_back(call)
            return
        # "other" matches neither record nor ignore: a success.
        failed = kind == "fail" or (kind == "bad_result" and self.config.record_result)
        self.totals["failed" if failed else "ok"] += 1
        slow_after = self.config.slow_call_duration
        slow = slow_after is not None and duration > slow_after
        self.observe()
        if call.stay != self.stay or (call.trial and not call.live):
            return  # admitted in a stay that is over: reported, never counted
        call.live = False
        if self.state is CLOSED:
            self.window.append((failed, slow))
            if self.too_high(min(self.config.minimum_calls, self.config.size)):
                self.open(self.now)
        elif self.state is HALF_OPEN:
            self.window.append((failed, slow))
            self.done += 1
            if self.done == self.config.half_open_calls:
                if self.too_high(1):
                    self.open(self.now)
                else:
                    self.close()
        elif self.state is METRICS_ONLY:
            self.window.append((failed, slow))

    def control(self, trigger: str) -> None:
        target = CONTROLS[trigger]
        if target is CLOSED:
            self.close()
        elif self.state is not target:
            self.go(target, window=self.config.size)

    def forked(self) -> None:
        if self.state is HALF_OPEN:
            self.taken = self.done = 0
            self.go(HALF_OPEN, window=self.config.half_open_calls)

    def retry_after(self) -> float | None:
        if self.state is OPEN:
            return max(self.open_until - self.now, 0.0)
        if self.state in (CLOSED, DISABLED, METRICS_ONLY):
            return 0.0
        if self.state is HALF_OPEN and self.taken < self.config.half_open_calls:
            return 0.0
        return None


class CoreMachine(RuleBasedStateMachine):
    calls = Bundle("calls")

    @initialize(config=configs, start=quarters(0, 40))
    def configure(self, config: Config, start: float) -> None:
        self.time = FakeTime(start)
        self.core = config.core(self.time)
        self.events: list[Any] = []
        self.core.add_listener(self.events.append)
        self.model = Model(config, start)

    # -- rules -------------------------------------------------------------------------

    def start(self) -> Call | None:
        """Admit a call in the core and in the model; ``None`` if both rejected it."""
        expected = self.model.admit()
        ticket = self.core._free or self.core.admit_checked()  # as every adapter admits
        if isinstance(ticket, CircuitOpenError):
            assert (ticket.retry_after, ticket.state) == expected
            return None
        stay, trial = expected
        assert isinstance(stay, int)
        assert type(ticket).__name__ == ("Trial" if trial else "Epoch")
        return Call(ticket, stay, bool(trial))

    def end(self, call: Call | None, kind: str, duration: float) -> None:
        """Report how ``call`` ended, to the core and to the model."""
        if call is None:
            return  # rejected: nothing to report
        self.model.finish(call, kind, duration)
        core, ticket = self.core, call.ticket
        if kind == "cancel":
            core.on_cancel(ticket)
        elif kind in ("ok", "bad_result"):
            core.on_success(ticket, BAD if kind == "bad_result" else "ok", duration)
        else:
            exc = {"fail": Boom, "other": Other, "ignored": Ignored}[kind]()
            core.on_error(ticket, exc, duration)

    # Calls that end at once get three rules of seven, calls held in flight two more, so
    # that runs reach the automatic transitions; the controls, which undo them, are one.
    @rule(kind=st.sampled_from(KINDS), duration=quarters(0, 6))
    def call(self, kind: str, duration: float) -> None:
        self.end(self.start(), kind, duration)

    @rule(duration=quarters(0, 6))
    def fail(self, duration: float) -> None:
        self.end(self.start(), "fail", duration)

    @rule(duration=quarters(0, 2))
    def succeed(self, duration: float) -> None:
        self.end(self.start(), "ok", duration)

    @rule(target=calls)
    def admit(self) -> Call | None:
        return self.start()

    @rule(call=consumes(calls), kind=st.sampled_from(KINDS), duration=quarters(0, 6))
    def finish(self, call: Call | None, kind: str, duration: float) -> None:
        self.end(call, kind, duration)

    @rule(seconds=quarters(0, 4) | quarters(0, 16) | quarters(16, 80))
    def advance(self, seconds: float) -> None:
        self.time.now += seconds
        self.model.now += seconds

    @rule(trigger=st.sampled_from([*sorted(CONTROLS), Trigger.FORKED]))
    def manual(self, trigger: str) -> None:
        if trigger is Trigger.FORKED:
            self.model.forked()
            self.core._after_fork_in_child()
        else:
            self.model.control(trigger)
            self.core.control(trigger)

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        model, core = self.model, self.core
        model.observe()
        assert core.state is model.state
        metrics = core.metrics()
        calls, failed, slow = model.counts()
        assert (
            metrics.state,
            metrics.calls,
            metrics.failed_calls,
            metrics.slow_calls,
            metrics.not_permitted_calls,
        ) == (model.state, calls, failed, slow, model.not_permitted)
        totals = model.totals
        assert (
            metrics.total_successful_calls,
            metrics.total_failed_calls,
            metrics.total_ignored_calls,
            metrics.total_not_permitted_calls,
        ) == (totals["ok"], totals["failed"], totals["ignored"], totals["rejected"])
        assert core.retry_after() == model.retry_after()

    @invariant()
    def changes_state_only_as_the_table_says(self) -> None:
        moves = [(e.from_state, e.to_state) for e in self.events if isinstance(e, StateTransition)]
        assert moves == self.model.transitions
        assert set(moves) <= ALLOWED
        counted = self.core.transition_counts()
        assert sum(counted.values()) == len(moves)


CoreMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerCoreStateMachine = CoreMachine.TestCase
