"""The hedge's core driven directly: verdicts, the budget, the quantile delay."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import RetryBudget
from resilient._core._hedge import HEDGE_NOW, LOST, WAIT, WIN, HedgeCore


class Flaky(Exception):
    pass


def core(**options: object) -> HedgeCore:
    base: dict[str, object] = {
        "max_hedged": 2,
        "delay": 0.1,
        "budget": RetryBudget(min_retries_per_second=1000),
        "on": Flaky,
        "on_result": None,
        "window": 100,
        "default_budget": RetryBudget,
    }
    base.update(options)
    return HedgeCore("c", **base)  # type: ignore[arg-type]


def test_verdicts() -> None:
    c = core()
    run = c.run()
    assert run.next_start() == pytest.approx(0.1)
    assert run.hedge(0.1) == 1
    assert run.next_start() == pytest.approx(0.2)  # a delay after the previous start
    assert run.finished(1, Flaky(), None, 0.01) is HEDGE_NOW  # one more may start
    assert run.hedge(0.11) == 2
    assert run.next_start() is None  # max_hedged reached
    assert run.finished(2, Flaky(), None, 0.01) is WAIT  # attempt 0 still runs
    assert run.finished(0, None, "ok", 0.3) is WIN
    m = c.metrics()
    assert (m.calls, m.first_wins, m.hedges, m.cancelled) == (1, 1, 2, 0)


def test_lost_when_nothing_is_left() -> None:
    c = core(max_hedged=1)
    run = c.run()
    assert run.finished(0, Flaky(), None, 0.01) is HEDGE_NOW
    assert run.hedge(0.01) == 1
    assert run.finished(1, Flaky(), None, 0.01) is LOST
    assert c.metrics().failed == 1


def test_an_exception_outside_on_wins() -> None:
    run = core().run()
    assert run.finished(0, KeyError(), None, 0.01) is WIN


@given(st.lists(st.floats(0.0, 10.0), min_size=10, max_size=300), st.integers(1, 99))
def test_the_quantile_is_the_nearest_rank_of_the_window(latencies: list[float], p: int) -> None:
    c = core(delay=f"p{p}", window=50)
    for seconds in latencies:
        c.record_latency(seconds)
        c.current_delay()  # read as calls do, between records (the cache's worst case)
    window = sorted(latencies[-50:])
    exact = window[max(-(-p * len(window) // 100) - 1, 0)]
    got = c.current_delay()
    assert got is not None
    # Recomputed once 5% of the window is new: at most that many latencies behind.
    recent = sorted(latencies[-53:])
    assert min(recent) <= got <= max(recent)
    c._since = len(window)  # force a recomputation
    assert c.current_delay() == exact


def test_the_budget_refuses_and_closes_the_run() -> None:
    c = core(budget=RetryBudget(min_retries_per_second=0, ratio=0.5))
    run = c.run()  # deposits 0.5: not a whole hedge
    assert run.hedge(0.1) is None
    assert run.next_start() is None
    assert c.metrics().budget_refused == 1
