"""The metrics core: count and time windows against brute-force recomputation."""

from __future__ import annotations

import datetime
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import CountWindow, TimeWindow, WindowSnapshot
from resilient._core._window import FAILURE, SLOW_FAILURE, SLOW_SUCCESS, SUCCESS
from resilient.testing import ManualClock

OUTCOMES = [SUCCESS, FAILURE, SLOW_SUCCESS, SLOW_FAILURE]


def brute(outcomes: list[tuple[int, float]]) -> WindowSnapshot:
    return WindowSnapshot(
        calls=len(outcomes),
        failed_calls=sum(1 for o, _ in outcomes if o & 1),
        slow_calls=sum(1 for o, _ in outcomes if o & 2),
        slow_failed_calls=sum(1 for o, _ in outcomes if o == SLOW_FAILURE),
        total_duration=sum(d for _, d in outcomes),
    )


def same(a: WindowSnapshot, b: WindowSnapshot) -> None:
    assert (a.calls, a.failed_calls, a.slow_calls, a.slow_failed_calls) == (
        b.calls,
        b.failed_calls,
        b.slow_calls,
        b.slow_failed_calls,
    )
    assert a.total_duration == pytest.approx(b.total_duration, abs=1e-6)


@given(
    size=st.integers(1, 12),
    events=st.lists(st.tuples(st.sampled_from(OUTCOMES), st.floats(0, 10)), max_size=60),
)
def test_count_window_keeps_exactly_the_last_size_outcomes(size, events) -> None:
    window = CountWindow(size)
    for i, (outcome, duration) in enumerate(events):
        window.record(outcome, duration)
        same(window.snapshot(), brute(events[max(0, i + 1 - size) : i + 1]))


def test_count_window_without_durations_reports_zero_duration() -> None:
    window = CountWindow(3).fresh(durations=False)
    window.record(SLOW_FAILURE, 5.0)
    snap = window.snapshot()
    assert snap.total_duration == 0.0
    assert snap.slow_failed_calls == 1


def test_fresh_copies_are_independent_of_the_template() -> None:
    template = CountWindow(5)
    a, b = template.fresh(), template.fresh()
    a.record(FAILURE)
    assert a.snapshot().calls == 1
    assert b.snapshot().calls == 0
    assert template.snapshot().calls == 0
    assert a.capacity == 5


def test_snapshot_rates() -> None:
    window = CountWindow(4)
    for outcome in (SUCCESS, FAILURE, SLOW_SUCCESS, SLOW_FAILURE):
        window.record(outcome, 1.0)
    snap = window.snapshot()
    assert snap.failure_rate == 0.5
    assert snap.slow_call_rate == 0.5
    assert snap.successful_calls == 2
    assert snap.mean_duration == 1.0
    empty = CountWindow(4).snapshot()
    assert (empty.failure_rate, empty.slow_call_rate, empty.mean_duration) == (0.0, 0.0, 0.0)


def test_snapshot_is_frozen() -> None:
    snap = CountWindow(1).snapshot()
    with pytest.raises(AttributeError):
        snap.calls = 3  # type: ignore[misc]


@given(
    buckets=st.integers(1, 8),
    steps=st.lists(
        st.tuples(st.floats(0, 3, allow_nan=False), st.sampled_from(OUTCOMES), st.booleans()),
        max_size=60,
    ),
)
def test_time_window_matches_a_brute_force_model(buckets, steps) -> None:
    clock = ManualClock()
    window = TimeWindow(2.0, buckets=buckets).fresh(clock)
    width = 2.0 / buckets
    history: list[tuple[int, int, float]] = []  # (bucket number, outcome, duration)
    for advance, outcome, record in steps:
        clock.advance(advance)
        now_bucket = math.floor(clock.monotonic() / width)  # as the window computes it
        if record:
            window.record(outcome, advance)
            history.append((now_bucket, outcome, advance))
        alive = [(o, d) for b, o, d in history if b > now_bucket - buckets]
        same(window.snapshot(), brute(alive))


def test_time_window_forgets_everything_after_a_long_idle_period() -> None:
    clock = ManualClock()
    window = TimeWindow(10).fresh(clock)
    for _ in range(50):
        window.record(FAILURE, 0.1)
    assert window.snapshot().calls == 50
    clock.advance(10_000)
    assert window.snapshot() == WindowSnapshot(0, 0, 0, 0, 0.0)
    window.record(SUCCESS, 0.0)
    assert window.snapshot().calls == 1


def test_time_window_default_buckets_and_timedelta() -> None:
    assert TimeWindow(60).buckets == 60
    assert TimeWindow(1).buckets == 10
    assert TimeWindow(3600).buckets == 100
    assert TimeWindow(datetime.timedelta(minutes=1)).seconds == 60.0
    assert repr(TimeWindow(5, buckets=5)) == "TimeWindow(5.0, buckets=5)"
    assert repr(CountWindow(7)) == "CountWindow(7)"


def test_time_window_eviction_is_by_bucket() -> None:
    clock = ManualClock()
    window = TimeWindow(1.0, buckets=10).fresh(clock)
    window.record(FAILURE)  # bucket 0
    clock.advance(0.55)
    window.record(SUCCESS)  # bucket 5
    clock.advance(0.5)  # now 1.05: bucket 10 -> bucket 0 evicted, bucket 5 kept
    snap = window.snapshot()
    assert (snap.calls, snap.failed_calls) == (1, 0)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: CountWindow(0), ValueError, "size must be an int >= 1"),
        (lambda: CountWindow(-3), ValueError, "size"),
        (lambda: CountWindow(2.5), TypeError, "size"),
        (lambda: CountWindow(True), TypeError, "size"),
        (lambda: TimeWindow(0), ValueError, "seconds must be >= 0.001"),
        (lambda: TimeWindow(-1), ValueError, "seconds"),
        (lambda: TimeWindow(float("inf")), ValueError, "seconds"),
        (lambda: TimeWindow("10"), TypeError, "seconds"),
        (lambda: TimeWindow(10, buckets=0), ValueError, "buckets"),
    ],
)
def test_bad_window_options_are_rejected_at_construction(factory, error, match) -> None:
    with pytest.raises(error, match=match):
        factory()


def test_count_window_random_long_run() -> None:
    rng = random.Random(7)
    window = CountWindow(50)
    events = [(rng.choice(OUTCOMES), rng.random()) for _ in range(5000)]
    for outcome, duration in events:
        window.record(outcome, duration)
    same(window.snapshot(), brute(events[-50:]))
