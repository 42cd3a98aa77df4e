"""The adaptive limits' update rules against the published formulas (Netflix concurrency-limits).

Each rule is checked twice: on hand-worked examples, and by Hypothesis against the
formula written out independently here, over the whole range of limits and samples.
The algorithms' states (Vegas' no-load RTT and probes, Gradient2's long-term average)
are checked on sequences of samples.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient import AIMD, Gradient2, Vegas
from resilient._core._limit_rules import aimd_limit, gradient2_limit, log10_root, vegas_limit

limits = st.integers(min_value=1, max_value=5000)
rtts = st.floats(min_value=1e-4, max_value=100.0, allow_nan=False)
inflights = st.integers(min_value=0, max_value=10_000)


# -- log10 root ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "step"),
    [(1, 1), (9, 1), (10, 1), (99, 1), (100, 2), (999, 2), (1000, 31), (1024, 32), (4000, 63)],
)
def test_log10_root_follows_the_reference_table(limit: int, step: int) -> None:
    assert log10_root(limit) == step


# -- AIMD ------------------------------------------------------------------------------


def test_aimd_backs_off_by_the_ratio_on_a_drop() -> None:
    assert aimd_limit(100, 0.01, 100, True) == 90
    assert aimd_limit(20, 0.01, 20, True) == 18


def test_aimd_counts_a_round_trip_over_the_timeout_as_a_drop() -> None:
    assert aimd_limit(100, 5.01, 100, False, timeout=5.0) == 90
    assert aimd_limit(100, 5.0, 100, False, timeout=5.0) == 101  # not over: +1


def test_aimd_grows_by_one_only_when_the_limit_is_in_use() -> None:
    assert aimd_limit(10, 0.01, 5, False) == 11  # inflight * 2 >= L
    assert aimd_limit(10, 0.01, 4, False) == 10  # idle: holds


def test_aimd_shrinks_small_limits_too_and_stays_in_bounds() -> None:
    assert aimd_limit(5, 0.01, 5, True) == 4  # int(4.5) = 4
    assert aimd_limit(2, 0.01, 2, True, backoff_ratio=0.99) == 1  # at least -1
    assert aimd_limit(1, 0.01, 1, True) == 1  # min_limit
    assert aimd_limit(200, 0.01, 200, False) == 200  # max_limit


@given(limits, rtts, inflights, st.booleans(), st.floats(0.5, 0.99))
def test_aimd_is_the_formula(
    limit: int, rtt: float, inflight: int, dropped: bool, ratio: float
) -> None:
    got = aimd_limit(
        limit, rtt, inflight, dropped, backoff_ratio=ratio, min_limit=1, max_limit=10_000
    )
    if dropped or rtt > 5.0:
        expected = max(1, min(limit - 1, math.floor(limit * ratio)))
    elif 2 * inflight >= limit:
        expected = min(10_000, limit + 1)
    else:
        expected = limit
    assert got == expected


# -- Vegas -----------------------------------------------------------------------------


def test_vegas_grows_by_beta_steps_with_no_queue() -> None:
    # rtt == rtt_noload: queue 0 <= threshold 1: L + 6 * log10(L)
    assert vegas_limit(20, 0.01, 0.01, 20, False) == 26


def test_vegas_grows_by_one_step_with_a_small_queue() -> None:
    # queue = ceil(20 * (1 - 10/11)) = 2: > 1 and < alpha 3: L + 1
    assert vegas_limit(20, 0.010, 0.011, 20, False) == 21


def test_vegas_holds_in_the_sweet_spot_and_shrinks_past_beta() -> None:
    # queue = ceil(20 * (1 - 10/13)) = 5: between 3 and 6, hold
    assert vegas_limit(20, 0.010, 0.013, 20, False) == 20
    # queue = ceil(20 * (1 - 1/2)) = 10 > 6: L - 1
    assert vegas_limit(20, 0.010, 0.020, 20, False) == 19


def test_vegas_drops_and_idles() -> None:
    assert vegas_limit(200, 0.01, 0.01, 200, True) == 198  # L - log10(L)
    assert vegas_limit(20, 0.01, 0.01, 9, False) == 20  # inflight * 2 < L: holds


def test_vegas_smoothing_blends_old_and_new() -> None:
    assert vegas_limit(20, 0.01, 0.01, 20, False, smoothing=0.5) == 23


@given(
    limits,
    rtts,
    st.floats(min_value=1.0, max_value=50.0),
    inflights,
    st.booleans(),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_vegas_is_the_formula(
    limit: int, noload: float, ratio: float, inflight: int, dropped: bool, smoothing: float
) -> None:
    rtt = noload * ratio
    got = vegas_limit(limit, noload, rtt, inflight, dropped, smoothing=smoothing, max_limit=10_000)
    log = max(1, int(math.log10(limit))) if limit < 1000 else int(math.sqrt(limit))
    queue = math.ceil(limit * (1 - noload / rtt))
    if dropped:
        new = limit - log
    elif inflight * 2 < limit:
        assert got == limit
        return
    elif queue <= log:
        new = limit + 6 * log
    elif queue < 3 * log:
        new = limit + log
    elif queue > 6 * log:
        new = limit - log
    else:
        assert got == limit
        return
    new = max(1, min(10_000, new))
    assert got == pytest.approx((1 - smoothing) * limit + smoothing * new)


def test_vegas_takes_the_smallest_rtt_as_no_load_without_moving() -> None:
    state = Vegas(initial_limit=20).start(random.Random(1))
    assert state.update(0.02, 20, False) == 20  # first sample: the no-load RTT
    assert state.rtt_noload == 0.02
    assert state.update(0.01, 20, False) == 20  # a smaller one replaces it
    assert state.rtt_noload == 0.01
    assert state.update(0.01, 20, False) == 26  # then the rule: no queue, + 6 * 1


def test_vegas_reprobes_the_no_load_rtt_periodically() -> None:
    # With probe_multiplier 1 and the limit at 20, a probe falls due within 10..20 samples.
    state = Vegas(initial_limit=20, max_limit=20, probe_multiplier=1).start(random.Random(3))
    state.update(0.01, 0, False)
    probed = None
    for i in range(1, 25):
        state.update(0.05, 0, False)  # idle: the limit holds; rtt well above no-load
        if state.rtt_noload == 0.05:
            probed = i
            break
    assert probed is not None
    assert 10 <= probed + 1 <= 20


# -- Gradient2 -------------------------------------------------------------------------


def test_gradient2_grows_by_the_queue_size_when_rtt_is_steady() -> None:
    # gradient 1: new = 20 + 4; smoothed: 0.8 * 20 + 0.2 * 24 = 20.8
    assert gradient2_limit(20, 0.01, 0.01, 20, max_limit=200) == pytest.approx(20.8)


def test_gradient2_tolerates_rtt_up_to_the_tolerance() -> None:
    # short 1.5x long: tolerance 1.5 makes the gradient 1 still
    assert gradient2_limit(100, 0.015, 0.01, 100) == pytest.approx(0.8 * 100 + 0.2 * 104)


def test_gradient2_shrinks_by_at_most_half() -> None:
    # short 10x long: gradient clamped to 0.5: new = 50 + 4; smoothed 0.8 * 100 + 0.2 * 54
    assert gradient2_limit(100, 0.1, 0.01, 100) == pytest.approx(90.8)


def test_gradient2_holds_when_idle_and_respects_bounds() -> None:
    assert gradient2_limit(100, 0.1, 0.01, 49) == 100  # inflight < L / 2
    assert gradient2_limit(20, 1.0, 0.01, 20) == 20  # min_limit 20
    assert gradient2_limit(200, 0.01, 0.01, 200) == 200  # max_limit 200


@given(
    st.floats(min_value=1.0, max_value=1000.0),
    rtts,
    rtts,
    inflights,
    st.floats(min_value=1.0, max_value=3.0),
)
def test_gradient2_is_the_formula(
    limit: float, short: float, long: float, inflight: int, tolerance: float
) -> None:
    got = gradient2_limit(
        limit, short, long, inflight, tolerance=tolerance, min_limit=1, max_limit=1000
    )
    if inflight < limit / 2:
        assert got == limit
        return
    gradient = min(1.0, max(0.5, tolerance * long / short))
    expected = 0.8 * limit + 0.2 * (limit * gradient + 4)
    assert got == pytest.approx(max(1.0, min(1000.0, expected)))


def test_gradient2_long_rtt_is_a_plain_average_then_an_ema() -> None:
    state = Gradient2().start()
    for rtt in (0.01, 0.03):
        state.update(rtt, 0, False)
    assert state.long_rtt == pytest.approx(0.02)
    for _ in range(8):
        state.update(0.02, 0, False)  # ten samples: the warm-up is over
    state.update(0.32, 0, False)
    assert state.long_rtt == pytest.approx(0.02 * (1 - 2 / 601) + 0.32 * 2 / 601)


def test_gradient2_long_rtt_decays_when_it_drifts_above_twice_the_short() -> None:
    state = Gradient2().start()
    for _ in range(10):
        state.update(1.0, 0, False)
    state.update(0.1, 0, False)  # long ~ 0.997, short 0.1: more than 2x
    expected = (1.0 * (1 - 2 / 601) + 0.1 * 2 / 601) * 0.95
    assert state.long_rtt == pytest.approx(expected)


def test_gradient2_converges_down_under_rising_latency_and_up_when_it_recovers() -> None:
    state = Gradient2(initial_limit=100, max_limit=200).start()
    for _ in range(50):
        state.update(0.01, 200, False)
    high = state.estimate
    for _ in range(50):
        state.update(0.05, 200, False)  # five times slower: the gradient bites
    assert state.estimate < high
    low = state.estimate
    for _ in range(200):
        state.update(0.01, 200, False)
    assert state.estimate > low


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AIMD(backoff_ratio=1.0), "backoff_ratio must be >= 0.5 and < 1"),
        (lambda: AIMD(backoff_ratio=0.4), "backoff_ratio"),
        (lambda: AIMD(timeout=0), "timeout"),
        (lambda: AIMD(initial_limit=0), "initial_limit"),
        (lambda: AIMD(min_limit=10, max_limit=5, initial_limit=5), "min_limit must be <="),
        (lambda: Vegas(initial_limit=2000), "initial_limit must be between"),
        (lambda: Vegas(alpha=7, beta=6), "beta must be >= alpha"),
        (lambda: Vegas(smoothing=0), "smoothing"),
        (lambda: Vegas(smoothing=1.5), "smoothing"),
        (lambda: Vegas(probe_multiplier=0), "probe_multiplier"),
        (lambda: Gradient2(tolerance=0.9), "tolerance"),
        (lambda: Gradient2(long_window=0), "long_window"),
        (lambda: Gradient2(queue_size=-1), "queue_size"),
        (lambda: Gradient2(initial_limit=10), "initial_limit must be between min_limit"),
    ],
)
def test_bad_options_are_refused_naming_the_option(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


@pytest.mark.parametrize(
    "make",
    [
        lambda: AIMD(initial_limit=1.5),
        lambda: Vegas(alpha="3"),
        lambda: Gradient2(smoothing=None),
        lambda: Vegas().start(random=object()),
    ],
)
def test_wrong_types_are_refused(make: object) -> None:
    with pytest.raises(TypeError):
        make()  # type: ignore[operator]


def test_configurations_are_values() -> None:
    assert Vegas() == Vegas()
    assert hash(Gradient2(max_limit=300)) == hash(Gradient2(max_limit=300))
    assert AIMD() != AIMD(backoff_ratio=0.8)
    assert repr(AIMD()) == (
        "AIMD(initial_limit=20, min_limit=1, max_limit=200, backoff_ratio=0.9, timeout=5.0)"
    )
    with pytest.raises(AttributeError, match="immutable"):
        Vegas().alpha = 4  # type: ignore[misc]


def test_defaults_are_the_references() -> None:
    g = Gradient2()
    assert (g.initial_limit, g.min_limit, g.max_limit) == (20, 20, 200)
    assert (g.smoothing, g.queue_size, g.long_window, g.tolerance) == (0.2, 4, 600, 1.5)
    v = Vegas()
    assert (v.initial_limit, v.max_limit, v.smoothing, v.probe_multiplier) == (20, 1000, 1.0, 30)
    assert (v.alpha, v.beta) == (3.0, 6.0)
    a = AIMD()
    assert (a.backoff_ratio, a.timeout) == (0.9, 5.0)
