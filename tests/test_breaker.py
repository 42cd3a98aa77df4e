"""The circuit breaker's rules, one test each, driven by a ManualClock."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import pytest

from resilient import (
    CallFailed,
    CallIgnored,
    CallRejected,
    CallSucceeded,
    CircuitBreaker,
    CircuitOpenError,
    CircuitState,
    CountWindow,
    RejectedError,
    ResilienceError,
    StateTransition,
    TimeWindow,
)
from resilient.testing import ManualClock, capture_events

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Boom(Exception):
    pass


class Harness:
    """A breaker on a ManualClock plus helpers to feed it outcomes."""

    def __init__(self, **options: Any) -> None:
        self.clock = ManualClock()
        options.setdefault("window", CountWindow(4))
        options.setdefault("minimum_calls", 4)
        options.setdefault("open_duration", 10.0)
        options.setdefault("half_open_calls", 2)
        self.breaker = CircuitBreaker("t", clock=self.clock, **options)

    def ok(self, duration: float = 0.0, value: Any = "ok") -> Any:
        def fn() -> Any:
            self.clock.advance(duration)
            return value

        return self.breaker.call(fn)

    def fail(self, duration: float = 0.0, exc: type[BaseException] = Boom) -> None:
        def fn() -> None:
            self.clock.advance(duration)
            raise exc

        with pytest.raises(exc):
            self.breaker.call(fn)

    def rejected(self) -> CircuitOpenError:
        with pytest.raises(CircuitOpenError) as info:
            self.breaker.call(lambda: pytest.fail("the function must not run"))
        return info.value

    def trip(self) -> None:
        for _ in range(4):
            self.fail()
        assert self.breaker.state is OPEN


def test_defaults_match_the_contract() -> None:
    breaker = CircuitBreaker()
    assert breaker.name is None
    assert breaker.state is CLOSED
    metrics = breaker.metrics()
    assert metrics.buffered_calls_needed == 100  # minimum_calls=100, CountWindow(100)
    for _ in range(99):
        with pytest.raises(Boom):
            breaker.call(_raise_boom)
    assert breaker.state is CLOSED  # 99 < minimum_calls
    with pytest.raises(Boom):
        breaker.call(_raise_boom)
    assert breaker.state is OPEN
    assert breaker.retry_after == pytest.approx(60.0, abs=1.0)


def _raise_boom() -> None:
    raise Boom


def test_opens_when_failure_rate_reaches_threshold_exactly() -> None:
    h = Harness(failure_rate_threshold=0.5)
    h.ok()
    h.ok()
    h.fail()
    assert h.breaker.state is CLOSED  # 3 < minimum_calls
    h.fail()  # 2 of 4 = 0.5 >= 0.5
    assert h.breaker.state is OPEN
    m = h.breaker.metrics()
    assert (m.calls, m.failed_calls, m.failure_rate) == (4, 2, 0.5)


def test_stays_closed_below_threshold() -> None:
    h = Harness(failure_rate_threshold=0.75)
    for _ in range(10):
        h.ok()
        h.fail()
    assert h.breaker.state is CLOSED


def test_fractional_threshold_has_no_float_error() -> None:
    # 3 / 10 >= 0.3 must hold; 0.3 * 10 == 3.0000000000000004 would not.
    h = Harness(failure_rate_threshold=0.3, window=CountWindow(10), minimum_calls=10)
    for _ in range(7):
        h.ok()
    for _ in range(3):
        h.fail()
    assert h.breaker.state is OPEN


def test_a_success_reaching_minimum_calls_can_open() -> None:
    h = Harness(failure_rate_threshold=0.5)
    for _ in range(3):
        h.fail()
    h.ok()  # the 4th call is a success, but 3/4 >= 0.5
    assert h.breaker.state is OPEN


def test_minimum_calls_is_capped_at_the_count_window_size() -> None:
    h = Harness(window=CountWindow(3), minimum_calls=50)
    assert h.breaker.metrics().buffered_calls_needed == 3
    for _ in range(3):
        h.fail()
    assert h.breaker.state is OPEN


def test_slow_calls_open_the_breaker() -> None:
    h = Harness(slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    h.ok(duration=1.0)  # not slow: strictly greater is slow
    h.ok(duration=0.5)
    h.ok(duration=1.5)
    assert h.breaker.state is CLOSED
    h.ok(duration=2.0)
    assert h.breaker.state is OPEN
    m = h.breaker.metrics()
    assert (m.slow_calls, m.failed_calls, m.slow_call_rate) == (2, 0, 0.5)
    assert m.total_duration == pytest.approx(5.0)


def test_slow_failures_count_in_both_rates() -> None:
    h = Harness(slow_call_duration=1.0, failure_rate_threshold=1.0, slow_call_rate_threshold=1.0)
    for _ in range(3):
        h.fail(duration=2.0)
    h.ok()
    m = h.breaker.metrics()
    assert (m.slow_calls, m.failed_calls, m.slow_failed_calls) == (3, 3, 3)
    assert h.breaker.state is CLOSED


def test_slow_call_detection_is_off_by_default() -> None:
    h = Harness()
    for _ in range(8):
        h.ok(duration=1000.0)
    m = h.breaker.metrics()
    assert m.slow_calls == 0
    assert m.total_duration == 0.0  # nothing needed durations, so none were measured


def test_open_rejects_with_exact_retry_after_and_counts() -> None:
    h = Harness()
    h.trip()
    h.clock.advance(3.0)
    err = h.rejected()
    assert err.retry_after == pytest.approx(7.0)
    assert err.state is OPEN
    assert err.policy == "t"
    assert isinstance(err, RejectedError)
    assert isinstance(err, ResilienceError)
    assert "open" in str(err)
    m = h.breaker.metrics()
    assert m.not_permitted_calls == 1
    assert (m.calls, m.failed_calls) == (4, 4)  # OPEN keeps the window that tripped it


def test_open_duration_passes_then_first_call_is_a_trial() -> None:
    h = Harness()
    h.trip()
    h.clock.advance(9.999)
    h.rejected()
    h.clock.advance(0.001)
    assert h.breaker.state is OPEN  # lazily: still OPEN until a call arrives
    assert h.breaker.retry_after == 0.0
    h.ok()
    assert h.breaker.state is HALF_OPEN
    m = h.breaker.metrics()
    assert (m.calls, m.not_permitted_calls, m.buffered_calls_needed) == (1, 0, 1)


def test_half_open_trials_close_the_breaker() -> None:
    h = Harness()
    h.trip()
    h.clock.advance(10)
    h.ok()
    h.ok()
    assert h.breaker.state is CLOSED
    assert h.breaker.metrics().calls == 0  # CLOSED starts from a fresh window


def test_half_open_trials_reopen_the_breaker() -> None:
    h = Harness(failure_rate_threshold=0.5)
    h.trip()
    h.clock.advance(10)
    h.ok()
    h.fail()  # 1 of 2 trials failed: 0.5 >= 0.5
    assert h.breaker.state is OPEN
    assert h.rejected().retry_after == pytest.approx(10.0)


def test_half_open_admits_exactly_half_open_calls_trials() -> None:
    h = Harness(half_open_calls=2)
    h.trip()
    h.clock.advance(10)
    inside: list[CircuitOpenError] = []

    def nested_trial() -> str:
        # While this trial runs, the second is admitted and a third is rejected.
        assert h.ok() == "ok"  # second trial ... which completes, leaving 1 done
        inside.append(h.rejected())  # no trial left while the first is in flight
        return "outer"

    assert h.breaker.call(nested_trial) == "outer"
    assert inside[0].retry_after is None
    assert h.breaker.state is CLOSED


def test_ignored_trial_gives_its_slot_back() -> None:
    h = Harness(ignore=KeyError, half_open_calls=1)
    h.trip()
    h.clock.advance(10)
    h.fail(exc=KeyError)
    assert h.breaker.state is HALF_OPEN
    h.ok()
    assert h.breaker.state is CLOSED


def test_cancelled_trial_gives_its_slot_back_and_is_not_a_failure() -> None:
    h = Harness(half_open_calls=1)
    h.trip()
    h.clock.advance(10)
    h.fail(exc=KeyboardInterrupt)
    assert h.breaker.state is HALF_OPEN
    assert h.breaker.metrics().failed_calls == 0
    h.ok()
    assert h.breaker.state is CLOSED


def test_keyboard_interrupt_is_not_recorded_in_closed() -> None:
    h = Harness()
    h.fail(exc=KeyboardInterrupt)
    h.fail(exc=SystemExit)
    assert h.breaker.metrics().calls == 0


def test_half_open_max_duration_returns_to_open() -> None:
    h = Harness(half_open_max_duration=5.0, half_open_calls=1)
    h.trip()  # opened at t=0, attempt 1
    h.clock.advance(10)
    stuck: list[str] = []

    def never_returns_in_time() -> str:
        h.clock.advance(6.0)  # the trial takes longer than half_open_max_duration
        assert h.breaker.state is OPEN  # back to OPEN at t=15 (10 + 5)
        stuck.append("x")
        return "late"

    with capture_events() as events:
        assert h.breaker.call(never_returns_in_time) == "late"
    assert stuck == ["x"]
    assert h.breaker.state is OPEN  # the late trial decided nothing
    late = [e for e in events if isinstance(e, CallSucceeded)]
    assert late[0].recorded is False
    # OPEN is counted from t=15, when the half-open time ran out; we are at t=16.
    assert h.breaker.retry_after == pytest.approx(9.0)


def test_half_open_max_duration_also_applies_when_idle() -> None:
    h = Harness(half_open_max_duration=5.0, half_open_calls=2)
    h.trip()
    h.clock.advance(10)
    h.ok()  # one of two trials done; the other never comes
    assert h.breaker.state is HALF_OPEN
    h.clock.advance(5)
    assert h.breaker.metrics().state is OPEN
    assert h.breaker.state is OPEN
    h.clock.advance(10)
    h.ok()
    assert h.breaker.state is HALF_OPEN


def test_backoff_open_duration_grows_and_resets_after_close() -> None:
    durations: list[int] = []

    def backoff(attempt: int) -> float:
        durations.append(attempt)
        return 10.0 * attempt

    h = Harness(open_duration=backoff, half_open_calls=1)
    durations.clear()  # the constructor validates with attempt=1
    h.trip()
    assert h.breaker.retry_after == pytest.approx(10.0)
    h.clock.advance(10)
    h.fail()  # trial fails: second consecutive opening
    assert h.breaker.retry_after == pytest.approx(20.0)
    h.clock.advance(20)
    h.ok()
    assert h.breaker.state is CLOSED
    h.trip()
    assert h.breaker.retry_after == pytest.approx(10.0)  # attempt back to 1
    assert durations == [1, 2, 1]


def test_backoff_accepts_timedelta_and_logs_a_failing_callable(caplog) -> None:
    calls = {"n": 0}

    def flaky(attempt: int) -> float:
        calls["n"] += 1
        if attempt > 1:
            raise RuntimeError("boom")
        return 5.0

    h = Harness(open_duration=flaky, half_open_calls=1)
    h.trip()
    h.clock.advance(5)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        h.fail()
    assert h.breaker.state is OPEN
    assert h.breaker.retry_after == pytest.approx(5.0)  # falls back to the last duration
    assert "open_duration" in caplog.text
    h2 = Harness(open_duration=datetime.timedelta(seconds=3))
    h2.trip()
    assert h2.breaker.retry_after == pytest.approx(3.0)


def test_record_and_ignore_classify_exceptions() -> None:
    h = Harness(
        record=(Boom, ValueError), ignore=lambda e: isinstance(e, ValueError) and "x" in str(e)
    )

    def raise_(exc: Exception) -> Callable[[], None]:
        def fn() -> None:
            raise exc

        return fn

    for exc in (Boom(), ValueError("x"), ValueError("y"), KeyError()):
        with pytest.raises(type(exc)):
            h.breaker.call(raise_(exc))
    m = h.breaker.metrics()
    # Boom and ValueError("y") fail; ValueError("x") is ignored; KeyError is a success.
    assert (m.calls, m.failed_calls, m.successful_calls) == (3, 2, 1)


def test_record_result_counts_values_as_failures_but_returns_them() -> None:
    h = Harness(record_result=lambda r: r is None)
    assert h.ok(value=None) is None
    assert h.ok(value=1) == 1
    m = h.breaker.metrics()
    assert (m.calls, m.failed_calls) == (2, 1)


def test_a_predicate_that_raises_is_logged_and_never_changes_the_result(caplog) -> None:
    def bad_predicate(_: object) -> bool:
        raise RuntimeError("predicate bug")

    h = Harness(record_result=bad_predicate, record=bad_predicate)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert h.ok(value=42) == 42
        h.fail()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert all(r.exc_info and "predicate bug" in str(r.exc_info[1]) for r in errors)
    m = h.breaker.metrics()
    assert (m.calls, m.failed_calls) == (2, 1)  # result: success; exception: failure


def test_forced_open_rejects_until_reset() -> None:
    h = Harness()
    with capture_events() as events:
        h.breaker.force_open()
        h.breaker.force_open()  # already there: no second transition
    assert [e.to_state for e in events if isinstance(e, StateTransition)] == [
        CircuitState.FORCED_OPEN
    ]
    h.clock.advance(1e6)
    assert h.rejected().retry_after is None
    assert h.breaker.state is CircuitState.FORCED_OPEN
    assert h.breaker.metrics().not_permitted_calls == 1
    assert h.breaker.retry_after is None
    h.breaker.reset()
    assert h.breaker.state is CLOSED
    h.ok()


def test_disabled_lets_everything_through_and_records_nothing() -> None:
    h = Harness()
    h.breaker.disable()
    for _ in range(10):
        h.fail()
    assert h.breaker.state is CircuitState.DISABLED
    assert h.breaker.metrics().calls == 0


def test_metrics_only_records_and_never_opens() -> None:
    h = Harness()
    h.ok()
    h.breaker.metrics_only()
    assert h.breaker.metrics().calls == 0  # starts from an empty window
    for _ in range(10):
        h.fail()
    assert h.breaker.state is CircuitState.METRICS_ONLY
    m = h.breaker.metrics()
    assert (m.calls, m.failed_calls) == (4, 4)


def test_reset_from_any_state_gives_closed_and_empty() -> None:
    h = Harness()
    h.trip()
    h.breaker.reset()
    assert h.breaker.state is CLOSED
    assert h.breaker.metrics().calls == 0
    h.ok()
    with capture_events() as events:
        h.breaker.reset()  # CLOSED -> CLOSED: empty window, no transition event
    assert events == []
    assert h.breaker.metrics().calls == 0


def test_time_window_breaker() -> None:
    h = Harness(window=TimeWindow(10), minimum_calls=3)
    h.fail()
    h.fail()
    h.clock.advance(11)  # both failures leave the window
    h.fail()
    assert h.breaker.state is CLOSED
    assert h.breaker.metrics().calls == 1
    h.fail()
    h.fail()
    assert h.breaker.state is OPEN


def test_time_window_eviction_of_successes_can_open_on_a_success() -> None:
    h = Harness(window=TimeWindow(10), minimum_calls=3, failure_rate_threshold=0.6)
    for _ in range(5):
        h.ok()
    h.clock.advance(5)
    h.fail()
    h.fail()
    assert h.breaker.state is CLOSED  # 2 of 7
    h.clock.advance(5.5)  # the five successes leave the window
    h.ok()  # 2 of 3 >= 0.6
    assert h.breaker.state is OPEN


def test_events_for_each_outcome() -> None:
    h = Harness(ignore=KeyError, record_result=lambda r: r == "bad")
    with capture_events() as events:
        h.ok()
        h.ok(value="bad")
        h.fail(exc=KeyError)
        h.fail()
        h.fail()  # 3 of 4 failed: opens
        h.rejected()
    kinds = [type(e) for e in events]
    assert kinds == [
        CallSucceeded,
        CallFailed,
        CallIgnored,
        CallFailed,
        CallFailed,
        StateTransition,
        CallRejected,
    ]
    assert all(e.policy == "t" and e.kind == "circuit_breaker" for e in events)
    assert events[1].result == "bad"  # type: ignore[attr-defined]
    assert events[1].exception is None  # type: ignore[attr-defined]
    assert isinstance(events[3].exception, Boom)  # type: ignore[attr-defined]
    transition = events[5]
    assert isinstance(transition, StateTransition)
    assert (transition.from_state, transition.to_state) == (CLOSED, OPEN)
    assert isinstance(events[6].error, CircuitOpenError)  # type: ignore[attr-defined]


def test_listener_that_raises_is_logged_counted_and_harmless(caplog) -> None:
    h = Harness()
    seen: list[object] = []

    def bad_listener(event: object) -> None:
        raise RuntimeError("listener bug")

    h.breaker.add_listener(bad_listener)
    h.breaker.add_listener(seen.append)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        assert h.ok(value=7) == 7
        h.fail()
    assert len(seen) == 2  # the second listener still ran
    assert h.breaker.listener_errors == 2
    assert "listener bug" in caplog.text
    h.breaker.remove_listener(bad_listener)
    h.breaker.remove_listener(bad_listener)  # absent: no error
    h.ok()
    assert h.breaker.listener_errors == 2


def test_transitions_are_logged_at_warning(caplog) -> None:
    h = Harness()
    with caplog.at_level(logging.DEBUG, logger="resilient"):
        h.trip()
        for _ in range(3):
            h.rejected()
        h.breaker.force_open()
        h.rejected()
        h.rejected()
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert any(
        level == logging.WARNING and msg.startswith("circuit breaker 't': closed -> open (")
        for level, msg in records
    )
    rejecting = [msg for level, msg in records if level == logging.DEBUG and "rejecting" in msg]
    # Once per stay in a rejecting state, not once per rejected call.
    assert len(rejecting) == 2
    assert "is open" in rejecting[0]
    assert "forced open" in rejecting[1]


def test_retry_after_property_per_state() -> None:
    h = Harness(half_open_calls=1)
    assert h.breaker.retry_after == 0.0
    h.trip()
    h.clock.advance(4)
    assert h.breaker.retry_after == pytest.approx(6.0)
    h.clock.advance(6)

    def probe() -> None:
        assert h.breaker.retry_after is None  # HALF_OPEN, the only trial is taken

    h.breaker.call(probe)
    assert h.breaker.state is CLOSED


def test_repr_and_state_str() -> None:
    breaker = CircuitBreaker("svc")
    assert repr(breaker) == "<CircuitBreaker 'svc' closed>"
    assert str(CircuitState.HALF_OPEN) == "half_open"
    assert CircuitState("open") is OPEN


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"failure_rate_threshold": 0}, ValueError, "failure_rate_threshold must be in \\(0, 1\\]"),
        ({"failure_rate_threshold": 1.5}, ValueError, "failure_rate_threshold"),
        ({"failure_rate_threshold": 50}, ValueError, "failure_rate_threshold"),
        ({"failure_rate_threshold": "0.5"}, TypeError, "failure_rate_threshold"),
        ({"slow_call_rate_threshold": -0.1}, ValueError, "slow_call_rate_threshold"),
        ({"slow_call_duration": -1}, ValueError, "slow_call_duration must be >= 0"),
        ({"slow_call_duration": "1s"}, TypeError, "slow_call_duration"),
        ({"window": CountWindow}, TypeError, "window must be a CountWindow or a TimeWindow"),
        ({"window": 100}, TypeError, "window"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls must be an int >= 1"),
        ({"minimum_calls": 1.0}, TypeError, "minimum_calls"),
        ({"open_duration": -1}, ValueError, "open_duration must be >= 0"),
        ({"open_duration": float("nan")}, ValueError, "open_duration"),
        ({"open_duration": lambda n: -5}, ValueError, "open_duration\\(1\\)"),
        ({"open_duration": lambda: 5}, TypeError, "open_duration must be .* called with one"),
        ({"open_duration": lambda n: 1 / 0}, ValueError, "open_duration\\(1\\) raised"),
        ({"open_duration": None}, TypeError, "open_duration"),
        ({"half_open_calls": 0}, ValueError, "half_open_calls must be an int >= 1"),
        ({"half_open_max_duration": 0}, ValueError, "half_open_max_duration must be > 0"),
        ({"half_open_max_duration": -2}, ValueError, "half_open_max_duration"),
        ({"record": "ValueError"}, TypeError, "record must be an exception type"),
        ({"record": (ValueError, 3)}, TypeError, "record must be"),
        ({"ignore": int}, TypeError, "ignore must be"),
        ({"record_result": True}, TypeError, "record_result must be a predicate"),
        ({"clock": object()}, TypeError, "clock must be a Clock providing monotonic"),
        ({"window": CountWindow(1), "minimum_calls": -1}, ValueError, "minimum_calls"),
    ],
)
def test_bad_options_raise_naming_the_option(options, error, match) -> None:
    with pytest.raises(error, match=match):
        CircuitBreaker(**options)


def test_name_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="name must be a str"):
        CircuitBreaker(3)  # type: ignore[arg-type]


def test_default_window_is_not_shared_between_breakers() -> None:
    a, b = CircuitBreaker(), CircuitBreaker()
    with pytest.raises(Boom):
        a.call(_raise_boom)
    assert a.metrics().calls == 1
    assert b.metrics().calls == 0


def test_timedelta_options() -> None:
    h = Harness(slow_call_duration=datetime.timedelta(milliseconds=500))
    h.ok(duration=0.6)
    assert h.breaker.metrics().slow_calls == 1


def test_empty_record_counts_no_exception_as_a_failure() -> None:
    h = Harness(record=())
    for _ in range(6):
        h.fail()
    m = h.breaker.metrics()
    assert (m.calls, m.failed_calls) == (4, 0)
    assert h.breaker.state is CLOSED


def test_retry_after_applies_an_expired_half_open_max_duration() -> None:
    h = Harness(half_open_max_duration=5.0, half_open_calls=1)
    h.trip()
    h.clock.advance(10)
    seen: list[float | None] = []

    def trial() -> None:
        seen.append(h.breaker.retry_after)  # HALF_OPEN, every trial taken
        h.clock.advance(7)  # half-open ran out at t=15; now t=17
        seen.append(h.breaker.retry_after)  # OPEN since t=15 for 10 s

    h.breaker.call(trial)
    assert seen[0] is None
    assert seen[1] == pytest.approx(8.0)


def test_a_failing_backoff_on_the_first_opening_uses_the_validated_first_value(caplog) -> None:
    calls = {"n": 0}

    def once_then_broken(attempt: int) -> float:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("backoff bug")
        return 7.0

    h = Harness(open_duration=once_then_broken)
    with caplog.at_level(logging.ERROR, logger="resilient"):
        h.trip()
    assert h.breaker.retry_after == pytest.approx(7.0)
