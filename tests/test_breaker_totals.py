"""The breaker's totals since creation: every outcome counted once, whatever path it took.

The CLOSED success path is lock-free and counts nothing itself; the totals are derived
from the ring-slot claims all of a breaker's count windows share. These tests drive
every path (lock-free success, locked success, failure, ignored, rejection in OPEN and
in HALF_OPEN, manual states) and check the totals against what the caller saw.
"""

from __future__ import annotations

import random
import threading
from collections import Counter

import pytest

from resilient import CircuitBreaker, CircuitOpenError, CircuitState, CountWindow, TimeWindow
from resilient.testing import ManualClock

WAIT = 10.0


class Boom(Exception):
    pass


class Skip(Exception):
    pass


def ok() -> str:
    return "ok"


def boom() -> str:
    raise Boom


def skip() -> str:
    raise Skip


def totals(breaker: CircuitBreaker) -> tuple[int, int, int, int]:
    m = breaker.metrics()
    return (
        m.total_successful_calls,
        m.total_failed_calls,
        m.total_ignored_calls,
        m.total_not_permitted_calls,
    )


def run(breaker: CircuitBreaker, fn: object, seen: Counter[str]) -> None:
    try:
        breaker.call(fn)  # type: ignore[arg-type]
    except CircuitOpenError:
        seen["rejected"] += 1
    except Boom:
        seen["failed"] += 1
    except Skip:
        seen["ignored"] += 1
    else:
        seen["succeeded"] += 1


def expected(seen: Counter[str]) -> tuple[int, int, int, int]:
    return (seen["succeeded"], seen["failed"], seen["ignored"], seen["rejected"])


@pytest.mark.parametrize(
    "options",
    [
        {},  # lock-free successes in CLOSED
        {"slow_call_duration": 1.0},  # every outcome under the lock, durations measured
        {"window": TimeWindow(10)},
        {"record_result": lambda r: r == "bad"},
    ],
    ids=["fast", "timed", "time-window", "record-result"],
)
def test_totals_follow_every_path_through_the_states(options: dict[str, object]) -> None:
    clock = ManualClock()
    options.setdefault("window", CountWindow(4))
    breaker = CircuitBreaker(
        "totals",
        minimum_calls=4,
        open_duration=5.0,
        half_open_calls=2,
        ignore=Skip,
        clock=clock,
        **options,  # type: ignore[arg-type]
    )
    seen: Counter[str] = Counter()
    assert totals(breaker) == (0, 0, 0, 0)
    for _ in range(10):
        run(breaker, ok, seen)
    run(breaker, skip, seen)
    for _ in range(4):
        run(breaker, boom, seen)  # the second opens it (2 of the last 4 failed)
    for _ in range(3):
        run(breaker, ok, seen)  # rejected in OPEN
    clock.advance(5.0)
    run(breaker, ok, seen)  # HALF_OPEN trial
    run(breaker, ok, seen)  # second trial closes it
    for _ in range(5):
        run(breaker, ok, seen)
    breaker.force_open()
    run(breaker, ok, seen)
    breaker.disable()
    run(breaker, ok, seen)
    run(breaker, boom, seen)
    breaker.reset()
    run(breaker, ok, seen)

    assert all(seen[k] for k in ("succeeded", "failed", "ignored", "rejected"))
    assert totals(breaker) == expected(seen)


def test_totals_are_monotonic_and_survive_reset() -> None:
    breaker = CircuitBreaker(
        "reset", window=CountWindow(2), minimum_calls=2, ignore=Skip, clock=ManualClock()
    )
    seen: Counter[str] = Counter()
    last = totals(breaker)
    rng = random.Random(7)
    for i in range(200):
        run(breaker, rng.choice([ok, ok, boom, skip]), seen)
        if i % 37 == 0:
            breaker.reset()
        now = totals(breaker)
        assert all(b >= a for a, b in zip(last, now, strict=True))
        last = now
    assert last == expected(seen)


@pytest.mark.usefixtures("fast_switching")
def test_totals_are_exact_under_threads_and_transitions() -> None:
    """16 threads of mixed outcomes while the breaker opens, probes and closes."""
    clock = ManualClock()
    breaker = CircuitBreaker(
        "stress",
        window=CountWindow(20),
        minimum_calls=20,
        failure_rate_threshold=0.3,
        open_duration=1.0,
        half_open_calls=3,
        ignore=Skip,
        clock=clock,
    )
    threads = 16
    per_thread = 1_500
    barrier = threading.Barrier(threads, timeout=WAIT)
    tallies: list[Counter[str]] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        seen: Counter[str] = Counter()
        barrier.wait()
        for i in range(per_thread):
            run(breaker, rng.choices([ok, boom, skip], [8, 3, 1])[0], seen)
            if i % 50 == seed:
                clock.advance(0.25)  # OPEN gives way to HALF_OPEN again and again
        tallies.append(seen)

    pool = [threading.Thread(target=worker, args=(seed,)) for seed in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(WAIT * 3)
    assert not any(t.is_alive() for t in pool)

    seen = sum(tallies, Counter())
    assert sum(seen.values()) == threads * per_thread
    assert seen["rejected"] > 0  # the breaker did open
    assert seen["succeeded"] > 0
    assert totals(breaker) == expected(seen)


def test_transition_counts_and_window_durations_are_public_read_outs() -> None:
    # What the OpenTelemetry readings report, read through the breaker's own API.
    clock = ManualClock()
    breaker = CircuitBreaker(
        "read-outs",
        window=CountWindow(4),
        minimum_calls=2,
        slow_call_duration=10.0,
        open_duration=1.0,
        clock=clock,
    )

    def quarter() -> str:
        clock.advance(0.25)
        return "ok"

    assert breaker.transition_counts() == {}
    breaker.call(quarter)
    assert breaker.window_durations() == [0.25]
    with pytest.raises(Boom):
        breaker.call(boom)  # 1 of 2 failed: the breaker opens
    assert breaker.window_durations() == [0.25, 0.0]
    breaker.reset()
    closed, opened = CircuitState.CLOSED, CircuitState.OPEN
    assert breaker.transition_counts() == {(closed, opened): 1, (opened, closed): 1}
    assert CircuitBreaker("untimed").window_durations() is None
